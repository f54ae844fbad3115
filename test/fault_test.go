package test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"

	"github.com/mqspool/mqspool/test/harness"
)

// The harness runs the daemon with keep alive K = 5 s.
const keepAlive = 5 * time.Second

// seqDropper drops numbered .msg files on one topic at a steady rate from
// its own goroutine until stopped.
type seqDropper struct {
	d     *harness.Daemon
	topic string
	qos   int

	mu   sync.Mutex // guards next
	next int
	stop chan struct{}
	done chan struct{}
}

func startDropper(d *harness.Daemon, topic string, qos int, every time.Duration) *seqDropper {
	s := &seqDropper{d: d, topic: topic, qos: qos, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-s.stop:
				return
			case <-t.C:
				s.dropOne()
			}
		}
	}()
	return s
}

func (s *seqDropper) dropOne() {
	s.mu.Lock()
	seq := s.next
	s.next++
	s.mu.Unlock()
	body := fmt.Sprintf("Topic: %s\nQoS: %d\n\nseq-%06d", s.topic, s.qos, seq)
	s.d.Drop(fmt.Sprintf("%s-%06d.msg", strings.ReplaceAll(s.topic, "/", "_"), seq), []byte(body))
}

// Stop stops dropping and returns how many files were dropped.
func (s *seqDropper) Stop() int {
	close(s.stop)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.next
}

// waitAllInOrder waits until every seq below total arrived and checks
// that first arrivals are in order.
func waitAllInOrder(t *testing.T, sub *harness.Subscriber, total int, timeout time.Duration) {
	t.Helper()
	harness.WaitFor(t, timeout, fmt.Sprintf("all %d messages", total), func() bool {
		missing, _ := tally(t, sub, total)
		return len(missing) == 0
	})
}

// connectsAfter counts CONNECT packets the proxy saw after since.
func connectsAfter(p *harness.Proxy, since time.Time) []time.Time {
	var at []time.Time
	for _, pk := range p.Packets() {
		if pk.Type == packets.CONNECT && pk.At.After(since) {
			at = append(at, pk.At)
		}
	}
	return at
}

// waitRedial waits for a new TCP connection at the proxy after the
// blackhole started and returns how long it took.
func waitRedial(t *testing.T, p *harness.Proxy, before int, since time.Time, limit time.Duration) time.Duration {
	t.Helper()
	harness.WaitFor(t, limit+5*time.Second, "a new connection after the blackhole", func() bool {
		return p.Accepted() > before
	})
	took := time.Since(since)
	if took > limit {
		t.Errorf("dead link redialled after %s, want within %s", took.Round(100*time.Millisecond), limit)
	}
	return took
}

func TestFault_BlackholeIdle(t *testing.T) {
	broker := harness.StartBroker(t, "")
	proxy := harness.StartProxy(t, broker.Addr())
	sub := harness.Subscribe(t, broker.Addr(), "bh/#", 1)
	d := harness.NewDaemon(t, proxy.URL(), "")
	d.DumpOnFailure()
	d.Start()
	harness.WaitFor(t, 10*time.Second, "first connection", func() bool { return len(connectsAfter(proxy, time.Time{})) == 1 })
	time.Sleep(time.Second)

	before := proxy.Accepted()
	start := time.Now()
	proxy.SetMode(harness.Blackhole)
	took := waitRedial(t, proxy, before, start, keepAlive*3/2+time.Second)
	t.Logf("idle dead link redialled after %s", took.Round(100*time.Millisecond))

	proxy.SetMode(harness.Pass)
	d.Drop("after.msg", []byte("Topic: bh/x\n\nseq-000000"))
	waitAllInOrder(t, sub, 1, 20*time.Second)
}

func TestFault_BlackholeWhilePublishing(t *testing.T) {
	for _, qos := range []int{0, 1} {
		t.Run(fmt.Sprintf("qos%d", qos), func(t *testing.T) {
			broker := harness.StartBroker(t, "")
			proxy := harness.StartProxy(t, broker.Addr())
			sub := harness.Subscribe(t, broker.Addr(), "busy/#", 1)
			d := harness.NewDaemon(t, proxy.URL(), "")
			d.DumpOnFailure()
			d.Start()

			drops := startDropper(d, "busy/t", qos, 50*time.Millisecond)
			sub.WaitCount(20, 20*time.Second)

			before := proxy.Accepted()
			start := time.Now()
			proxy.SetMode(harness.Blackhole)
			took := waitRedial(t, proxy, before, start, 2*keepAlive+time.Second)
			t.Logf("busy dead link redialled after %s", took.Round(100*time.Millisecond))
			proxy.SetMode(harness.Pass)

			total := drops.Stop()
			if qos == 1 {
				waitAllInOrder(t, sub, total, 40*time.Second)
				return
			}
			// QoS 0 written into a dead link is lost: at most what was sent
			// between the blackhole and its detection.
			harness.WaitFor(t, 30*time.Second, "new/ empty", d.NewEmpty)
			time.Sleep(time.Second)
			missing, _ := tally(t, sub, total)
			maxLost := int(took/(50*time.Millisecond)) + 5
			if len(missing) > maxLost {
				t.Errorf("QoS 0 lost %d messages, more than the %d sent while the dead link went undetected", len(missing), maxLost)
			}
		})
	}
}

func TestFault_StalledReader(t *testing.T) {
	broker := harness.StartBroker(t, "")
	proxy := harness.StartProxy(t, broker.Addr())
	sub := harness.Subscribe(t, broker.Addr(), "stall/#", 1)
	d := harness.NewDaemon(t, proxy.URL(), "publish:\n  max_message_bytes: 4MiB\n")
	d.DumpOnFailure()
	d.Start()
	harness.WaitFor(t, 10*time.Second, "first connection", func() bool { return proxy.Accepted() == 1 })

	// 40 messages of 1 MiB fill the socket buffers once the proxy stops
	// reading, so a write without a deadline would block for good.
	proxy.SetMode(harness.Stall)
	payload := strings.Repeat("x", 1<<20)
	for i := range 40 {
		d.Drop(fmt.Sprintf("big-%03d.msg", i), []byte(fmt.Sprintf("Topic: stall/t\nQoS: 1\n\nseq-%06d%s", i, payload)))
	}
	start := time.Now()
	waitRedial(t, proxy, 1, start, 2*keepAlive+3*time.Second)
	proxy.SetMode(harness.Pass)

	harness.WaitFor(t, 60*time.Second, "all 40 large messages", func() bool { return distinct(sub) >= 40 })
}

func TestFault_BrokerSIGSTOP(t *testing.T) {
	broker := harness.StartBroker(t, "")
	proxy := harness.StartProxy(t, broker.Addr())
	sub := harness.Subscribe(t, broker.Addr(), "stop/#", 1)
	d := harness.NewDaemon(t, proxy.URL(), "")
	d.DumpOnFailure()
	d.Start()

	drops := startDropper(d, "stop/t", 1, 50*time.Millisecond)
	sub.WaitCount(10, 20*time.Second)
	before := proxy.Accepted()
	start := time.Now()
	broker.Pause()
	waitRedial(t, proxy, before, start, 2*keepAlive+time.Second)
	time.Sleep(2 * time.Second)
	broker.Resume()

	total := drops.Stop()
	waitAllInOrder(t, sub, total, 60*time.Second)
}

// TestFault_ResendWithDupAfterReconnect drops the PUBACKs of the first ten
// publishes and resets the link: the reconnect finds the session present,
// and the ten go out again with DUP set, the same packet identifiers and
// before anything new.
func TestFault_ResendWithDupAfterReconnect(t *testing.T) {
	for _, qos := range []int{1, 2} {
		t.Run(fmt.Sprintf("qos%d", qos), func(t *testing.T) {
			broker := harness.StartBroker(t, "")
			proxy := harness.StartProxy(t, broker.Addr())
			sub := harness.Subscribe(t, broker.Addr(), "dup/#", 2)
			d := harness.NewDaemon(t, proxy.URL(), "")
			d.DumpOnFailure()
			d.Start()
			harness.WaitFor(t, 10*time.Second, "first connection", func() bool { return proxy.Accepted() == 1 })

			ackType := byte(packets.PUBACK)
			if qos == 2 {
				ackType = packets.PUBREC
			}
			proxy.SetDrop(func(p harness.Packet) bool { return p.Dir == harness.ToClient && p.Type == ackType })
			for i := range 10 {
				d.Drop(fmt.Sprintf("m-%03d.msg", i), []byte(fmt.Sprintf("Topic: dup/t\nQoS: %d\n\nseq-%06d", qos, i)))
			}
			// Every acknowledgement must be dropped before the reset, or a
			// late one lets its message through without a resend.
			harness.WaitFor(t, 10*time.Second, "ten acknowledgements dropped", func() bool { return countDropped(proxy, 1, ackType) >= 10 })
			proxy.SetDrop(nil)
			proxy.Reset()
			for i := 10; i < 20; i++ {
				d.Drop(fmt.Sprintf("m-%03d.msg", i), []byte(fmt.Sprintf("Topic: dup/t\nQoS: %d\n\nseq-%06d", qos, i)))
			}
			waitAllInOrder(t, sub, 20, 30*time.Second)

			checkResend(t, proxy.Packets())
			if qos == 2 {
				if _, dups := tally(t, sub, 20); len(dups) > 0 {
					t.Errorf("QoS 2 messages delivered twice: %v", dups)
				}
			}
		})
	}
}

func countPublishes(p *harness.Proxy, conn int) int {
	n := 0
	for _, pk := range p.Packets() {
		if pk.Conn == conn && pk.Type == packets.PUBLISH && pk.Dir == harness.ToBroker {
			n++
		}
	}
	return n
}

// countDropped counts the packets of type kind that the proxy dropped on
// its connection conn.
func countDropped(p *harness.Proxy, conn int, kind byte) int {
	n := 0
	for _, pk := range p.Packets() {
		if pk.Conn == conn && pk.Type == kind && pk.Dropped {
			n++
		}
	}
	return n
}

// checkResend asserts the retransmission rules on the second connection:
// every publish left open on the first is resent with DUP and its
// original identifier, payload and order, before any first-time publish.
func checkResend(t *testing.T, log []harness.Packet) {
	t.Helper()
	type sent struct {
		id      uint16
		payload string
	}
	var first []sent
	var second []harness.Packet
	var sessionPresent bool
	for _, pk := range log {
		switch {
		case pk.Conn == 1 && pk.Type == packets.PUBLISH && pk.Dir == harness.ToBroker:
			if pk.Dup {
				t.Errorf("first send of %q has DUP set", pk.Payload)
			}
			first = append(first, sent{pk.PacketID, string(pk.Payload)})
		case pk.Conn == 2 && pk.Type == packets.CONNACK:
			sessionPresent = pk.SessionPresent
		case pk.Conn == 2 && pk.Type == packets.PUBLISH && pk.Dir == harness.ToBroker:
			second = append(second, pk)
		}
	}
	if !sessionPresent {
		t.Fatalf("second CONNACK has session present 0; the test needs the session kept")
	}
	if len(second) < len(first) {
		t.Fatalf("second connection sent %d publishes, want at least the %d resends", len(second), len(first))
	}
	for i, f := range first {
		r := second[i]
		if !r.Dup || r.PacketID != f.id || string(r.Payload) != f.payload {
			t.Errorf("resend %d = id %d dup %t payload %q, want id %d dup true payload %q", i, r.PacketID, r.Dup, r.Payload, f.id, f.payload)
		}
	}
	for _, r := range second[len(first):] {
		if r.Dup {
			t.Errorf("first-time publish %q after the resends has DUP set", r.Payload)
		}
	}
}

// TestFault_SessionLostRepublishes drops acknowledgements, then restarts
// the broker without its sessions: the daemon must publish the open
// messages again as new ones and send no PUBREL for flows the broker
// does not know.
func TestFault_SessionLostRepublishes(t *testing.T) {
	broker := harness.StartBroker(t, "")
	proxy := harness.StartProxy(t, broker.Addr())
	sub := harness.Subscribe(t, broker.Addr(), "lost/#", 2)
	d := harness.NewDaemon(t, proxy.URL(), "")
	d.DumpOnFailure()
	d.Start()
	harness.WaitFor(t, 10*time.Second, "first connection", func() bool { return proxy.Accepted() == 1 })

	// QoS 1 publishes whose PUBACK is lost, and QoS 2 publishes that got
	// PUBREC but whose PUBCOMP is lost.
	proxy.SetDrop(func(p harness.Packet) bool {
		return p.Dir == harness.ToClient && (p.Type == packets.PUBACK || p.Type == packets.PUBCOMP)
	})
	var qos1 []string
	for i := range 10 {
		payload := fmt.Sprintf("seq-%06d", i)
		if i%2 == 0 {
			qos1 = append(qos1, payload)
		}
		d.Drop(fmt.Sprintf("m-%03d.msg", i), []byte(fmt.Sprintf("Topic: lost/t%d\nQoS: %d\n\n%s", i%2, 1+i%2, payload)))
	}
	harness.WaitFor(t, 10*time.Second, "ten publishes on the wire", func() bool { return countPublishes(proxy, 1) >= 10 })
	sub.WaitCount(10, 10*time.Second)

	// The broker loses every session. The proxy holds the daemon off until
	// the subscriber has subscribed again, so republished messages reach it.
	proxy.SetMode(harness.Blackhole)
	broker.Kill()
	broker.Start()
	resubscribed := sub.Count()
	proxy.SetDrop(nil)
	harness.WaitFor(t, 10*time.Second, "subscriber back", func() bool { return sub.Connections() >= 2 })
	// Reset before Pass, so that no CONNECT held by the blackhole reaches
	// the new broker and leaves an empty session there.
	proxy.Reset()
	proxy.SetMode(harness.Pass)

	harness.WaitFor(t, 30*time.Second, "the QoS 1 messages published again", func() bool {
		return sub.Count() >= resubscribed+len(qos1)
	})
	republished := map[string]bool{}
	// A QoS 2 message published again starts a new flow, so its PUBREL is
	// expected. A PUBREL for an identifier not published on the same
	// connection refers to a flow the broker forgot.
	published := map[[2]int]bool{}
	for _, pk := range proxy.Packets() {
		if pk.Conn < 2 || pk.Dropped {
			continue
		}
		switch {
		case pk.Type == packets.CONNACK && pk.SessionPresent:
			t.Errorf("connection %d: session present 1 after the broker lost its sessions", pk.Conn)
		case pk.Type == packets.PUBREL && pk.Dir == harness.ToBroker && !published[[2]int{pk.Conn, int(pk.PacketID)}]:
			t.Errorf("connection %d: PUBREL %d for a flow the broker does not know", pk.Conn, pk.PacketID)
		case pk.Type == packets.PUBCOMP && pk.ReasonCode == 0x92:
			t.Errorf("connection %d: PUBCOMP 0x92 packet identifier not found", pk.Conn)
		case pk.Type == packets.PUBLISH && pk.Dir == harness.ToBroker:
			if pk.Dup {
				t.Errorf("connection %d: republish of %q has DUP set, want a new message", pk.Conn, pk.Payload)
			}
			republished[string(pk.Payload)] = true
			published[[2]int{pk.Conn, int(pk.PacketID)}] = true
		}
	}
	for _, p := range qos1 {
		if !republished[p] {
			t.Errorf("unacknowledged QoS 1 message %q was not published again", p)
		}
	}
}

// TestFault_SessionLostPastPubrec loses the broker's session after
// PUBREC and before PUBREL. mosquitto forwards a QoS 2 message only on
// PUBREL, so it never forwarded these: the daemon must publish them again,
// or they are lost.
func TestFault_SessionLostPastPubrec(t *testing.T) {
	broker := harness.StartBroker(t, "")
	proxy := harness.StartProxy(t, broker.Addr())
	sub := harness.Subscribe(t, broker.Addr(), "rel/#", 2)
	d := harness.NewDaemon(t, proxy.URL(), "")
	d.DumpOnFailure()
	d.Start()
	harness.WaitFor(t, 10*time.Second, "first connection", func() bool { return proxy.Accepted() == 1 })

	const total = 10
	proxy.SetDrop(func(p harness.Packet) bool { return p.Dir == harness.ToBroker && p.Type == packets.PUBREL })
	for i := range total {
		d.Drop(fmt.Sprintf("m-%03d.msg", i), []byte(fmt.Sprintf("Topic: rel/t\nQoS: 2\n\nseq-%06d", i)))
	}
	harness.WaitFor(t, 10*time.Second, "a PUBREC for each message", func() bool {
		n := 0
		for _, pk := range proxy.Packets() {
			if pk.Type == packets.PUBREC && pk.Dir == harness.ToClient {
				n++
			}
		}
		return n >= total
	})
	time.Sleep(300 * time.Millisecond)
	if n := sub.Count(); n != 0 {
		t.Fatalf("subscriber has %d messages before any PUBREL, want 0: the broker forwards on PUBREL", n)
	}

	// The broker loses every session. The proxy holds the daemon off until
	// the subscriber has subscribed again, so republished messages reach it.
	proxy.SetMode(harness.Blackhole)
	broker.Kill()
	broker.Start()
	proxy.SetDrop(nil)
	harness.WaitFor(t, 10*time.Second, "subscriber back", func() bool { return sub.Connections() >= 2 })
	time.Sleep(300 * time.Millisecond)
	// Reset first: a CONNECT held by the blackhole must not reach the new
	// broker. It would create an empty session there. The next CONNACK
	// would then report a session present, and the daemon would resend
	// PUBREL into it instead of publishing again.
	proxy.Reset()
	proxy.SetMode(harness.Pass)

	waitAllInOrder(t, sub, total, 30*time.Second)
}

// TestFault_ReceiveMaximumReadEachConnect sets mosquitto's Receive
// Maximum to 5, cuts the link while publishes are open, then restarts the
// broker with 2: the outstanding count stays within the latest CONNACK's
// value, the resend burst included.
func TestFault_ReceiveMaximumReadEachConnect(t *testing.T) {
	broker := harness.StartBroker(t, "max_inflight_messages 5")
	proxy := harness.StartProxy(t, broker.Addr())
	sub := harness.Subscribe(t, broker.Addr(), "rm/#", 1)
	d := harness.NewDaemon(t, proxy.URL(), "publish:\n  max_inflight: 50\n")
	d.DumpOnFailure()
	d.Start()

	for i := range 300 {
		d.Drop(fmt.Sprintf("m-%04d.msg", i), []byte(fmt.Sprintf("Topic: rm/t\nQoS: 1\n\nseq-%06d", i)))
	}
	sub.WaitCount(50, 30*time.Second)
	proxy.SetDrop(func(p harness.Packet) bool { return p.Dir == harness.ToClient && p.Type == packets.PUBACK })
	time.Sleep(500 * time.Millisecond)
	proxy.SetDrop(nil)
	proxy.Reset()
	sub.WaitCount(150, 30*time.Second)

	broker.SetExtra("max_inflight_messages 2")
	restartAt := time.Now()
	broker.Restart()
	for i := 300; i < 400; i++ {
		d.Drop(fmt.Sprintf("m-%04d.msg", i), []byte(fmt.Sprintf("Topic: rm/t\nQoS: 1\n\nseq-%06d", i)))
	}
	waitAllInOrder(t, sub, 400, 60*time.Second)

	// Connections opened after the restart must keep within its limit;
	// packets of older connections still in flight then do not count.
	log := proxy.Packets()
	firstAfter := 1 << 30
	for _, pk := range log {
		if pk.Type == packets.CONNECT && pk.At.After(restartAt) && pk.Conn < firstAfter {
			firstAfter = pk.Conn
		}
	}
	var before, after []harness.Packet
	for _, pk := range log {
		if pk.Conn < firstAfter {
			before = append(before, pk)
		} else {
			after = append(after, pk)
		}
	}
	if max, reuse := harness.MaxOutstanding(before); max > 5 || reuse != nil {
		t.Errorf("before the restart: %d outstanding (want at most 5), reuse: %v", max, reuse)
	}
	if max, reuse := harness.MaxOutstanding(after); max > 2 || reuse != nil {
		t.Errorf("after the restart: %d outstanding (want at most 2), reuse: %v", max, reuse)
	}
	if broker.Contains("Reused message ID") {
		t.Errorf("mosquitto logged a reused packet identifier")
	}
}

// TestFault_MaximumPacketSize sends one message too large for the
// broker's Maximum Packet Size among small ones: it goes to failed/
// without touching the wire, and the rest keep their order.
func TestFault_MaximumPacketSize(t *testing.T) {
	broker := harness.StartBroker(t, "max_packet_size 2048")
	proxy := harness.StartProxy(t, broker.Addr())
	sub := harness.Subscribe(t, broker.Addr(), "mps/#", 1)
	d := harness.NewDaemon(t, proxy.URL(), "")
	d.DumpOnFailure()
	d.Start()

	dropOneLarge(d, "mps/t", 20, 10, 4096)
	sub.WaitCount(19, 30*time.Second)
	failed := waitFailed(t, d, 1)
	if !strings.Contains(failed[0], "packet size") && !strings.Contains(failed[0], "Maximum Packet Size") {
		t.Errorf("reason %q does not name the packet size limit", failed[0])
	}
	for _, pk := range proxy.Packets() {
		if pk.Type == packets.PUBLISH && len(pk.Payload) > 2048 {
			t.Errorf("the oversized message went on the wire")
		}
	}
	if n := proxy.Accepted(); n != 1 {
		t.Errorf("%d connections, want 1: an oversized message must not cost a reconnect", n)
	}
	missing, _ := tally(t, sub, 20)
	if len(missing) != 1 || missing[0] != 10 {
		t.Errorf("missing %v, want only the oversized seq 10", missing)
	}
}

// TestFault_RejectedByBroker makes mosquitto reply PUBACK 0x95 (packet too
// large) to one message, which must go to failed/ without blocking the
// rest.
func TestFault_RejectedByBroker(t *testing.T) {
	broker := harness.StartBroker(t, "message_size_limit 1024")
	sub := harness.Subscribe(t, broker.Addr(), "rej/#", 1)
	d := harness.NewDaemon(t, broker.URL(), "")
	d.DumpOnFailure()
	d.Start()

	dropOneLarge(d, "rej/t", 20, 5, 2048)
	sub.WaitCount(19, 30*time.Second)
	failed := waitFailed(t, d, 1)
	if !strings.Contains(strings.ToLower(failed[0]), "too large") && !strings.Contains(failed[0], "0x95") {
		t.Errorf("reason %q does not name the 0x95 rejection", failed[0])
	}
	if !strings.Contains(failed[0], "queued from new/m-005.msg") {
		t.Errorf("reason %q does not name the file the message came from", failed[0])
	}
}

// TestFault_RejectedWhileFailedUnusable has the broker refuse a message
// while failed/ is a regular file, so the message cannot be moved there.
// The daemon must keep running and deliver the rest, keep the refused
// message in the spool, start again with failed/ still broken, and move
// the message to failed/ after a restart once failed/ is a directory.
func TestFault_RejectedWhileFailedUnusable(t *testing.T) {
	broker := harness.StartBroker(t, "message_size_limit 1024")
	sub := harness.Subscribe(t, broker.Addr(), "rej/#", 1)
	d := harness.NewDaemon(t, broker.URL(), "")
	d.DumpOnFailure()
	d.Start()

	failedDir := filepath.Join(d.Dir, "failed")
	if err := os.RemoveAll(failedDir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(failedDir, []byte("not a directory\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	dropOneLarge(d, "rej/t", 20, 5, 2048)
	sub.WaitCount(19, 30*time.Second)
	harness.WaitFor(t, 10*time.Second, "the quarantine error in the log", func() bool {
		return strings.Contains(d.Log(), "could not move a failed message to failed/")
	})
	if !d.Running() {
		t.Fatal("the daemon stopped on a message it could not move to failed/")
	}
	opsWait(t, "the refused message alone in the queue", func() bool {
		return opsStatus(t, d)["queue_messages"] == float64(1)
	})
	st := opsStatus(t, d)
	if msg, _ := st["failed_error"].(string); !strings.Contains(msg, "not a directory") {
		t.Errorf("status failed_error %q, want one saying failed/ is not a directory", msg)
	}
	if st["failed_kept"] != float64(1) {
		t.Errorf("status failed_kept %v, want 1", st["failed_kept"])
	}
	d.Drop("bad.msg", []byte("QoS: 1\n\nno topic"))
	opsWait(t, "the bad file's error in status", func() bool {
		msg, _ := opsStatus(t, d)["intake_last_error"].(string)
		return strings.Contains(msg, "failed")
	})
	if d.NewEmpty() {
		t.Error("the bad file left new/ although failed/ cannot take it")
	}
	if err := os.Remove(filepath.Join(d.Dir, "new", "bad.msg")); err != nil {
		t.Fatal(err)
	}

	// A restart with failed/ still a file keeps running and keeps the
	// message queued.
	if code := d.Stop(10 * time.Second); code != 0 {
		t.Fatalf("daemon exit code %d after SIGTERM, want 0", code)
	}
	d.Start()
	harness.WaitFor(t, 10*time.Second, "the refused message sent and kept again", func() bool {
		return strings.Count(d.Log(), "could not move a failed message to failed/") >= 2
	})
	if !d.Running() {
		t.Fatal("the daemon did not start with failed/ a regular file")
	}

	if code := d.Stop(10 * time.Second); code != 0 {
		t.Fatalf("daemon exit code %d after SIGTERM, want 0", code)
	}
	if err := os.Remove(failedDir); err != nil {
		t.Fatal(err)
	}
	d.Start()
	failed := waitFailed(t, d, 1)
	if !strings.Contains(strings.ToLower(failed[0]), "too large") && !strings.Contains(failed[0], "0x95") {
		t.Errorf("reason %q does not name the 0x95 rejection", failed[0])
	}
	harness.WaitFor(t, 10*time.Second, "an empty queue", func() bool {
		return opsStatus(t, d)["queue_messages"] == float64(0)
	})
	if missing, dups := tally(t, sub, 20); len(missing) != 1 || missing[0] != 5 || len(dups) != 0 {
		t.Errorf("missing %v and duplicated %v, want only seq 5 missing", missing, dups)
	}
}

// dropOneLarge drops n QoS 1 messages on topic, numbered for tally, with
// extra bytes added to the payload of message large.
func dropOneLarge(d *harness.Daemon, topic string, n, large, extra int) {
	for i := range n {
		payload := fmt.Sprintf("seq-%06d", i)
		if i == large {
			payload += strings.Repeat("x", extra)
		}
		d.Drop(fmt.Sprintf("m-%03d.msg", i), []byte("Topic: "+topic+"\nQoS: 1\n\n"+payload))
	}
}

// waitFailed waits until failed/ holds n .reason files and returns their
// texts.
func waitFailed(t *testing.T, d *harness.Daemon, n int) []string {
	t.Helper()
	var reasons []string
	harness.WaitFor(t, 20*time.Second, fmt.Sprintf("%d files in failed/", n), func() bool {
		reasons = reasons[:0]
		filepath.WalkDir(filepath.Join(d.Dir, "failed"), func(p string, e os.DirEntry, err error) error {
			if err == nil && strings.HasSuffix(p, ".reason") {
				data, _ := os.ReadFile(p)
				reasons = append(reasons, string(data))
			}
			return nil
		})
		return len(reasons) >= n
	})
	return reasons
}

// TestFault_ServerKeepAlive runs the daemon with keep alive 60 s against a
// broker that allows at most 10 s: the daemon must follow the CONNACK's
// Server Keep Alive, or mosquitto drops it.
func TestFault_ServerKeepAlive(t *testing.T) {
	if testing.Short() {
		t.Skip("takes 25 s")
	}
	broker := harness.StartBroker(t, "max_keepalive 10")
	proxy := harness.StartProxy(t, broker.Addr())
	d := harness.NewDaemon(t, proxy.URL(), "broker:\n  urls: ["+proxy.URL()+"]\n  client_id: mqspool-t\n  keep_alive: 60s\n")
	d.DumpOnFailure()
	d.Start()
	time.Sleep(25 * time.Second)

	var last time.Time
	for _, pk := range proxy.Packets() {
		if pk.Dir != harness.ToBroker {
			continue
		}
		if !last.IsZero() && pk.At.Sub(last) > 10*time.Second+500*time.Millisecond {
			t.Errorf("nothing sent for %s, more than the Server Keep Alive of 10 s", pk.At.Sub(last))
		}
		last = pk.At
	}
	if time.Since(last) > 11*time.Second {
		t.Errorf("nothing sent for the last %s", time.Since(last))
	}
	if proxy.Accepted() != 1 {
		t.Errorf("%d connections, want 1", proxy.Accepted())
	}
	if broker.Contains("exceeded timeout") {
		t.Errorf("mosquitto timed the daemon out")
	}
}

// TestFault_BackoffWhileBrokerDown counts connection attempts against a
// port where nothing listens: never closer than min_delay, and capped.
func TestFault_BackoffWhileBrokerDown(t *testing.T) {
	port := harness.FreePort(t)
	d := harness.NewDaemon(t, fmt.Sprintf("mqtt://127.0.0.1:%d", port), "reconnect:\n  min_delay: 500ms\n  max_delay: 2s\n")
	d.DumpOnFailure()
	d.Start()
	time.Sleep(8 * time.Second)

	var at []time.Time
	for _, line := range strings.Split(d.Log(), "\n") {
		if !strings.Contains(line, "msg=connecting") {
			continue
		}
		i := strings.Index(line, "time=")
		if i < 0 {
			continue
		}
		ts, err := time.Parse("2006-01-02T15:04:05.000Z07:00", strings.Fields(line[i+5:])[0])
		if err == nil {
			at = append(at, ts)
		}
	}
	if len(at) < 4 || len(at) > 17 {
		t.Errorf("%d connection attempts in 8 s, want between 4 and 16 with delays of 0.5 s to 2 s", len(at))
	}
	for i := 1; i < len(at); i++ {
		if gap := at[i].Sub(at[i-1]); gap < 490*time.Millisecond {
			t.Errorf("attempts %d and %d only %s apart, below min_delay", i-1, i, gap)
		}
	}
}

// TestFault_NoLeakAcrossResets resets the link many times and checks that
// open file descriptors and anonymous memory do not pile up in the daemon.
func TestFault_NoLeakAcrossResets(t *testing.T) {
	broker := harness.StartBroker(t, "")
	proxy := harness.StartProxy(t, broker.Addr())
	d := harness.NewDaemon(t, proxy.URL(), "reconnect:\n  min_delay: 50ms\n  max_delay: 100ms\n")
	d.DumpOnFailure()
	d.Start()
	harness.WaitFor(t, 10*time.Second, "first connection", func() bool { return proxy.Accepted() == 1 })
	time.Sleep(500 * time.Millisecond)
	baseline := d.OpenFDs()
	baseRSS := d.RSSAnonKiB()

	for i := range 40 {
		proxy.Reset()
		harness.WaitFor(t, 10*time.Second, "reconnect after a reset", func() bool { return proxy.Accepted() >= i+2 })
		time.Sleep(6 * time.Second / 10) // past the 5 s rule would be too slow; the count is what matters
	}
	time.Sleep(time.Second)
	if fds := d.OpenFDs(); fds > baseline+5 {
		t.Errorf("open file descriptors grew from %d to %d over 40 resets", baseline, fds)
	}
	if rss := d.RSSAnonKiB(); rss > baseRSS+10*1024 {
		t.Errorf("RssAnon grew from %d KiB to %d KiB over 40 resets", baseRSS, rss)
	}
}
