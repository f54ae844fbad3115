package eventloop

import (
	"errors"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"

	"github.com/mqspool/mqspool/internal/message"
)

func TestKeepAlive_MissingPingrespEndsConnection(t *testing.T) {
	b := newFakeBroker(t, brokerScript{noPingresp: true})
	opts := testOptions(b)
	opts.KeepAlive = time.Second
	r := start(t, opts, newMemSource(), &testJournal{}, nil)

	waitFor(t, 4*time.Second, "second connection", func() bool { return b.connections() >= 2 })
	accepts := b.acceptTimes()
	if gap := accepts[1].Sub(accepts[0]); gap > 1500*time.Millisecond+opts.MaxDelay+200*time.Millisecond {
		t.Errorf("dead connection found after %s, want within 1.5 keep alive periods plus backoff", gap)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ev := range r.events {
		if ev.Kind == EventDisconnected && !errors.Is(ev.Err, errPingTimeout) {
			t.Errorf("disconnect cause %v, want %v", ev.Err, errPingTimeout)
		}
	}
}

func TestKeepAlive_PureQoS0SenderPings(t *testing.T) {
	b := newFakeBroker(t, brokerScript{})
	src := newMemSource()
	opts := testOptions(b)
	opts.KeepAlive = time.Second
	start(t, opts, src, &testJournal{}, nil)

	for range 25 {
		src.add(message.Message{Topic: "t", QoS: 0})
		time.Sleep(100 * time.Millisecond)
	}
	if n := len(b.received(packets.PINGREQ)); n < 2 {
		t.Errorf("%d PINGREQ in 2.5 s of QoS 0 sending with keep alive 1 s, want at least 2", n)
	}
	if n := b.connections(); n != 1 {
		t.Errorf("%d connections, want 1", n)
	}
}

func TestKeepAlive_TwoWayTrafficNeedsNoPing(t *testing.T) {
	b := newFakeBroker(t, brokerScript{})
	src := newMemSource()
	opts := testOptions(b)
	opts.KeepAlive = time.Second
	start(t, opts, src, &testJournal{}, nil)

	for range 25 {
		src.add(message.Message{Topic: "t", QoS: 1})
		time.Sleep(100 * time.Millisecond)
	}
	if n := len(b.received(packets.PINGREQ)); n > 0 {
		t.Errorf("%d PINGREQ while acknowledged publishes flowed both ways, want 0", n)
	}
}

func TestKeepAlive_ServerKeepAliveReplacesOption(t *testing.T) {
	one := uint16(1)
	b := newFakeBroker(t, brokerScript{serverKeepAlive: &one})
	opts := testOptions(b)
	opts.KeepAlive = 60 * time.Second
	r := start(t, opts, newMemSource(), &testJournal{}, nil)

	waitFor(t, 3*time.Second, "pingreq", func() bool { return len(b.received(packets.PINGREQ)) >= 2 })
	r.mu.Lock()
	defer r.mu.Unlock()
	if got := r.events[0].Connected.KeepAlive; got != time.Second {
		t.Errorf("connected keep alive %s, want the server keep alive 1s", got)
	}
}

func TestKeepAlive_OffSendsZero(t *testing.T) {
	b := newFakeBroker(t, brokerScript{})
	opts := testOptions(b)
	opts.KeepAliveOff = true
	r := start(t, opts, newMemSource(), &testJournal{}, nil)
	waitFor(t, 3*time.Second, "connack", func() bool { return r.countEvents(EventConnected) == 1 })
	if ka := b.received(packets.CONNECT)[0].keepAlive; ka != 0 {
		t.Errorf("CONNECT keep alive %d with keep alive off, want 0", ka)
	}
}

func TestKeepAlive_WindowDecisions(t *testing.T) {
	k := newKeepAlive(realClock{})
	k.start(time.Hour)
	defer k.stop()

	k.sent()
	if ping, err := k.windowEnded(); !ping || err != nil {
		t.Fatalf("window with traffic out only: ping %t err %v, want a ping", ping, err)
	}
	k.pingresp()
	k.sent()
	k.received()
	if ping, err := k.windowEnded(); ping || err != nil {
		t.Fatalf("window with traffic both ways: ping %t err %v, want no ping", ping, err)
	}
	k.received()
	if ping, _ := k.windowEnded(); !ping {
		t.Fatalf("window with traffic in only: want a ping")
	}
	if _, err := k.windowEnded(); !errors.Is(err, errPingUnanswered) {
		t.Fatalf("next window with the ping unanswered: err %v, want %v", err, errPingUnanswered)
	}
}

func TestAckTimeout_ReconnectsInsteadOfResending(t *testing.T) {
	b := newFakeBroker(t, brokerScript{
		sessionPresent: func(conn int) bool { return conn > 0 },
		dropAck:        func(conn int, p *packets.Publish) bool { return conn == 0 },
	})
	src := newMemSource()
	src.add(msgs("t", 1, 1)...)
	opts := testOptions(b)
	opts.AckTimeout = 400 * time.Millisecond
	r := start(t, opts, src, &testJournal{}, nil)

	waitFor(t, 3*time.Second, "outcome", func() bool { return len(r.outcomes()) == 1 })
	pubs := b.received(packets.PUBLISH)
	if len(pubs) != 2 {
		t.Fatalf("broker got %d publishes, want the first send and one resend", len(pubs))
	}
	if pubs[0].conn != 0 || pubs[1].conn != 1 {
		t.Errorf("publishes on connections %d and %d, want 0 then 1: never resend on a live connection", pubs[0].conn, pubs[1].conn)
	}
	if !pubs[1].dup || pubs[1].id != pubs[0].id {
		t.Errorf("resend dup %t id %d, want dup true and id %d", pubs[1].dup, pubs[1].id, pubs[0].id)
	}
	if gap := pubs[1].at.Sub(pubs[0].at); gap < opts.AckTimeout {
		t.Errorf("resent after %s, before the ack timeout %s", gap, opts.AckTimeout)
	}
}
