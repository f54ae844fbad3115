package test

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mqspool/mqspool/test/harness"
)

// producer drops numbered .msg files on a few topics from its own
// goroutine, the way a sensor reader would, while the daemon is being
// killed and restarted.
type producer struct {
	d      *harness.Daemon
	qos    int
	mu     sync.Mutex // guards next
	next   int
	topics int
}

func (p *producer) dropBatch(n int) {
	for range n {
		p.mu.Lock()
		seq := p.next
		p.next++
		p.mu.Unlock()
		topic := fmt.Sprintf("crash/%d", seq%p.topics)
		body := fmt.Sprintf("Topic: %s\nQoS: %d\n\nseq-%06d", topic, p.qos, seq)
		p.d.Drop(fmt.Sprintf("m-%06d.msg", seq), []byte(body))
	}
}

func (p *producer) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.next
}

// tally counts arrivals per sequence number and checks first-arrival
// order per topic.
func tally(t *testing.T, sub *harness.Subscriber, total int) (missing, duplicated []int) {
	t.Helper()
	counts := make([]int, total)
	last := map[string]int{}
	for _, m := range sub.Messages() {
		var seq int
		if _, err := fmt.Sscanf(string(m.Payload), "seq-%d", &seq); err != nil || seq >= total {
			t.Errorf("unexpected payload %q on %s", m.Payload, m.Topic)
			continue
		}
		if counts[seq] == 0 {
			if prev, ok := last[m.Topic]; ok && seq < prev {
				t.Errorf("topic %s: seq %d first arrived after seq %d", m.Topic, seq, prev)
			}
			last[m.Topic] = seq
		}
		counts[seq]++
	}
	for seq, c := range counts {
		switch {
		case c == 0:
			missing = append(missing, seq)
		case c > 1:
			duplicated = append(duplicated, seq)
		}
	}
	return missing, duplicated
}

// crashLoop drops files and forwards them while the daemon is stopped
// by stop at a random moment, rounds times.
func crashLoop(t *testing.T, d *harness.Daemon, p *producer, rounds int, stop func(round int)) {
	for round := range rounds {
		var wg sync.WaitGroup
		wg.Go(func() { p.dropBatch(60) })
		time.Sleep(time.Duration(20+rand.IntN(400)) * time.Millisecond)
		stop(round)
		wg.Wait()
		d.Start()
	}
}

func TestCrash_Kill9_QoS1_NoLoss(t *testing.T) {
	broker := harness.StartBroker(t, "")
	sub := harness.Subscribe(t, broker.Addr(), "crash/#", 1)
	d := harness.NewDaemon(t, broker.URL(), "")
	d.DumpOnFailure()
	d.Start()

	p := &producer{d: d, qos: 1, topics: 3}
	crashLoop(t, d, p, 12, func(int) { d.Kill() })

	total := p.count()
	harness.WaitFor(t, 90*time.Second, fmt.Sprintf("all %d messages after the kills", total), func() bool {
		missing, _ := tally(t, sub, total)
		return len(missing) == 0
	})
	missing, dups := tally(t, sub, total)
	if len(missing) > 0 {
		t.Errorf("lost %d messages: %v", len(missing), head(missing))
	}
	t.Logf("%d messages, %d duplicated after 12 kill -9", total, len(dups))
	harness.WaitFor(t, 10*time.Second, "new/ empty", d.NewEmpty)
}

func TestCrash_QoS2_ExactlyOnce(t *testing.T) {
	broker := harness.StartBroker(t, "")
	sub := harness.Subscribe(t, broker.Addr(), "crash/#", 2)
	d := harness.NewDaemon(t, broker.URL(), "")
	d.DumpOnFailure()
	d.Start()

	p := &producer{d: d, qos: 2, topics: 3}
	crashLoop(t, d, p, 12, func(round int) {
		t.Logf("round %d", round)
		switch round % 4 {
		case 0, 1:
			d.Kill()
		case 2:
			if code := d.Stop(10 * time.Second); code != 0 {
				t.Errorf("exit code after SIGTERM = %d, want 0", code)
			}
		case 3:
			// The broker restarts with its sessions kept while the daemon is down.
			d.Kill()
			broker.Restart()
		}
	})

	total := p.count()
	harness.WaitFor(t, 90*time.Second, fmt.Sprintf("all %d messages after the restarts", total), func() bool {
		missing, _ := tally(t, sub, total)
		return len(missing) == 0
	})
	time.Sleep(500 * time.Millisecond) // let a late duplicate show up
	missing, dups := tally(t, sub, total)
	if len(missing) > 0 {
		t.Errorf("lost %d messages: %v", len(missing), head(missing))
	}
	if len(dups) > 0 {
		t.Errorf("%d QoS 2 messages arrived more than once: %v", len(dups), head(dups))
	}
	if strings.Contains(broker.Log(), "Reused message ID") {
		t.Errorf("mosquitto logged a reused packet identifier")
	}
}

func TestCrash_SecondSignalStopsAtOnce(t *testing.T) {
	broker := harness.StartBroker(t, "")
	d := harness.NewDaemon(t, broker.URL(), "shutdown:\n  drain_timeout: 20s\n")
	d.DumpOnFailure()
	d.Start()

	// A stopped broker leaves publishes unacknowledged, so the drain
	// would wait its full 20 s.
	d.Drop("x.msg", []byte("Topic: t\nQoS: 1\n\nx"))
	time.Sleep(500 * time.Millisecond)
	broker.Pause()
	defer broker.Resume()
	d.Drop("y.msg", []byte("Topic: t\nQoS: 1\n\ny"))
	time.Sleep(500 * time.Millisecond)

	d.Signal(syscall.SIGTERM)
	time.Sleep(200 * time.Millisecond)
	start := time.Now()
	if code := d.Stop(5 * time.Second); code != 0 {
		t.Errorf("exit code after the second SIGTERM = %d, want 0", code)
	}
	if waited := time.Since(start); waited > 3*time.Second {
		t.Errorf("second SIGTERM took %s to stop the daemon", waited)
	}
}

func head(s []int) []int {
	if len(s) > 10 {
		return s[:10]
	}
	return s
}

// TestCrash_Kill9WhileOffline kills the daemon during ingestion while the
// broker is down, so everything accepted exists only in the spool. Once
// the broker is back, all of it must arrive, in order per topic.
func TestCrash_Kill9WhileOffline(t *testing.T) {
	broker := harness.StartBroker(t, "")
	sub := harness.Subscribe(t, broker.Addr(), "crash/#", 1)
	broker.Stop()
	d := harness.NewDaemon(t, broker.URL(), "")
	d.DumpOnFailure()
	d.Start()

	p := &producer{d: d, qos: 1, topics: 5}
	crashLoop(t, d, p, 8, func(int) { d.Kill() })
	harness.WaitFor(t, 30*time.Second, "new/ empty while offline", d.NewEmpty)
	d.Kill()

	broker.Start()
	d.Start()
	total := p.count()
	harness.WaitFor(t, 60*time.Second, fmt.Sprintf("all %d messages once the broker is back", total), func() bool {
		missing, _ := tally(t, sub, total)
		return len(missing) == 0
	})
}
