package test

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"

	"github.com/mqspool/mqspool/internal/control"
	"github.com/mqspool/mqspool/internal/pickup"
	"github.com/mqspool/mqspool/test/harness"
)

// TestBackpressure_LargeDropWithStoppedBroker drops many small files at
// once and stops the broker with SIGSTOP: the event loop must still find
// the dead broker in time, the status must reply at once, memory must stay
// bounded, and after SIGCONT everything must drain.
func TestBackpressure_LargeDropWithStoppedBroker(t *testing.T) {
	if testing.Short() {
		t.Skip("drops 20 000 files")
	}
	broker := harness.StartBroker(t, "")
	proxy := harness.StartProxy(t, broker.Addr())
	sub := harness.Subscribe(t, broker.Addr(), "bp/#", 1)
	d := harness.NewDaemon(t, proxy.URL(), "log:\n  level: info\n")
	d.DumpOnFailure()
	d.Start()

	const total = 20000
	for i := range total {
		d.Drop(fmt.Sprintf("m-%05d.msg", i), []byte(fmt.Sprintf("Topic: bp/%d\nQoS: 1\n\nseq-%06d", i%4, i)))
	}
	broker.Pause()
	stopped := time.Now()

	// Dead broker found within 1.5 keep alive periods plus margin.
	harness.WaitFor(t, 2*keepAlive+2*time.Second, "the stopped broker logged as dead", func() bool {
		return strings.Contains(d.Log(), "connection is dead") || strings.Contains(d.Log(), "timed out")
	})
	t.Logf("dead broker logged after %s", time.Since(stopped).Round(100*time.Millisecond))

	// The daemon must reply on its control socket at once. The time to
	// start a CLI process is not the daemon's to count.
	begin := time.Now()
	if _, err := control.Send(context.Background(), d.Socket, control.Request{Command: control.CommandStatus}); err != nil {
		t.Errorf("status while the broker is stopped: %v", err)
	}
	if took := time.Since(begin); took > time.Second {
		t.Errorf("status took %s while the broker is stopped, want under 1 s", took)
	}
	if rss := d.RSSAnonKiB(); rss > 100*1024 {
		t.Errorf("RssAnon %d KiB with %d files queued, want under 100 MiB", rss, total)
	}

	broker.Resume()
	harness.WaitFor(t, 120*time.Second, "all messages after SIGCONT", func() bool {
		return len(missingAt(sub, total)) == 0
	})
	checkWireOrder(t, proxy.Packets())
	checkArrivalOrder(t, sub, total)
}

// TestBackpressure_BacklogInNewBeyondQueue starts the daemon on more files
// in new/ than it keeps in memory, behind a spool of 200 messages: it
// queues only the oldest, and the rest go in by later rescans, all of them
// delivered in order.
func TestBackpressure_BacklogInNewBeyondQueue(t *testing.T) {
	if testing.Short() {
		t.Skip("drops 36 000 files")
	}
	broker := harness.StartBroker(t, "")
	sub := harness.Subscribe(t, broker.Addr(), "bl/#", 1)
	d := harness.NewDaemon(t, broker.URL(), "spool:\n  max_messages: 200\nlog:\n  level: info\n")
	d.DumpOnFailure()

	const total = 36000 // above pickup.DefaultQueueMax
	for i := range total {
		d.Drop(fmt.Sprintf("bl/%d/m-%05d.msg", i%4, i), []byte(fmt.Sprintf("Topic: bl/%d\nQoS: 1\n\nseq-%06d", i%4, i)))
	}
	d.Start()

	harness.WaitFor(t, 180*time.Second, "every message delivered", func() bool {
		return len(missingAt(sub, total)) == 0
	})
	checkArrivalOrder(t, sub, total)
	m := regexp.MustCompile(`spool pickup started.*queued_files=(\d+) waiting_files=(\d+)`).FindStringSubmatch(d.Log())
	if m == nil {
		t.Fatal("no start line of the pickup with queued_files and waiting_files")
	}
	queued, _ := strconv.Atoi(m[1])
	waiting, _ := strconv.Atoi(m[2])
	if queued > pickup.DefaultQueueMax || queued+waiting != total {
		t.Errorf("pickup started with %d files queued and %d waiting, want at most %d queued of %d",
			queued, waiting, pickup.DefaultQueueMax, total)
	}
}

// missingAt returns the seqs below total that never reached sub.
func missingAt(sub *harness.Subscriber, total int) []int {
	seen := make([]bool, total)
	for _, m := range sub.Messages() {
		var seq int
		if _, err := fmt.Sscanf(string(m.Payload), "seq-%d", &seq); err == nil && seq < total {
			seen[seq] = true
		}
	}
	var missing []int
	for seq, ok := range seen {
		if !ok {
			missing = append(missing, seq)
		}
	}
	return missing
}

// topicSeq is one message seen on its way: its topic and the seq in its
// payload.
type topicSeq struct {
	topic string
	seq   int
}

// checkWireOrder fails the test for first sends that leave out of
// per-topic seq order across all connections: the daemon's part of the
// order guarantee.
func checkWireOrder(t *testing.T, log []harness.Packet) {
	t.Helper()
	var seen []topicSeq
	for _, pk := range log {
		if pk.Type != packets.PUBLISH || pk.Dir != harness.ToBroker || pk.Dropped {
			continue
		}
		var seq int
		if _, err := fmt.Sscanf(string(pk.Payload), "seq-%d", &seq); err == nil {
			seen = append(seen, topicSeq{pk.Topic, seq})
		}
	}
	checkFirstOrder(t, "daemon first sent", "on the wire", seen)
}

// checkArrivalOrder fails the test for first arrivals at the subscriber
// that are out of per-topic order.
func checkArrivalOrder(t *testing.T, sub *harness.Subscriber, total int) {
	t.Helper()
	var seen []topicSeq
	for _, m := range sub.Messages() {
		var seq int
		if _, err := fmt.Sscanf(string(m.Payload), "seq-%d", &seq); err == nil && seq < total {
			seen = append(seen, topicSeq{m.Topic, seq})
		}
	}
	checkFirstOrder(t, "broker delivered", "at the subscriber", seen)
}

// checkFirstOrder fails the test when the first occurrence of a seq comes
// after a higher seq on the same topic. Repeats are resends and are
// skipped.
func checkFirstOrder(t *testing.T, verb, where string, seen []topicSeq) {
	t.Helper()
	last := map[string]int{}
	first := map[int]bool{}
	late := 0
	for _, m := range seen {
		if first[m.seq] {
			continue
		}
		first[m.seq] = true
		if prev, ok := last[m.topic]; ok && m.seq < prev {
			late++
			if late <= 5 {
				t.Errorf("%s seq %d on %s after seq %d", verb, m.seq, m.topic, prev)
			}
		}
		last[m.topic] = m.seq
	}
	if late > 0 {
		t.Errorf("%d first occurrences out of per-topic order %s", late, where)
	}
}
