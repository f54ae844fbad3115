package eventloop

import (
	"fmt"
	"log/slog"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"

	"github.com/mqspool/mqspool/internal/message"
)

// A broker that ends the connection on one message, with DISCONNECT or by
// closing the socket, must not stop the queue: the message goes to
// failed/ after it ended connections alone, and every other message is
// delivered. The first end may come as a reset, because the broker closed
// with later PUBLISH packets unread.
func TestIsolation_MessageThatEndsConnectionsFails(t *testing.T) {
	for _, tc := range []struct {
		name        string
		code        byte
		qos         byte
		sessionLost bool
		resetFirst  bool // the first end is a reset, as when later packets were unread
	}{
		{"disconnect malformed qos 1", 0x81, 1, false, false},
		{"socket closed qos 1", 0, 1, false, false},
		{"socket reset then closed qos 1", 0, 1, false, true},
		{"not authorized qos 2", 0x87, 2, false, false},
		{"not authorized qos 2 session lost", 0x87, 2, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newFakeBroker(t, brokerScript{
				endOn: func(p *packets.Publish) (byte, bool) {
					return tc.code, string(p.Payload) == "poison"
				},
				sessionPresent: func(conn int) bool { return conn > 0 && !tc.sessionLost },
				resetOnEnd:     func(conn int) bool { return conn == 0 && tc.resetFirst },
			})
			src := newMemSource()
			var batch []message.Message
			for i := range 20 {
				payload := fmt.Sprintf("m%02d", i)
				if i == 7 {
					payload = "poison"
				}
				batch = append(batch, message.Message{Topic: "t", QoS: tc.qos, Payload: []byte(payload)})
			}
			src.add(batch...)
			opts := testOptions(b)
			opts.MinDelay, opts.MaxDelay = 10*time.Millisecond, 50*time.Millisecond
			r := start(t, opts, src, &testJournal{}, nil)

			waitFor(t, 10*time.Second, "twenty outcomes", func() bool { return len(r.outcomes()) == 20 })

			for seq, o := range r.outcomes() {
				switch {
				case seq == 8 && (o.Kind != Failed || !strings.Contains(o.Reason, "ended the connection 3 times")):
					t.Errorf("poison message: outcome %v %q, want Failed after three ends", o.Kind, o.Reason)
				case seq != 8 && o.Kind != Delivered:
					t.Errorf("message %d: outcome %v %q, want Delivered", seq, o.Kind, o.Reason)
				}
			}
			// The first end may be a reset in every case: the client may
			// write while the broker closes. A reset discards the
			// acknowledgements the client had not read yet, and then a
			// message before the poison ends isolation once more.
			if n := b.connections(); n < 5 || n > 6 {
				t.Errorf("%d connections, want 5 (6 after a reset): the first, three with the message alone, and one after", n)
			}
		})
	}
}

// Ends that are about the broker itself, or a connection that ends with
// nothing outstanding, never count against a message.
func TestIsolation_ServerSideEndsDoNotCount(t *testing.T) {
	if brokerClosed(&disconnectError{code: 0x8B}) {
		t.Error("DISCONNECT 0x8B server shutting down counted against a message")
	}
	if brokerClosed(errPingTimeout) {
		t.Error("a keep alive timeout counted against a message")
	}
	if brokerClosed(fmt.Errorf("read from broker: %w", syscall.ECONNRESET)) {
		t.Error("a connection reset counted against a message")
	}
	if !brokerClosed(&disconnectError{code: 0x81}) {
		t.Error("DISCONNECT 0x81 malformed packet not counted")
	}
	if mayBeRefusal(errPingTimeout) || mayBeRefusal(&disconnectError{code: 0x8B}) {
		t.Error("a keep alive timeout or 0x8B started isolation")
	}
	if !mayBeRefusal(fmt.Errorf("write to broker: %w", syscall.EPIPE)) {
		t.Error("a broken pipe after the broker closed did not start isolation")
	}
}

// A message held for a full window before a reconnect must still be sent
// when the replay of a lost session fills a smaller window on the next
// connection.
func TestHold_KeptWhenReplayFillsSmallerWindow(t *testing.T) {
	b := newFakeBroker(t, brokerScript{receiveMaximum: 10, dropAck: func(conn int, _ *packets.Publish) bool { return conn == 0 }})
	src := newMemSource()
	src.add(msgs("t", 1, 20)...)
	r := start(t, testOptions(b), src, &testJournal{}, nil)

	waitFor(t, 5*time.Second, "ten publishes", func() bool { return len(b.received(packets.PUBLISH)) == 10 })
	b.set(func(s *brokerScript) { s.receiveMaximum = 4 })
	b.dropConnections()

	waitFor(t, 10*time.Second, "twenty outcomes", func() bool { return len(r.outcomes()) == 20 })
	for seq, o := range r.outcomes() {
		if o.Kind != Delivered {
			t.Errorf("message %d: outcome %v, want Delivered", seq, o.Kind)
		}
	}
}

// Ends that other packets of the connection may have caused never count
// against a message: a SUBSCRIBE the broker refuses by disconnecting, a
// birth message it refuses, a QoS 0 message sent beside it.
func TestIsolation_OtherPacketsTakeNoBlame(t *testing.T) {
	cases := []struct {
		name   string
		script brokerScript
		setup  func(o *Options, src *memSource)
	}{
		{"subscribe refused", brokerScript{endOnSubscribe: 0xA2, dropAck: func(conn int, _ *packets.Publish) bool { return conn == 0 }},
			func(o *Options, _ *memSource) { o.Subscriptions = []Subscription{{Filter: "cmd/#", QoS: 1}} }},
		{"birth refused", brokerScript{endOn: func(p *packets.Publish) (byte, bool) { return 0x87, p.Topic == "status" }},
			func(o *Options, _ *memSource) {
				o.Birth = &message.Message{Topic: "status", Payload: []byte("online"), QoS: 1}
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := newFakeBroker(t, tc.script)
			src := newMemSource()
			src.add(msgs("t", 1, 3)...)
			opts := testOptions(b)
			opts.MinDelay, opts.MaxDelay = 10*time.Millisecond, 20*time.Millisecond
			tc.setup(&opts, src)
			r := start(t, opts, src, &testJournal{}, nil)

			waitFor(t, 10*time.Second, "five connections", func() bool { return b.connections() >= 5 })
			time.Sleep(200 * time.Millisecond) // the last connection gets to its messages
			for seq, o := range r.outcomes() {
				if o.Kind == Failed {
					t.Errorf("message %d failed: %q", seq, o.Reason)
				}
			}
		})
	}
}

func TestDowngrade_CountedOnceWhenHeld(t *testing.T) {
	one := byte(1)
	b := newFakeBroker(t, brokerScript{maximumQoS: &one, receiveMaximum: 1})
	src := newMemSource()
	src.add(msgs("t", 2, 20)...)
	r := start(t, testOptions(b), src, &testJournal{}, nil)

	waitFor(t, 5*time.Second, "twenty outcomes", func() bool { return len(r.outcomes()) == 20 })
	if n := r.l.Stats().Downgraded; n != 20 {
		t.Errorf("%d downgrades counted for 20 messages, want 20", n)
	}
}

// While isolating, a QoS 0 message waits until the lone QoS 1 message is
// acknowledged, so a broker that refuses the QoS 0 message by
// disconnecting never makes the QoS 1 message look guilty.
func TestIsolation_QoS0WaitsForLoneMessage(t *testing.T) {
	b := newFakeBroker(t, brokerScript{
		endOn:   func(p *packets.Publish) (byte, bool) { return 0x87, p.Topic == "forbidden" },
		dropAck: func(conn int, p *packets.Publish) bool { return string(p.Payload) == "A" && conn < 2 },
	})
	src := newMemSource()
	src.add(message.Message{Topic: "t", QoS: 1, Payload: []byte("A")})
	opts := testOptions(b)
	opts.MinDelay, opts.MaxDelay = 10*time.Millisecond, 20*time.Millisecond
	r := start(t, opts, src, &testJournal{}, nil)
	sentOn := func(conn int, payload string) bool {
		for _, p := range b.received(packets.PUBLISH) {
			if p.conn == conn && p.payload == payload {
				return true
			}
		}
		return false
	}

	// Not isolating yet: the QoS 0 message goes out beside A and ends
	// the connection.
	waitFor(t, 5*time.Second, "A on the first connection", func() bool { return sentOn(0, "A") })
	src.add(message.Message{Topic: "forbidden", QoS: 0, Payload: []byte("bad")})
	waitFor(t, 5*time.Second, "A on the second connection", func() bool { return sentOn(1, "A") })

	src.add(message.Message{Topic: "forbidden", QoS: 0, Payload: []byte("bad")})
	time.Sleep(300 * time.Millisecond)
	if sentOn(1, "bad") {
		t.Fatal("a QoS 0 message went out beside the lone message while isolating")
	}
	b.shutDown()

	waitFor(t, 5*time.Second, "three outcomes", func() bool { return len(r.outcomes()) == 3 })
	if o := r.outcomes()[1]; o.Kind != Delivered {
		t.Errorf("message A: outcome %v %q, want Delivered", o.Kind, o.Reason)
	}
}

// A PUBREL carries no message, so while isolating the loop resends the
// PUBRELs of a resumed session together instead of one per round trip.
// The lone PUBLISH still waits until nothing else is outstanding.
func TestIsolation_PubrelsResentTogether(t *testing.T) {
	b := newFakeBroker(t, brokerScript{
		endOn: func(p *packets.Publish) (byte, bool) {
			return 0, string(p.Payload) == "last"
		},
		resetOnEnd:     func(conn int) bool { return conn == 0 },
		noPubcomp:      func(conn int) bool { return conn < 2 },
		sessionPresent: func(conn int) bool { return conn > 0 },
	})
	src := newMemSource()
	src.add(msgs("t", 2, 9)...)
	opts := testOptions(b)
	opts.MinDelay, opts.MaxDelay = 10*time.Millisecond, 20*time.Millisecond
	opts.AckTimeout = time.Minute
	start(t, opts, src, &testJournal{}, nil)
	pubrelsOn := func(conn int) int {
		n := 0
		for _, p := range b.received(packets.PUBREL) {
			if p.conn == conn {
				n++
			}
		}
		return n
	}

	// Nine flows wait for PUBCOMP when the broker resets the connection
	// on the tenth message, which starts isolation.
	waitFor(t, 5*time.Second, "nine PUBRELs", func() bool { return pubrelsOn(0) == 9 })
	src.add(message.Message{Topic: "t", QoS: 2, Payload: []byte("last")})
	waitFor(t, 5*time.Second, "nine PUBRELs resent", func() bool { return pubrelsOn(1) == 9 })

	time.Sleep(100 * time.Millisecond)
	for _, p := range b.received(packets.PUBLISH) {
		if p.conn == 1 {
			t.Errorf("PUBLISH %q resent while PUBRELs were outstanding", p.payload)
		}
	}
}

// Each connection that isolation ends on one message lasts less than the
// stable time, but the broker is up. The reconnect after a strike keeps
// the shortest delay, so a few bad messages do not hold the queue back
// for the maximum delay each.
func TestIsolation_StrikesKeepShortestDelay(t *testing.T) {
	b := newFakeBroker(t, brokerScript{
		endOn: func(p *packets.Publish) (byte, bool) { return 0x81, string(p.Payload) == "poison" },
	})
	src := newMemSource()
	src.add(message.Message{Topic: "t", QoS: 1, Payload: []byte("poison")},
		message.Message{Topic: "t", QoS: 1, Payload: []byte("good")})
	opts := testOptions(b)
	opts.MinDelay, opts.MaxDelay = 50*time.Millisecond, 10*time.Second
	logs := &lockedBuffer{}
	opts.Logger = slog.New(slog.NewTextHandler(logs, nil))
	r := start(t, opts, src, &testJournal{}, nil)

	waitFor(t, 10*time.Second, "both outcomes", func() bool { return len(r.outcomes()) == 2 })
	// One end starts isolation, and three strikes fail the message.
	if n := strings.Count(logs.String(), "backoff_ms=50\n"); n != 4 {
		t.Errorf("%d reconnects after the shortest delay of 50ms, want 4:\n%s", n, logs.String())
	}
}
