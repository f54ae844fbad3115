package eventloop

import (
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"

	"github.com/mqspool/mqspool/internal/message"
)

// A broker must reject a CONNECT whose Will it cannot carry. The loop then
// lowers the Will, as it lowers the birth message to CONNACK's limits, so
// it connects instead of failing the same way for ever.
func TestConnect_WillFittedAfterRejection(t *testing.T) {
	cases := []struct {
		name       string
		code       byte
		policy     ReconnectPolicy
		wantRetain bool
		willQoS    byte
		maxQoS     byte // the highest Will QoS the broker takes
		wantQoS    byte
		connects   int
	}{
		{"retain not supported", 0x9A, ReconnectAlways, false, 1, 1, 1, 2},
		{"qos not supported", 0x9B, ReconnectAlways, true, 1, 0, 0, 2},
		{"qos 2 lowered to 1", 0x9B, ReconnectAlways, true, 2, 1, 1, 2},
		{"qos 2 lowered to 0", 0x9B, ReconnectAlways, true, 2, 0, 0, 3},
		// The fitted CONNECT is a new attempt, not a reconnect.
		{"first connect without reconnect", 0x9A, ReconnectNever, false, 1, 1, 1, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := newFakeBroker(t, brokerScript{connackFor: func(p *packets.Connect) byte {
				if (tc.code == 0x9A && p.WillRetain) || (tc.code == 0x9B && p.WillQOS > tc.maxQoS) {
					return tc.code
				}
				return 0
			}})
			opts := testOptions(b)
			opts.Reconnect = tc.policy
			opts.Will = &message.Message{Topic: "gw/status", Payload: []byte("offline"), QoS: tc.willQoS, Retain: true}
			r := start(t, opts, newMemSource(), &testJournal{}, nil)

			waitFor(t, 5*time.Second, "connack", func() bool { return r.countEvents(EventConnected) == 1 })
			connects := b.received(packets.CONNECT)
			last := connects[len(connects)-1]
			if !last.willFlag || last.willRetain != tc.wantRetain || last.willQoS != tc.wantQoS {
				t.Errorf("accepted CONNECT has will %t retain %t qos %d, want a will with retain %t qos %d",
					last.willFlag, last.willRetain, last.willQoS, tc.wantRetain, tc.wantQoS)
			}
			if len(connects) != tc.connects {
				t.Errorf("%d CONNECT packets, want %d: the rejected ones and the fitted one", len(connects), tc.connects)
			}
		})
	}
}

// With several broker URLs, a Will lowered for one broker that rejected
// it keeps its retain flag for the others, which may support it.
func TestConnect_WillFittedPerBroker(t *testing.T) {
	limited := newFakeBroker(t, brokerScript{connackFor: func(p *packets.Connect) byte {
		if p.WillRetain {
			return 0x9A
		}
		return 0
	}, closeAfterConnack: true})
	// The loop stays with a broker that accepted it, so this one turns
	// away the reconnect, and the loop goes back to the first.
	var fullConnects atomic.Int32
	full := newFakeBroker(t, brokerScript{connackFor: func(*packets.Connect) byte {
		if fullConnects.Add(1) > 1 {
			return 0x88
		}
		return 0
	}, closeAfterConnack: true})
	opts := testOptions(limited)
	opts.URLs = []string{limited.url(), full.url()}
	opts.Will = &message.Message{Topic: "gw/status", Payload: []byte("offline"), QoS: 1, Retain: true}
	start(t, opts, newMemSource(), &testJournal{}, nil)

	waitFor(t, 5*time.Second, "two CONNECTs to each broker", func() bool {
		return len(limited.received(packets.CONNECT)) >= 2 && len(full.received(packets.CONNECT)) >= 1
	})
	for i, p := range full.received(packets.CONNECT) {
		if !p.willFlag || !p.willRetain {
			t.Errorf("CONNECT %d to the broker with retained messages has will %t retain %t, want a retained will",
				i+1, p.willFlag, p.willRetain)
		}
	}
	if p := limited.received(packets.CONNECT)[1]; !p.willFlag || p.willRetain {
		t.Errorf("second CONNECT to the broker without retained messages has will %t retain %t, "+
			"want a will without retain", p.willFlag, p.willRetain)
	}
}

// A broker may shorten the session expiry in its CONNACK. The loop logs
// that once, since a longer outage then loses the session, and not again
// on each reconnect with the same value. The connected line gives the
// expiry in force, which is the broker's whenever its CONNACK has one.
func TestConnect_ShortenedSessionExpiryLogged(t *testing.T) {
	cases := []struct {
		name       string
		configured time.Duration
		expiry     *uint32
		wantWarn   int
		inForce    string
	}{
		{"shortened", time.Hour, new(uint32(60)), 1, "1m0s"},
		{"zero", time.Hour, new(uint32(0)), 1, "0s"},
		{"longer than configured", time.Hour, new(uint32(7 * 24 * 3600)), 0, "168h0m0s"},
		{"absent", time.Hour, nil, 0, "1h0m0s"},
		// CONNECT carries whole seconds, so the broker echoes 90.
		{"configured with a fraction", 90*time.Second + 500*time.Millisecond, new(uint32(90)), 0, "1m30s"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := newFakeBroker(t, brokerScript{sessionExpiry: tc.expiry, closeAfterConnack: true})
			opts := testOptions(b)
			opts.SessionExpiry = tc.configured
			opts.MinDelay, opts.MaxDelay = 10*time.Millisecond, 20*time.Millisecond
			logs := &lockedBuffer{}
			opts.Logger = slog.New(slog.NewTextHandler(logs, nil))
			r := start(t, opts, newMemSource(), &testJournal{}, nil)

			waitFor(t, 5*time.Second, "three connections", func() bool { return r.countEvents(EventConnected) >= 3 })
			out := logs.String()
			if n := strings.Count(out, "broker shortened the session expiry"); n != tc.wantWarn {
				t.Errorf("%d warnings about the session expiry, want %d:\n%s", n, tc.wantWarn, out)
			}
			want := "session_expiry=" + tc.inForce + " "
			connectedLines := 0
			for line := range strings.Lines(out) {
				if !strings.Contains(line, "msg=connected") {
					continue
				}
				connectedLines++
				if !strings.Contains(line, want) {
					t.Errorf("connected line without %q: %s", want, line)
				}
			}
			if connectedLines == 0 {
				t.Errorf("no connected line in the log:\n%s", out)
			}
		})
	}
}

// MQTT 5 makes Receive Maximum 0 and Maximum Packet Size 0 in a CONNACK
// a protocol error. The loop must not read them as absent: it ends the
// connection with DISCONNECT 0x82 before it publishes anything, logs an
// error naming the broker and the value, and connects again with backoff.
func TestConnect_ConnackPropertyZeroRejected(t *testing.T) {
	cases := []struct {
		name     string
		set      func(props *packets.Properties)
		property string
	}{
		{"receive maximum", func(props *packets.Properties) { props.ReceiveMaximum = new(uint16(0)) }, "Receive Maximum 0"},
		{"maximum packet size", func(props *packets.Properties) { props.MaximumPacketSize = new(uint32(0)) }, "Maximum Packet Size 0"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := newFakeBroker(t, brokerScript{editConnack: func(conn int, props *packets.Properties) {
				if conn == 0 {
					tc.set(props)
				}
			}})
			opts := testOptions(b)
			opts.MinDelay, opts.MaxDelay = 100*time.Millisecond, 200*time.Millisecond
			logs := &lockedBuffer{}
			opts.Logger = slog.New(slog.NewTextHandler(logs, nil))
			src := newMemSource()
			src.add(msgs("t", 1, 1)...)
			r := start(t, opts, src, &testJournal{}, nil)

			waitFor(t, 5*time.Second, "delivery after the reconnect", func() bool { return len(r.outcomes()) == 1 })
			var disconnects []wirePacket
			for _, w := range b.received(packets.DISCONNECT) {
				if w.conn == 0 {
					disconnects = append(disconnects, w)
				}
			}
			if len(disconnects) != 1 || disconnects[0].code != reasonProtocolError {
				t.Errorf("DISCONNECT packets on the first connection = %+v, want one with 0x82", disconnects)
			}
			for _, w := range b.received(packets.PUBLISH) {
				if w.conn == 0 {
					t.Errorf("PUBLISH %q sent on the connection whose CONNACK has %s", w.payload, tc.property)
				}
			}
			if n := r.countEvents(EventConnected); n != 1 {
				t.Errorf("%d connected events, want 1 for the second connection only", n)
			}
			accepts := b.acceptTimes()
			if len(accepts) < 2 || accepts[1].Sub(accepts[0]) < opts.MinDelay {
				t.Errorf("connections accepted at %v, want the second at least %s after the first", accepts, opts.MinDelay)
			}

			var failed string
			for line := range strings.Lines(logs.String()) {
				if strings.Contains(line, "connect failed") {
					failed = line
					break
				}
			}
			for _, want := range []string{"level=ERROR", "url=" + b.url(), tc.property, "protocol error", "0x82"} {
				if !strings.Contains(failed, want) {
					t.Errorf("connect failed line without %q: %q", want, failed)
				}
			}
			if st := r.l.Stats(); !st.Connected {
				t.Errorf("stats connected = false after the second CONNACK, want true")
			}
		})
	}
}
