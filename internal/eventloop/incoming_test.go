package eventloop

import (
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
