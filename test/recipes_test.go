package test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"

	"github.com/mqspool/mqspool/test/harness"
)

// TestRecipe_NoPacketIDReuseUnderStalls drains a mix of QoS 1 and QoS 2
// files while the broker is stopped and continued and the link is reset:
// no packet identifier may be used twice while outstanding, every
// acknowledgement must match an outstanding packet, and QoS 2 must arrive
// exactly once.
func TestRecipe_NoPacketIDReuseUnderStalls(t *testing.T) {
	broker := harness.StartBroker(t, "")
	proxy := harness.StartProxy(t, broker.Addr())
	sub := harness.Subscribe(t, broker.Addr(), "ids/#", 2)
	d := harness.NewDaemon(t, proxy.URL(), "publish:\n  max_inflight: 20\n")
	d.DumpOnFailure()
	d.Start()

	const total = 2000
	for i := range total {
		qos := 1 + i%2
		d.Drop(fmt.Sprintf("m-%05d.msg", i), []byte(fmt.Sprintf("Topic: ids/%d\nQoS: %d\n\nseq-%06d", i%4, qos, i)))
	}
	for round := range 3 {
		time.Sleep(time.Second)
		broker.Pause()
		time.Sleep(1500 * time.Millisecond)
		broker.Resume()
		time.Sleep(500 * time.Millisecond)
		if round < 2 {
			proxy.Reset()
		}
	}
	harness.WaitFor(t, 90*time.Second, "all messages", func() bool {
		missing, _ := tally(t, sub, total)
		return len(missing) == 0
	})
	time.Sleep(300 * time.Millisecond)

	_, dups := tally(t, sub, total)
	for _, seq := range dups {
		if seq%2 == 1 {
			t.Errorf("QoS 2 seq %d arrived more than once", seq)
		}
	}
	log := proxy.Packets()
	if max, reuse := harness.MaxOutstanding(log); reuse != nil || max > 20 {
		t.Errorf("outstanding at most %d (want at most 20), reuse: %v", max, reuse)
	}
	if err := harness.UnmatchedAcks(log); err != nil {
		t.Error(err)
	}
	if broker.Contains("Reused message ID") {
		t.Errorf("mosquitto logged a reused packet identifier")
	}
}

// TestRecipe_WindowOfOneSurvivesOutages runs a window of one through
// blackholes long enough for the daemon to declare the link dead: sending
// must resume after each, with no slowdown from one outage to the next,
// so the inflight count was reset with the connection.
func TestRecipe_WindowOfOneSurvivesOutages(t *testing.T) {
	broker := harness.StartBroker(t, "")
	proxy := harness.StartProxy(t, broker.Addr())
	sub := harness.Subscribe(t, broker.Addr(), "w1/#", 1)
	d := harness.NewDaemon(t, proxy.URL(), "publish:\n  max_inflight: 1\n")
	d.DumpOnFailure()
	d.Start()

	drops := startDropper(d, "w1/t", 1, 100*time.Millisecond)
	var resumeTimes []time.Duration
	for range 2 {
		time.Sleep(time.Second)
		proxy.SetMode(harness.Blackhole)
		time.Sleep(2*keepAlive + time.Second)
		before := sub.Count()
		proxy.SetMode(harness.Pass)
		restored := time.Now()
		harness.WaitFor(t, 15*time.Second, "sending resumed after the outage", func() bool { return sub.Count() > before })
		resumeTimes = append(resumeTimes, time.Since(restored))
	}
	total := drops.Stop()
	waitAllInOrder(t, sub, total, 30*time.Second)
	t.Logf("sending resumed after %v", resumeTimes)
	if last, first := resumeTimes[len(resumeTimes)-1], resumeTimes[0]; last > first+5*time.Second {
		t.Errorf("resume took %s after the last outage but %s after the first", last, first)
	}
}

// TestRecipe_OrderAcrossOutages keeps one topic flowing through a
// blackhole and a broker restart: first arrivals stay in drop order, and
// after each CONNACK every retransmission precedes any first-time
// publish.
func TestRecipe_OrderAcrossOutages(t *testing.T) {
	broker := harness.StartBroker(t, "")
	proxy := harness.StartProxy(t, broker.Addr())
	sub := harness.Subscribe(t, broker.Addr(), "ord/#", 1)
	d := harness.NewDaemon(t, proxy.URL(), "")
	d.DumpOnFailure()
	d.Start()

	drops := startDropper(d, "ord/t", 1, 20*time.Millisecond)
	time.Sleep(2 * time.Second)
	proxy.SetMode(harness.Blackhole)
	time.Sleep(6 * time.Second)
	proxy.SetMode(harness.Pass)
	time.Sleep(2 * time.Second)
	broker.Restart()
	time.Sleep(2 * time.Second)
	total := drops.Stop()
	waitAllInOrder(t, sub, total, 60*time.Second)

	// Per connection: once a first-time publish (DUP 0) appears, no DUP
	// publish may follow.
	firstSeen := map[int]bool{}
	for _, pk := range proxy.Packets() {
		if pk.Type != packets.PUBLISH || pk.Dir != harness.ToBroker || pk.Dropped {
			continue
		}
		if pk.Dup && firstSeen[pk.Conn] {
			t.Errorf("connection %d: retransmission of %q after a first-time publish", pk.Conn, pk.Payload)
		}
		if !pk.Dup {
			firstSeen[pk.Conn] = true
		}
	}
}

// TestRecipe_NoTopicAliases checks that the daemon neither requests nor
// uses topic aliases, so no alias can outlive the connection that set it.
func TestRecipe_NoTopicAliases(t *testing.T) {
	broker := harness.StartBroker(t, "")
	proxy := harness.StartProxy(t, broker.Addr())
	sub := harness.Subscribe(t, broker.Addr(), "alias/#", 1)
	d := harness.NewDaemon(t, proxy.URL(), "")
	d.DumpOnFailure()
	d.Start()

	for i := range 200 {
		d.Drop(fmt.Sprintf("m-%03d.msg", i), []byte(fmt.Sprintf("Topic: alias/%d\nQoS: 1\n\nseq-%06d", i%20, i)))
		if i == 100 {
			broker.Restart()
		}
	}
	harness.WaitFor(t, 60*time.Second, "all messages", func() bool {
		missing, _ := tally(t, sub, 200)
		return len(missing) == 0
	})
	for _, m := range sub.Messages() {
		var seq int
		fmt.Sscanf(string(m.Payload), "seq-%d", &seq)
		if want := fmt.Sprintf("alias/%d", seq%20); m.Topic != want {
			t.Errorf("seq %d arrived on %q, want %q", seq, m.Topic, want)
		}
	}
	for _, pk := range proxy.Packets() {
		if pk.Type == packets.PUBLISH && pk.Dir == harness.ToBroker && (pk.TopicAlias != 0 || pk.Topic == "") {
			t.Errorf("publish %q uses topic alias %d", pk.Payload, pk.TopicAlias)
		}
		if pk.Type == packets.DISCONNECT && pk.ReasonCode == 0x94 {
			t.Errorf("broker disconnected with 0x94 topic alias invalid")
		}
	}
}

// TestRecipe_LimitFromLatestConnack restarts the broker without the
// Maximum Packet Size that made a message fail: a new large message must
// then go through, because the limit comes from the latest CONNACK.
func TestRecipe_LimitFromLatestConnack(t *testing.T) {
	broker := harness.StartBroker(t, "max_packet_size 2048")
	sub := harness.Subscribe(t, broker.Addr(), "lim/#", 1)
	d := harness.NewDaemon(t, broker.URL(), "")
	d.DumpOnFailure()
	d.Start()

	big := strings.Repeat("x", 4096)
	d.Drop("a.msg", []byte("Topic: lim/t\nQoS: 1\n\nseq-000000"+big))
	waitFailed(t, d, 1)

	broker.SetExtra("")
	broker.Restart()
	d.Drop("b.msg", []byte("Topic: lim/t\nQoS: 1\n\nseq-000001"+big))
	harness.WaitFor(t, 30*time.Second, "the large message after the limit is gone", func() bool {
		for _, m := range sub.Messages() {
			if strings.HasPrefix(string(m.Payload), "seq-000001") {
				return true
			}
		}
		return false
	})
}
