package eventloop

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"

	"github.com/mqspool/mqspool/internal/state"
)

// TestIncoming_RestoredQoS2 resumes a session whose saved state has an
// incoming QoS 2 flow awaiting PUBREL: a redelivered PUBLISH gets PUBREC
// without an event, and PUBREL gets PUBCOMP with success.
func TestIncoming_RestoredQoS2(t *testing.T) {
	b := newFakeBroker(t, brokerScript{sessionPresent: func(int) bool { return true }})
	opts := testOptions(b)
	opts.Subscriptions = []Subscription{{Filter: "in/#", QoS: 2}}
	opts.SessionSubscriptions = opts.Subscriptions
	j := &testJournal{}
	restored := &state.State{Session: true, IncomingQoS2: []uint16{9}}
	r := start(t, opts, newMemSource(), j, restored)
	waitFor(t, 3*time.Second, "connect", func() bool { return r.countEvents(EventConnected) == 1 })

	b.sendTo(0, &packets.Publish{Topic: "in/1", QoS: 2, PacketID: 9, Duplicate: true, Payload: []byte("x"), Properties: &packets.Properties{}})
	waitFor(t, 3*time.Second, "pubrec", func() bool { return len(b.received(packets.PUBREC)) == 1 })
	if n := r.countEvents(EventIncoming); n != 0 {
		t.Errorf("%d incoming events for a stored flow, want 0", n)
	}

	b.sendTo(0, &packets.Pubrel{PacketID: 9, Properties: &packets.Properties{}})
	waitFor(t, 3*time.Second, "pubcomp", func() bool { return len(b.received(packets.PUBCOMP)) == 1 })
	if code := b.received(packets.PUBCOMP)[0].code; code != 0 {
		t.Errorf("PUBCOMP reason code 0x%02x, want 0x00", code)
	}
	if j.count(state.ChangeIncomingReleased) != 1 {
		t.Errorf("incoming-released not journaled")
	}
	if n := len(b.received(packets.SUBSCRIBE)); n != 0 {
		t.Errorf("%d SUBSCRIBE packets for an unchanged session, want 0", n)
	}
}

// A broker may send one PUBLISH for several matching subscriptions, with
// one Subscription Identifier each. The event carries all of them, and the
// single release sends a single PUBREC.
func TestIncoming_SeveralSubscriptionIdentifiers(t *testing.T) {
	b, r := startSubscriber(t, 2, func(int) bool { return true }, nil)

	b.sendRawTo(0, rawPublish("in/x", 2, identifierProperties([]int{1, 2}), []byte("x")))
	waitFor(t, 3*time.Second, "the message", func() bool { return len(r.incoming()) == 1 })
	in := r.incoming()[0]
	if want := []int{1, 2}; !slices.Equal(in.SubscriptionIdentifiers, want) {
		t.Fatalf("identifiers %v, want %v", in.SubscriptionIdentifiers, want)
	}
	if in.PacketID != 7 || in.Message.Topic != "in/x" || string(in.Message.Payload) != "x" {
		t.Errorf("incoming %+v, want packet identifier 7, topic in/x and payload x", in)
	}

	in.Release()
	waitFor(t, 3*time.Second, "pubrec", func() bool { return len(b.received(packets.PUBREC)) == 1 })
	time.Sleep(100 * time.Millisecond)
	if n := len(b.received(packets.PUBREC)); n != 1 {
		t.Errorf("%d PUBREC packets, want 1", n)
	}
	if n := len(r.incoming()); n != 1 {
		t.Errorf("%d incoming events, want 1", n)
	}
}

// incoming returns the Incoming of every EventIncoming so far.
func (r *runner) incoming() []*Incoming {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*Incoming
	for _, ev := range r.events {
		if ev.Kind == EventIncoming {
			out = append(out, ev.Incoming)
		}
	}
	return out
}

// TestIncoming_OverMaxIncoming has the broker send ten QoS 1 messages at
// once to a loop that holds four. The loop takes four and drops the rest
// unacknowledged. Once the four are released and acknowledged, it
// connects again, so the broker sends the rest again.
func TestIncoming_OverMaxIncoming(t *testing.T) {
	b, r := startSubscriber(t, 1, func(int) bool { return true }, func(o *Options) {
		o.ReceiveMaximum = 4
		o.MaxIncoming = 4
	})

	for id := uint16(1); id <= 10; id++ {
		b.sendTo(0, &packets.Publish{Topic: "in/x", QoS: 1, PacketID: id, Payload: []byte("x"), Properties: &packets.Properties{}})
	}
	waitFor(t, 3*time.Second, "four messages", func() bool { return len(r.incoming()) == 4 })
	time.Sleep(200 * time.Millisecond)
	if n := len(r.incoming()); n != 4 {
		t.Fatalf("%d messages given to the caller, want MaxIncoming 4", n)
	}
	if n := b.connections(); n != 1 {
		t.Fatalf("%d connections before the release, want 1", n)
	}

	for _, in := range r.incoming() {
		in.Release()
	}
	waitFor(t, 3*time.Second, "a second connection", func() bool { return b.connections() == 2 })
	if n := len(b.received(packets.PUBACK)); n != 4 {
		t.Errorf("%d PUBACK packets, want one for each of the 4 messages taken", n)
	}
}

// Past the Receive Maximum, the bytes bound counts what the caller holds.
// A message larger than the bound is still taken when the caller holds
// nothing.
func TestIncoming_OverMaxIncomingBytes(t *testing.T) {
	b, r := startSubscriber(t, 1, func(int) bool { return true }, func(o *Options) {
		o.ReceiveMaximum = 1
		o.MaxIncomingBytes = 1000
	})

	b.sendTo(0, &packets.Publish{Topic: "in/x", QoS: 1, PacketID: 1, Payload: make([]byte, 1500), Properties: &packets.Properties{}})
	b.sendTo(0, &packets.Publish{Topic: "in/x", QoS: 1, PacketID: 2, Payload: []byte("small"), Properties: &packets.Properties{}})
	waitFor(t, 3*time.Second, "the large message", func() bool { return len(r.incoming()) == 1 })
	time.Sleep(200 * time.Millisecond)
	if n := len(r.incoming()); n != 1 {
		t.Fatalf("%d messages given to the caller, want only the first: it holds more than MaxIncomingBytes", n)
	}

	r.incoming()[0].Release()
	waitFor(t, 3*time.Second, "a second connection", func() bool { return b.connections() == 2 })
}

// For a QoS 1 message whose connection ended, Redelivered reports a
// resend only once a new connection is up, and only when that connection
// resumed the session.
func TestIncoming_Redelivered(t *testing.T) {
	for _, tc := range []struct {
		name    string
		session bool
		want    bool
	}{
		{"session resumed", true, true},
		{"session lost", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, r := startSubscriber(t, 1, func(conn int) bool { return conn == 0 || tc.session }, func(o *Options) {
				o.MinDelay, o.MaxDelay = 300*time.Millisecond, 300*time.Millisecond
			})

			b.sendTo(0, &packets.Publish{Topic: "in/x", QoS: 1, PacketID: 1, Payload: []byte("x"), Properties: &packets.Properties{}})
			waitFor(t, 3*time.Second, "one message", func() bool { return len(r.incoming()) == 1 })
			in := r.incoming()[0]
			if again, known := in.Redelivered(); again || !known {
				t.Fatalf("Redelivered on its own connection = %t, %t; want false, true", again, known)
			}

			b.dropConnections()
			waitFor(t, time.Second, "the connection to end", func() bool {
				_, known := in.Redelivered()
				return !known
			})
			waitFor(t, 3*time.Second, "a new connection", func() bool { return r.countEvents(EventConnected) == 2 })
			if again, known := in.Redelivered(); again != tc.want || !known {
				t.Errorf("Redelivered after the reconnect = %t, %t; want %t, true", again, known, tc.want)
			}
		})
	}
}

// The release of a QoS 2 message whose session the broker lost must not
// acknowledge a new message that took its packet identifier since.
func TestIncoming_QoS2ReleaseAfterLostSession(t *testing.T) {
	b, r := startSubscriber(t, 2, func(conn int) bool { return conn == 0 }, func(o *Options) {
		o.MinDelay, o.MaxDelay = 100*time.Millisecond, 100*time.Millisecond
	})

	b.sendTo(0, &packets.Publish{Topic: "in/x", QoS: 2, PacketID: 1, Payload: []byte("old"), Properties: &packets.Properties{}})
	waitFor(t, 3*time.Second, "the old message", func() bool { return len(r.incoming()) == 1 })
	b.dropConnections()
	waitFor(t, 3*time.Second, "a connection without the session", func() bool { return r.countEvents(EventConnected) == 2 })
	b.sendTo(1, &packets.Publish{Topic: "in/x", QoS: 2, PacketID: 1, Payload: []byte("new"), Properties: &packets.Properties{}})
	waitFor(t, 3*time.Second, "the new message", func() bool { return len(r.incoming()) == 2 })

	r.incoming()[0].Release()
	time.Sleep(300 * time.Millisecond)
	if n := len(b.received(packets.PUBREC)); n != 0 {
		t.Fatalf("%d PUBREC after the old flow's release, want none: the new message is not stored yet", n)
	}
	r.incoming()[1].Release()
	waitFor(t, 3*time.Second, "PUBREC for the new message", func() bool { return len(b.received(packets.PUBREC)) == 1 })
}

// A message that arrives while the loop drains is not taken, so the
// drain can end; the broker sends it again after the restart.
func TestIncoming_NotTakenWhileDraining(t *testing.T) {
	b, r := startSubscriber(t, 1, func(int) bool { return true }, nil)

	b.sendTo(0, &packets.Publish{Topic: "in/x", QoS: 1, PacketID: 1, Payload: []byte("x"), Properties: &packets.Properties{}})
	waitFor(t, 3*time.Second, "one message", func() bool { return len(r.incoming()) == 1 })
	r.l.Shutdown(3 * time.Second)
	time.Sleep(100 * time.Millisecond)
	b.sendTo(0, &packets.Publish{Topic: "in/x", QoS: 1, PacketID: 2, Payload: []byte("y"), Properties: &packets.Properties{}})
	time.Sleep(200 * time.Millisecond)
	if n := len(r.incoming()); n != 1 {
		t.Fatalf("%d messages taken, want 1: one arriving during the drain was taken", n)
	}

	began := time.Now()
	r.incoming()[0].Release()
	select {
	case err := <-r.done:
		r.done <- err
	case <-time.After(2 * time.Second):
		t.Fatal("the drain did not end after the held message was released")
	}
	if took := time.Since(began); took > time.Second {
		t.Errorf("drain ended %s after the release, want at once", took)
	}
}

// A declined message ends the drain without an acknowledgement: the
// broker keeps it and sends it again after the restart.
func TestIncoming_DeclineEndsDrain(t *testing.T) {
	for _, qos := range []byte{1, 2} {
		t.Run(fmt.Sprintf("qos %d", qos), func(t *testing.T) {
			b, r := startSubscriber(t, qos, func(int) bool { return true }, nil)

			b.sendTo(0, &packets.Publish{Topic: "in/x", QoS: qos, PacketID: 1, Payload: []byte("x"), Properties: &packets.Properties{}})
			waitFor(t, 3*time.Second, "one message", func() bool { return len(r.incoming()) == 1 })
			r.l.Shutdown(10 * time.Second)
			time.Sleep(100 * time.Millisecond)

			began := time.Now()
			r.incoming()[0].Decline()
			select {
			case err := <-r.done:
				r.done <- err
			case <-time.After(3 * time.Second):
				t.Fatal("the drain did not end after the held message was declined")
			}
			if took := time.Since(began); took > time.Second {
				t.Errorf("drain ended %s after the decline, want at once", took)
			}
			r.incoming()[0].Release()
			if n := len(b.received(packets.PUBACK)) + len(b.received(packets.PUBREC)); n != 0 {
				t.Errorf("%d acknowledgements for a declined message, want none", n)
			}
		})
	}
}

// Declined outside a drain, a message is treated like one the loop could
// not hold: once nothing else is held, the loop connects again so that
// the broker sends it again.
func TestIncoming_DeclineReconnects(t *testing.T) {
	b, r := startSubscriber(t, 1, func(int) bool { return true }, nil)

	b.sendTo(0, &packets.Publish{Topic: "in/x", QoS: 1, PacketID: 1, Payload: []byte("x"), Properties: &packets.Properties{}})
	b.sendTo(0, &packets.Publish{Topic: "in/x", QoS: 1, PacketID: 2, Payload: []byte("y"), Properties: &packets.Properties{}})
	waitFor(t, 3*time.Second, "two messages", func() bool { return len(r.incoming()) == 2 })

	r.incoming()[0].Decline()
	time.Sleep(200 * time.Millisecond)
	if n := b.connections(); n != 1 {
		t.Fatalf("%d connections while a message is still held, want 1", n)
	}
	r.incoming()[1].Release()
	waitFor(t, 3*time.Second, "a second connection", func() bool { return b.connections() == 2 })
	if n := len(b.received(packets.PUBACK)); n != 1 {
		t.Errorf("%d PUBACK packets, want 1 for the released message only", n)
	}
}

// A broker that keeps to the Receive Maximum is never refused, however
// large its messages.
func TestIncoming_LargeWithinReceiveMaximum(t *testing.T) {
	b, r := startSubscriber(t, 1, func(int) bool { return true }, func(o *Options) {
		o.MaxIncomingBytes = 1000
	})

	for id := uint16(1); id <= 5; id++ {
		b.sendTo(0, &packets.Publish{Topic: "in/x", QoS: 1, PacketID: id, Payload: make([]byte, 400), Properties: &packets.Properties{}})
	}
	waitFor(t, 3*time.Second, "all five messages", func() bool { return len(r.incoming()) == 5 })
}

// After a reconnect the new connection gets its Receive Maximum even
// while copies from the old one still wait for the caller. When the last
// release that empties the loop comes from the old connection, the loop
// still reconnects for what it dropped.
func TestIncoming_HeldAcrossReconnect(t *testing.T) {
	b, r := startSubscriber(t, 1, func(int) bool { return true }, func(o *Options) {
		o.MinDelay, o.MaxDelay = 100*time.Millisecond, 100*time.Millisecond
		o.ReceiveMaximum = 1
		o.MaxIncoming = 1
	})
	publish := func(conn int, id uint16) {
		b.sendTo(conn, &packets.Publish{Topic: "in/x", QoS: 1, PacketID: id, Payload: []byte("x"), Properties: &packets.Properties{}})
	}

	publish(0, 1)
	waitFor(t, 3*time.Second, "the first message", func() bool { return len(r.incoming()) == 1 })
	b.dropConnections()
	waitFor(t, 3*time.Second, "a second connection", func() bool { return r.countEvents(EventConnected) == 2 })
	publish(1, 1) // the broker resends the held message
	publish(1, 2) // beyond the Receive Maximum: refused
	waitFor(t, 3*time.Second, "the resent copy taken", func() bool { return len(r.incoming()) == 2 })
	time.Sleep(200 * time.Millisecond)
	if n := len(r.incoming()); n != 2 {
		t.Fatalf("%d messages taken, want 2: the old copy and the resent one", n)
	}

	r.incoming()[1].Release()
	time.Sleep(200 * time.Millisecond)
	if n := b.connections(); n != 2 {
		t.Fatalf("%d connections while the old copy is held, want 2", n)
	}
	r.incoming()[0].Release() // the skipped old copy empties the loop
	waitFor(t, 3*time.Second, "a third connection for the refused message", func() bool { return b.connections() == 3 })
}

// startSubscriber starts a loop on a resumed session with one
// subscription of qos, whose messages wait for the test to release them,
// and waits for its connection. sessionPresent returns the fake broker's
// Session Present flag for each connection. set, when not nil, changes
// the options.
func startSubscriber(t *testing.T, qos byte, sessionPresent func(conn int) bool, set func(o *Options)) (*fakeBroker, *runner) {
	t.Helper()
	b := newFakeBroker(t, brokerScript{sessionPresent: sessionPresent})
	opts := testOptions(b)
	if set != nil {
		set(&opts)
	}
	opts.Subscriptions = []Subscription{{Filter: "in/#", QoS: qos}}
	opts.SessionSubscriptions = opts.Subscriptions
	r := startReleasing(t, opts, newMemSource(), &testJournal{}, &state.State{Session: true}, false)
	waitFor(t, 3*time.Second, "connect", func() bool { return r.countEvents(EventConnected) == 1 })
	return b, r
}

// A QoS 2 message released after its connection ended gets PUBREC only
// once the broker sends it again on the new connection, as a stored flow
// without a second event. One the broker sent again before the release
// gets PUBREC at the release.
func TestIncoming_QoS2ReleaseWaitsForResend(t *testing.T) {
	b, r := startSubscriber(t, 2, func(int) bool { return true }, func(o *Options) {
		o.MinDelay, o.MaxDelay = 100*time.Millisecond, 100*time.Millisecond
	})
	publish := func(conn int, id uint16, dup bool) {
		b.sendTo(conn, &packets.Publish{Topic: "in/x", QoS: 2, PacketID: id, Duplicate: dup, Payload: []byte{byte(id)}, Properties: &packets.Properties{}})
	}

	publish(0, 1, false)
	publish(0, 2, false)
	waitFor(t, 3*time.Second, "two messages", func() bool { return len(r.incoming()) == 2 })
	b.dropConnections()
	waitFor(t, 3*time.Second, "a resumed session", func() bool { return r.countEvents(EventConnected) == 2 })
	publish(1, 2, true) // resent before its release

	r.incoming()[0].Release()
	r.incoming()[1].Release()
	waitFor(t, 3*time.Second, "PUBREC for the resent message", func() bool { return len(b.received(packets.PUBREC)) >= 1 })
	time.Sleep(300 * time.Millisecond)
	var ids []uint16
	for _, w := range b.received(packets.PUBREC) {
		ids = append(ids, w.id)
	}
	if len(ids) != 1 || ids[0] != 2 {
		t.Fatalf("PUBREC for packet identifiers %v, want only 2 before the broker sends 1 again", ids)
	}

	publish(1, 1, true)
	waitFor(t, 3*time.Second, "PUBREC for the message sent again", func() bool { return len(b.received(packets.PUBREC)) == 2 })
	if n := len(r.incoming()); n != 2 {
		t.Errorf("%d incoming events, want 2: a resent stored flow is no new message", n)
	}
}

// gatedJournal holds each commit, once gated, until the test hands it a
// token or closes tokens.
type gatedJournal struct {
	testJournal
	gated   atomic.Bool
	waiting atomic.Int32
	tokens  chan struct{}
}

func (j *gatedJournal) Commit(changes []state.Change) error {
	if j.gated.Load() {
		j.waiting.Add(1)
		<-j.tokens
		j.waiting.Add(-1)
	}
	return j.testJournal.Commit(changes)
}

// The reconnect for dropped messages waits for a PUBCOMP whose commit is
// still running, so the broker does not send that PUBREL again.
func TestIncoming_ReconnectAfterPendingPubcomp(t *testing.T) {
	b := newFakeBroker(t, brokerScript{sessionPresent: func(int) bool { return true }})
	opts := testOptions(b)
	opts.ReceiveMaximum, opts.MaxIncoming = 2, 2
	opts.Subscriptions = []Subscription{{Filter: "in/#", QoS: 2}}
	opts.SessionSubscriptions = opts.Subscriptions
	j := &gatedJournal{tokens: make(chan struct{})}
	r := startReleasing(t, opts, newMemSource(), j, &state.State{Session: true}, false)
	var opened sync.Once
	open := func() {
		opened.Do(func() {
			j.gated.Store(false)
			close(j.tokens)
		})
	}
	t.Cleanup(open) // before the loop stops, which waits for its commits
	waitFor(t, 3*time.Second, "connect", func() bool { return r.countEvents(EventConnected) == 1 })

	for id := uint16(1); id <= 3; id++ {
		b.sendTo(0, &packets.Publish{Topic: "in/x", QoS: 2, PacketID: id, Payload: []byte{byte(id)}, Properties: &packets.Properties{}})
	}
	waitFor(t, 3*time.Second, "two messages taken", func() bool { return len(r.incoming()) == 2 })
	r.incoming()[0].Release()
	waitFor(t, 3*time.Second, "PUBREC 1", func() bool { return len(b.received(packets.PUBREC)) == 1 })

	// The last release commits while PUBREL 1 arrives, so its release
	// goes into the next commit and its PUBCOMP waits for that.
	j.gated.Store(true)
	r.incoming()[1].Release()
	waitFor(t, 3*time.Second, "the commit of the last release", func() bool { return j.waiting.Load() == 1 })
	b.sendTo(0, &packets.Pubrel{PacketID: 1, Properties: &packets.Properties{}})
	time.Sleep(200 * time.Millisecond)
	j.tokens <- struct{}{}
	waitFor(t, 3*time.Second, "PUBREC 2", func() bool { return len(b.received(packets.PUBREC)) == 2 })
	time.Sleep(300 * time.Millisecond)
	if n := b.connections(); n != 1 {
		t.Fatalf("%d connections while PUBCOMP 1 waits for its commit, want 1", n)
	}

	open()
	waitFor(t, 10*time.Second, "a second connection", func() bool { return b.connections() == 2 })
	comps := b.received(packets.PUBCOMP)
	if len(comps) != 1 || comps[0].conn != 0 || comps[0].id != 1 {
		t.Errorf("PUBCOMP packets %+v, want one for packet identifier 1 on the first connection", comps)
	}
}

// After the loop dropped a message, it drops the later ones of the same
// connection too, even when it could hold them again, so that none is
// stored before the dropped one comes back after the reconnect.
func TestIncoming_DropKeepsOrder(t *testing.T) {
	b, r := startSubscriber(t, 1, func(int) bool { return true }, func(o *Options) {
		o.ReceiveMaximum = 4
		o.MaxIncoming = 4
	})

	for id := uint16(1); id <= 6; id++ {
		b.sendTo(0, &packets.Publish{Topic: "in/x", QoS: 1, PacketID: id, Payload: []byte(fmt.Sprint(id)), Properties: &packets.Properties{}})
	}
	waitFor(t, 3*time.Second, "four messages and two deferred", func() bool {
		return len(r.incoming()) == 4 && r.l.Stats().IncomingDeferred == 2
	})
	r.incoming()[0].Release()
	waitFor(t, 3*time.Second, "one PUBACK", func() bool { return len(b.received(packets.PUBACK)) == 1 })

	b.sendTo(0, &packets.Publish{Topic: "in/x", QoS: 1, PacketID: 7, Payload: []byte("7"), Properties: &packets.Properties{}})
	time.Sleep(200 * time.Millisecond)
	if n := len(r.incoming()); n != 4 {
		t.Fatalf("%d messages given to the caller, want 4: message 7 was taken before the dropped 5 and 6", n)
	}
}

// After a drop, messages on other topics are still taken: order holds per
// topic, and a message that stays held (a full inbox) must not stop every
// other subscription until the connection ends.
func TestIncoming_DropKeepsOtherTopics(t *testing.T) {
	b, r := startSubscriber(t, 1, func(int) bool { return true }, func(o *Options) {
		o.ReceiveMaximum = 4
		o.MaxIncoming = 4
	})
	publish := func(id uint16, topic string) {
		b.sendTo(0, &packets.Publish{Topic: topic, QoS: 1, PacketID: id, Payload: []byte(fmt.Sprint(id)), Properties: &packets.Properties{}})
	}

	publish(1, "in/stuck")
	for id := uint16(2); id <= 6; id++ {
		publish(id, "in/x")
	}
	waitFor(t, 3*time.Second, "four messages and two deferred", func() bool {
		return len(r.incoming()) == 4 && r.l.Stats().IncomingDeferred == 2
	})
	for _, in := range r.incoming()[1:] {
		in.Release()
	}
	waitFor(t, 3*time.Second, "three PUBACKs", func() bool { return len(b.received(packets.PUBACK)) == 3 })

	publish(7, "in/x")
	publish(8, "in/y")
	waitFor(t, 3*time.Second, "the message on another topic", func() bool { return len(r.incoming()) == 5 })
	if n := r.l.Stats().IncomingDeferred; n != 3 {
		t.Errorf("%d messages deferred, want 3: 5 and 6 for room, 7 for the order on in/x", n)
	}
	time.Sleep(200 * time.Millisecond)
	got := r.incoming()
	if n := len(got); n != 5 {
		t.Fatalf("%d messages taken, want 5", n)
	}
	if topic := got[4].Message.Topic; topic != "in/y" {
		t.Errorf("fifth message taken is on %s, want in/y: in/x had a message dropped", topic)
	}
}

// TestProtocolError_DisconnectReasonCode has the broker send packets that
// break MQTT 5. The loop ends the connection with DISCONNECT of the
// reason code for the error, gives no such PUBLISH to the caller, and
// connects again.
func TestProtocolError_DisconnectReasonCode(t *testing.T) {
	alias := uint16(1)
	cases := []struct {
		name string
		send func(b *fakeBroker)
		code byte
	}{
		{"topic alias over maximum 0", func(b *fakeBroker) {
			b.sendTo(0, &packets.Publish{Topic: "in/x", QoS: 1, PacketID: 1, Payload: []byte("x"),
				Properties: &packets.Properties{TopicAlias: &alias}})
		}, 0x94},
		{"empty topic without alias", func(b *fakeBroker) {
			b.sendTo(0, &packets.Publish{Topic: "", QoS: 1, PacketID: 1, Payload: []byte("x"), Properties: &packets.Properties{}})
		}, 0x82},
		{"auth without authentication method", func(b *fakeBroker) {
			b.sendRawTo(0, []byte{packets.AUTH << 4, 0})
		}, 0x82},
		{"second connack", func(b *fakeBroker) {
			b.sendRawTo(0, []byte{packets.CONNACK << 4, 3, 0, 0, 0})
		}, 0x82},
		{"remaining length of five bytes", func(b *fakeBroker) {
			b.sendRawTo(0, []byte{packets.PUBLISH << 4, 0xff, 0xff, 0xff, 0xff, 0x01})
		}, 0x81},
		{"puback without packet identifier", func(b *fakeBroker) {
			b.sendRawTo(0, []byte{packets.PUBACK << 4, 1, 0})
		}, 0x81},
		{"publish over maximum packet size", func(b *fakeBroker) {
			// Remaining length 16 MiB: with its header over the limit in CONNECT.
			b.sendRawTo(0, []byte{packets.PUBLISH << 4, 0x80, 0x80, 0x80, 0x08})
		}, 0x95},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, r := startSubscriber(t, 1, func(int) bool { return true }, nil)
			tc.send(b)
			waitFor(t, 3*time.Second, "disconnect", func() bool { return len(b.received(packets.DISCONNECT)) == 1 })
			if code := b.received(packets.DISCONNECT)[0].code; code != tc.code {
				t.Errorf("DISCONNECT reason code 0x%02X, want 0x%02X", code, tc.code)
			}
			if n := len(r.incoming()); n != 0 {
				t.Errorf("%d messages given to the caller, want 0", n)
			}
			waitFor(t, 3*time.Second, "reconnect", func() bool { return r.countEvents(EventConnected) == 2 })
		})
	}
}
