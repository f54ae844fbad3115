package eventloop

import (
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"

	"github.com/mqspool/mqspool/internal/message"
	"github.com/mqspool/mqspool/internal/state"
)

func TestPublish_EachQoS(t *testing.T) {
	b := newFakeBroker(t, brokerScript{})
	src := newMemSource()
	src.add(message.Message{Topic: "a", QoS: 0}, message.Message{Topic: "b", QoS: 1}, message.Message{Topic: "c", QoS: 2})
	j := &testJournal{}
	r := start(t, testOptions(b), src, j, nil)

	waitFor(t, 5*time.Second, "three outcomes", func() bool { return len(r.outcomes()) == 3 })
	waitFor(t, 5*time.Second, "completed change", func() bool { return j.count(state.ChangeCompleted) == 1 })
	for seq, o := range r.outcomes() {
		if o.Kind != Delivered {
			t.Errorf("seq %d: outcome %v, want Delivered", seq, o.Kind)
		}
	}
	want := []state.ChangeKind{
		state.ChangeSessionStarted, state.ChangeDelivered, state.ChangeSent, state.ChangeSent,
		state.ChangeAcked, state.ChangePubrec, state.ChangeCompleted,
	}
	got := j.kinds()
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("journal kinds %v, want %v", got, want)
	}
	if n := len(b.received(packets.PUBREL)); n != 1 {
		t.Errorf("broker got %d PUBREL, want 1", n)
	}
	if connects := b.received(packets.CONNECT); !connects[0].cleanStart {
		t.Errorf("first CONNECT without saved session has clean start 0, want 1")
	}
	if st := r.l.Stats(); !st.Connected || st.Acked != 3 {
		t.Errorf("stats connected %t acked %d, want true and 3", st.Connected, st.Acked)
	}
}

// The status shows Stats.Inflight, so it must fall as acknowledgements
// arrive, not only when the next PUBLISH goes out.
func TestStats_InflightFallsWithAcks(t *testing.T) {
	b := newFakeBroker(t, brokerScript{
		dropAck: func(_ int, p *packets.Publish) bool { return p.Topic == "held" },
	})
	src := newMemSource()
	src.add(msgs("held", 1, 3)...)
	src.add(msgs("acked", 1, 3)...)
	src.add(msgs("acked2", 2, 2)...)
	r := start(t, testOptions(b), src, &testJournal{}, nil)

	waitFor(t, 5*time.Second, "five outcomes", func() bool { return len(r.outcomes()) == 5 })
	if n := r.l.Stats().Inflight; n != 3 {
		t.Errorf("stats inflight %d with 3 messages unacknowledged, want 3", n)
	}
}

func TestJournal_PublishWaitsForCommit(t *testing.T) {
	b := newFakeBroker(t, brokerScript{})
	src := newMemSource()
	j := &testJournal{gate: make(chan struct{})}
	r := start(t, testOptions(b), src, j, nil)
	j.gate <- struct{}{} // the session-started commit

	waitFor(t, 5*time.Second, "connack", func() bool { return r.countEvents(EventConnected) == 1 })
	src.add(message.Message{Topic: "a", QoS: 1})
	time.Sleep(300 * time.Millisecond)
	if n := len(b.received(packets.PUBLISH)); n != 0 {
		t.Fatalf("%d PUBLISH written before the sent change was committed", n)
	}

	j.gate <- struct{}{} // ChangeSent
	waitFor(t, 5*time.Second, "publish after commit", func() bool { return len(b.received(packets.PUBLISH)) == 1 })
	time.Sleep(100 * time.Millisecond)
	if n := len(r.outcomes()); n != 0 {
		t.Fatalf("outcome reported before the acked change was committed")
	}
	j.gate <- struct{}{} // ChangeAcked
	waitFor(t, 5*time.Second, "outcome after commit", func() bool { return len(r.outcomes()) == 1 })
	close(j.gate)
}

// A journal that fails, as on a full disk, takes the loop offline without
// ending it. Nothing that waits for a commit is written, and once a retry
// of the same changes succeeds the loop connects and delivers.
func TestJournal_ErrorHoldsUntilRetrySucceeds(t *testing.T) {
	b := newFakeBroker(t, brokerScript{})
	src := newMemSource()
	j := &testJournal{}
	r := start(t, testOptions(b), src, j, nil)
	waitFor(t, 5*time.Second, "connack", func() bool { return r.countEvents(EventConnected) == 1 })

	j.fail.Store(true)
	src.add(message.Message{Topic: "a", QoS: 1, Payload: []byte("kept")})
	waitFor(t, 5*time.Second, "the disconnect", func() bool { return r.countEvents(EventDisconnected) == 1 })
	if got := r.l.Stats().LastError; !strings.Contains(got, "disk full") {
		t.Errorf("last error %q, want the journal error", got)
	}
	time.Sleep(2 * commitRetryDelay)
	if n := len(b.received(packets.PUBLISH)); n != 0 {
		t.Fatalf("%d PUBLISH written while commits failed", n)
	}
	select {
	case err := <-r.done:
		t.Fatalf("loop ended while commits failed: %v", err)
	default:
	}

	j.fail.Store(false)
	waitFor(t, 10*time.Second, "delivery after the retry", func() bool { return len(r.outcomes()) == 1 })
	if n := r.countEvents(EventConnected); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}
}

func TestResend_SessionPresentDupSameIDsInOrder(t *testing.T) {
	b := newFakeBroker(t, brokerScript{
		sessionPresent: func(conn int) bool { return conn > 0 },
		dropAck:        func(conn int, p *packets.Publish) bool { return conn == 0 },
	})
	src := newMemSource()
	src.add(msgs("t", 1, 5)...)
	opts := testOptions(b)
	opts.Birth = &message.Message{Topic: "status", Payload: []byte("online")}
	r := start(t, opts, src, &testJournal{}, nil)

	waitFor(t, 5*time.Second, "five publishes", func() bool { return len(b.received(packets.PUBLISH)) == 6 })
	r.l.Disconnect()
	waitFor(t, 5*time.Second, "disconnect", func() bool { return r.countEvents(EventDisconnected) == 1 })
	src.add(msgs("new", 1, 2)...)
	r.l.Reconnect()
	waitFor(t, 5*time.Second, "seven outcomes", func() bool { return len(r.outcomes()) == 7 })

	var first, second []wirePacket
	for _, p := range b.received(packets.PUBLISH) {
		if p.topic == "status" && p.conn == 1 && len(second) < 5 {
			t.Errorf("birth message sent before the resends")
		}
		if p.topic == "status" {
			continue
		}
		if p.conn == 0 {
			first = append(first, p)
		} else {
			second = append(second, p)
		}
	}
	if len(first) < 5 || len(second) < 5 {
		t.Fatalf("publishes per connection %d, %d; want at least 5 each", len(first), len(second))
	}
	for i := range 5 {
		if second[i].id != first[i].id || !second[i].dup || second[i].payload != first[i].payload {
			t.Errorf("resend %d: id %d dup %t payload %q, want id %d dup true payload %q",
				i, second[i].id, second[i].dup, second[i].payload, first[i].id, first[i].payload)
		}
	}
	for _, p := range first {
		if p.dup {
			t.Errorf("first send of id %d has DUP set", p.id)
		}
	}
	for _, p := range second[5:] {
		if p.topic != "new" || p.dup {
			t.Errorf("after the resends got topic %q dup %t, want new messages with DUP 0", p.topic, p.dup)
		}
	}
}

func TestResend_SessionLostPublishesAsNew(t *testing.T) {
	b := newFakeBroker(t, brokerScript{
		dropAck: func(conn int, p *packets.Publish) bool { return conn == 0 },
	})
	src := newMemSource()
	src.add(msgs("t", 1, 3)...)
	j := &testJournal{}
	r := start(t, testOptions(b), src, j, nil)

	waitFor(t, 5*time.Second, "three publishes", func() bool { return len(b.received(packets.PUBLISH)) == 3 })
	b.dropConnections()
	waitFor(t, 5*time.Second, "three outcomes", func() bool { return len(r.outcomes()) == 3 })

	connects := b.received(packets.CONNECT)
	if connects[1].cleanStart {
		t.Errorf("second CONNECT has clean start 1, want 0 to resume the session")
	}
	if j.count(state.ChangeSessionLost) != 1 {
		t.Errorf("journal has %d session-lost changes, want 1", j.count(state.ChangeSessionLost))
	}
	pubs := b.received(packets.PUBLISH)
	oldIDs := map[uint16]bool{}
	for _, p := range pubs[:3] {
		oldIDs[p.id] = true
	}
	for i, p := range pubs[3:] {
		if p.dup {
			t.Errorf("republish %d has DUP set", i)
		}
		if oldIDs[p.id] {
			t.Errorf("republish %d reuses packet identifier %d", i, p.id)
		}
		if want := pubs[i].payload; p.payload != want {
			t.Errorf("republish %d payload %q, want %q (original order)", i, p.payload, want)
		}
	}
}

func TestReceiveMaximum_LimitsResendBurst(t *testing.T) {
	b := newFakeBroker(t, brokerScript{
		sessionPresent: func(int) bool { return true },
		receiveMaximum: 2,
	})
	src := newMemSource()
	src.add(msgs("t", 1, 10)...)
	restored := &state.State{Session: true, NextOrder: 6, LastPacketID: 5}
	for i := range 5 {
		restored.Outgoing = append(restored.Outgoing, state.Flow{PacketID: uint16(i + 1), Seq: uint64(i + 1), QoS: 1, Stage: state.StagePublish, Order: uint64(i + 1)})
	}
	src.next = 5
	r := start(t, testOptions(b), src, &testJournal{}, restored)

	waitFor(t, 5*time.Second, "ten outcomes", func() bool { return len(r.outcomes()) == 10 })
	if outstanding := maxOutstanding(b.log()); outstanding > 2 {
		t.Errorf("%d publishes outstanding at once, want at most the receive maximum 2", outstanding)
	}
	pubs := b.received(packets.PUBLISH)
	for i, p := range pubs[:5] {
		if p.id != uint16(i+1) || !p.dup {
			t.Errorf("resend %d: id %d dup %t, want id %d dup true", i, p.id, p.dup, i+1)
		}
	}
	for _, p := range pubs[5:] {
		if p.id <= 5 && p.id != 0 && p.dup {
			t.Errorf("new publish reuses restored id %d with DUP", p.id)
		}
	}
}

func TestRestoredIDs_NeverReused(t *testing.T) {
	b := newFakeBroker(t, brokerScript{
		sessionPresent: func(int) bool { return true },
		dropAck:        func(conn int, p *packets.Publish) bool { return p.Duplicate },
	})
	src := newMemSource()
	src.add(msgs("t", 1, 1)...)
	src.next = 1
	src.add(msgs("n", 1, 20)...)
	restored := &state.State{Session: true, NextOrder: 2, LastPacketID: 2,
		Outgoing: []state.Flow{{PacketID: 3, Seq: 1, QoS: 1, Stage: state.StagePublish, Order: 1}}}
	r := start(t, testOptions(b), src, &testJournal{}, restored)

	waitFor(t, 5*time.Second, "twenty outcomes", func() bool { return len(r.outcomes()) >= 20 })
	for _, p := range b.received(packets.PUBLISH) {
		if !p.dup && p.id == 3 {
			t.Errorf("new publish %q took packet identifier 3, still outstanding from saved state", p.payload)
		}
	}
}

func TestMaximumPacketSize_FailsWithoutTakingID(t *testing.T) {
	b := newFakeBroker(t, brokerScript{maximumPacketSize: 200})
	src := newMemSource()
	big := message.Message{Topic: "t", QoS: 1, Payload: make([]byte, 500)}
	src.add(message.Message{Topic: "t", QoS: 1, Payload: []byte("a")}, big, message.Message{Topic: "t", QoS: 1, Payload: []byte("c")})
	j := &testJournal{}
	r := start(t, testOptions(b), src, j, nil)

	waitFor(t, 5*time.Second, "three outcomes", func() bool { return len(r.outcomes()) == 3 })
	o := r.outcomes()[2]
	if o.Kind != Failed || !strings.Contains(o.Reason, "200") {
		t.Errorf("oversized message outcome %v %q, want Failed naming the limit 200", o.Kind, o.Reason)
	}
	pubs := b.received(packets.PUBLISH)
	if len(pubs) != 2 {
		t.Fatalf("broker got %d publishes, want 2", len(pubs))
	}
	if pubs[1].id != pubs[0].id+1 {
		t.Errorf("packet identifiers %d, %d; the oversized message must not consume one", pubs[0].id, pubs[1].id)
	}
	if n := b.connections(); n != 1 {
		t.Errorf("%d connections, want 1", n)
	}
}

// A message with a control character in its topic makes mosquitto end
// the connection as malformed, so it goes to failed/ before it is sent
// and the messages behind it are delivered.
func TestControlCharacterInTopic_FailsBeforeSending(t *testing.T) {
	b := newFakeBroker(t, brokerScript{})
	src := newMemSource()
	src.add(message.Message{Topic: "t", QoS: 1, Payload: []byte("a")},
		message.Message{Topic: "tab\there", QoS: 1, Payload: []byte("b")},
		message.Message{Topic: "t", QoS: 1, Payload: []byte("c"), UserProperties: []message.UserProperty{{Key: "k", Value: "esc\x1b"}}},
		message.Message{Topic: "t", QoS: 1, Payload: []byte("d")})
	r := start(t, testOptions(b), src, &testJournal{}, nil)

	waitFor(t, 5*time.Second, "four outcomes", func() bool { return len(r.outcomes()) == 4 })
	for seq, want := range map[uint64]string{2: "U+0009", 3: "U+001B"} {
		if o := r.outcomes()[seq]; o.Kind != Failed || !strings.Contains(o.Reason, want) {
			t.Errorf("message %d: outcome %v %q, want Failed naming %s", seq, o.Kind, o.Reason, want)
		}
	}
	var sent []string
	for _, p := range b.received(packets.PUBLISH) {
		sent = append(sent, string(p.payload))
	}
	if !slices.Equal(sent, []string{"a", "d"}) {
		t.Errorf("broker got payloads %q, want a and d", sent)
	}
}

func TestReasonCodes(t *testing.T) {
	cases := []struct {
		name    string
		qos     byte
		code    byte
		want    OutcomeKind
		change  state.ChangeKind
		retried bool
	}{
		{"no matching subscribers", 1, 0x10, Delivered, state.ChangeAcked, false},
		{"not authorized", 1, 0x87, Failed, state.ChangeFailed, false},
		{"payload format invalid qos 2", 2, 0x99, Failed, state.ChangeFailed, false},
		{"quota exceeded", 1, 0x97, Delivered, state.ChangeReleased, true},
		{"unspecified error qos 2", 2, 0x80, Delivered, state.ChangeReleased, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rejected := false
			b := newFakeBroker(t, brokerScript{ackCode: func(p *packets.Publish) byte {
				if string(p.Payload) == "0" && !rejected {
					rejected = true
					return tc.code
				}
				return 0
			}})
			src := newMemSource()
			src.add(msgs("t", tc.qos, 2)...)
			j := &testJournal{}
			r := start(t, testOptions(b), src, j, nil)

			waitFor(t, 5*time.Second, "two outcomes", func() bool { return len(r.outcomes()) == 2 })
			o := r.outcomes()[1]
			if o.Kind != tc.want {
				t.Errorf("outcome %v (%s), want %v", o.Kind, o.Reason, tc.want)
			}
			if o.Kind == Failed && (o.ReasonCode != tc.code || !strings.Contains(o.Reason, reasonNames[tc.code])) {
				t.Errorf("failure reason %q code 0x%02X, want it to name 0x%02X", o.Reason, o.ReasonCode, tc.code)
			}
			if j.count(tc.change) == 0 {
				t.Errorf("journal has no %v change", tc.change)
			}
			pubs := b.received(packets.PUBLISH)
			if tc.retried {
				if len(pubs) != 3 || pubs[2].payload != "0" || pubs[2].dup || pubs[2].id == pubs[0].id {
					t.Errorf("want the rejected message published again as new after the next one; got %d publishes", len(pubs))
				}
			} else if len(pubs) != 2 {
				t.Errorf("broker got %d publishes, want 2", len(pubs))
			}
		})
	}
}

func TestBrokerLimits_DowngradeAndReject(t *testing.T) {
	qos0, noRetain := byte(0), byte(0)
	for _, policy := range []LimitPolicy{LimitDowngrade, LimitReject} {
		b := newFakeBroker(t, brokerScript{maximumQoS: &qos0, retainAvailable: &noRetain})
		src := newMemSource()
		src.add(message.Message{Topic: "t", QoS: 1, Retain: true})
		opts := testOptions(b)
		opts.OnBrokerLimit = policy
		r := start(t, opts, src, &testJournal{}, nil)
		waitFor(t, 5*time.Second, "outcome", func() bool { return len(r.outcomes()) == 1 })
		o := r.outcomes()[1]
		if policy == LimitDowngrade {
			// A QoS 0 message counts as delivered once written, which can
			// be before the fake broker has read it.
			waitFor(t, 5*time.Second, "the publish at the broker", func() bool { return len(b.received(packets.PUBLISH)) > 0 })
		}
		pubs := b.received(packets.PUBLISH)
		if policy == LimitDowngrade {
			if o.Kind != Delivered || len(pubs) != 1 || pubs[0].qos != 0 || r.l.Stats().Downgraded != 1 {
				t.Errorf("downgrade: outcome %v, %d publishes, downgraded %d", o.Kind, len(pubs), r.l.Stats().Downgraded)
			}
		} else if o.Kind != Failed || len(pubs) != 0 {
			t.Errorf("reject: outcome %v, %d publishes; want Failed and none", o.Kind, len(pubs))
		} else if want := "qos 1, over the broker's Maximum QoS of 0, and retain set"; !strings.Contains(o.Reason, want) ||
			!strings.Contains(o.Reason, "publish.on_broker_limit") {
			t.Errorf("reject: reason %q, want %q and the setting that downgrades instead", o.Reason, want)
		}
		r.stop(t)
	}
}

// MQTT 5 has a broker with Retain Available 0 end the connection with
// 0x9A on a PUBLISH with retain set, so the downgrade must clear the flag.
func TestBrokerLimits_RetainUnavailableSentWithout(t *testing.T) {
	noRetain := byte(0)
	b := newFakeBroker(t, brokerScript{retainAvailable: &noRetain})
	src := newMemSource()
	src.add(message.Message{Topic: "t", QoS: 1, Retain: true})
	r := start(t, testOptions(b), src, &testJournal{}, nil)

	waitFor(t, 5*time.Second, "outcome", func() bool { return len(r.outcomes()) == 1 })
	if o := r.outcomes()[1]; o.Kind != Delivered {
		t.Errorf("outcome %v, want Delivered", o.Kind)
	}
	pubs := b.received(packets.PUBLISH)
	if len(pubs) != 1 {
		t.Fatalf("broker got %d PUBLISH, want 1", len(pubs))
	}
	if pubs[0].retain {
		t.Errorf("PUBLISH sent with retain set to a broker without Retain Available, want retain cleared")
	}
	if pubs[0].qos != 1 {
		t.Errorf("PUBLISH sent with QoS %d, want 1", pubs[0].qos)
	}
	if n := r.l.Stats().Downgraded; n != 1 {
		t.Errorf("stats downgraded %d, want 1", n)
	}
}

func TestLimitReason_NamesOnlyLimitsExceeded(t *testing.T) {
	cases := []struct {
		name   string
		m      message.Message
		want   []string
		absent []string
	}{
		{"qos", message.Message{QoS: 2}, []string{"qos 2, over the broker's Maximum QoS of 1. ",
			"To send it, set QoS to 1 in its .msg file in failed/ and move that file into new/. ",
			"For later messages, lower publish.qos (or the qos of", "publish.on_broker_limit to downgrade"},
			[]string{"retain", "Retain"}},
		{"retain", message.Message{QoS: 1, Retain: true}, []string{"Retain Available is 0. ",
			"To send it, set Retain to false in its .msg file",
			"For later messages, clear publish.retain (or the retain of", "publish.on_broker_limit to downgrade"},
			[]string{"qos", "QoS"}},
		{"both", message.Message{QoS: 2, Retain: true}, []string{"Maximum QoS of 1, and retain set",
			"To send it, set QoS to 1 and Retain to false in its .msg file",
			"For later messages, lower publish.qos and clear publish.retain (or the qos and retain of"}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			reason := limitReason(1, false, tc.m)
			for _, want := range tc.want {
				if !strings.Contains(reason, want) {
					t.Errorf("reason %q lacks %q", reason, want)
				}
			}
			for _, absent := range tc.absent {
				if strings.Contains(reason, absent) {
					t.Errorf("reason %q names %q, a limit the message is not over", reason, absent)
				}
			}
		})
	}
}

func TestPacketSizeReason_NamesLimitAndKey(t *testing.T) {
	reason := packetSizeReason(2048, 1024)
	for _, want := range []string{"2048 bytes", "Maximum Packet Size of 1024 bytes", "publish.max_message_bytes"} {
		if !strings.Contains(reason, want) {
			t.Errorf("reason %q lacks %q", reason, want)
		}
	}
}

// Without a Maximum Packet Size from the broker, a packet over what MQTT
// can encode is still refused rather than sent with a Remaining Length
// that no broker can read.
func TestOversized_ProtocolLimitWithoutBrokerLimit(t *testing.T) {
	c := &connection{limits: &connackPacket{}}
	if reason := c.oversized(maxPacketBytes); reason != "" {
		t.Errorf("oversized(%d) = %q, want it sendable", maxPacketBytes, reason)
	}
	reason := c.oversized(maxPacketBytes + 1)
	if !strings.Contains(reason, "largest packet MQTT can encode") || !strings.Contains(reason, "publish.max_message_bytes") {
		t.Errorf("oversized(%d) = %q, want MQTT's limit and the key named", maxPacketBytes+1, reason)
	}
	if got := len(appendVariableByteInteger(nil, maxPacketBytes-5)); got != 4 {
		t.Errorf("Remaining Length of the largest packet takes %d bytes, want 4", got)
	}

	c.limits.MaximumPacketSize = 1024
	if reason := c.oversized(1025); !strings.Contains(reason, "Maximum Packet Size of 1024 bytes") {
		t.Errorf("oversized(1025) with a broker limit of 1024 = %q, want the broker's limit", reason)
	}
}

func TestExpiry_AgedByWaitAndDropped(t *testing.T) {
	b := newFakeBroker(t, brokerScript{})
	src := newMemSource()
	src.reqs = []Request{
		{Seq: 1, Message: message.Message{Topic: "t", QoS: 1, ExpirySeconds: 10}, Enqueued: time.Now().Add(-20 * time.Second)},
		{Seq: 2, Message: message.Message{Topic: "t", QoS: 1, ExpirySeconds: 100}, Enqueued: time.Now().Add(-30 * time.Second)},
	}
	j := &testJournal{}
	r := start(t, testOptions(b), src, j, nil)
	waitFor(t, 5*time.Second, "two outcomes", func() bool { return len(r.outcomes()) == 2 })
	if o := r.outcomes()[1]; o.Kind != Expired {
		t.Errorf("expired message outcome %v, want Expired", o.Kind)
	}
	pubs := b.received(packets.PUBLISH)
	if len(pubs) != 1 || pubs[0].expiry == nil || *pubs[0].expiry > 70 || *pubs[0].expiry < 69 {
		t.Fatalf("want one publish with about 70 s of expiry left, got %+v", pubs)
	}
	if j.count(state.ChangeExpired) != 1 {
		t.Errorf("journal has %d expired changes, want 1", j.count(state.ChangeExpired))
	}
}

func TestReceiveMaximum_ReadFromEachConnack(t *testing.T) {
	b := newFakeBroker(t, brokerScript{
		sessionPresent: func(conn int) bool { return conn > 0 },
		receiveMaximum: 5,
		dropAck:        func(conn int, p *packets.Publish) bool { return true },
	})
	src := newMemSource()
	src.add(msgs("t", 1, 8)...)
	start(t, testOptions(b), src, &testJournal{}, nil)

	waitFor(t, 3*time.Second, "five publishes", func() bool { return len(b.received(packets.PUBLISH)) == 5 })
	time.Sleep(100 * time.Millisecond)
	if n := len(b.received(packets.PUBLISH)); n != 5 {
		t.Fatalf("%d publishes on the first connection, want the receive maximum 5", n)
	}

	// No acknowledgement comes on the second connection either, so the
	// publishes written there are exactly the window its CONNACK allows.
	b.set(func(s *brokerScript) { s.receiveMaximum = 2 })
	b.shutDown()
	onSecond := func() int {
		n := 0
		for _, w := range b.log() {
			if w.conn == 1 && w.fromClient && w.kind == packets.PUBLISH {
				n++
			}
		}
		return n
	}
	waitFor(t, 5*time.Second, "publishes on the second connection", func() bool { return onSecond() >= 2 })
	time.Sleep(200 * time.Millisecond)
	if n := onSecond(); n != 2 {
		t.Errorf("%d publishes written after the second CONNACK without acknowledgement, want its receive maximum 2", n)
	}
}

func TestResend_QoS2PubrelStage(t *testing.T) {
	restored := &state.State{Session: true, NextOrder: 3, LastPacketID: 2, Outgoing: []state.Flow{
		{PacketID: 1, Seq: 1, QoS: 2, Stage: state.StagePubrel, Order: 1},
		{PacketID: 2, Seq: 2, QoS: 2, Stage: state.StagePublish, Order: 2},
	}}
	for _, present := range []bool{true, false} {
		b := newFakeBroker(t, brokerScript{sessionPresent: func(int) bool { return present }})
		src := newMemSource()
		src.add(msgs("t", 2, 2)...)
		src.next = 2
		j := &testJournal{}
		r := start(t, testOptions(b), src, j, restored)

		waitFor(t, 3*time.Second, "completed flows", func() bool { return j.count(state.ChangeCompleted) >= 1 })
		if !present {
			waitFor(t, 3*time.Second, "two publishes", func() bool { return len(b.received(packets.PUBLISH)) >= 2 })
		}
		pubrels := b.received(packets.PUBREL)
		pubs := b.received(packets.PUBLISH)
		if present {
			if len(pubrels) == 0 || pubrels[0].id != 1 || len(pubs) != 1 || pubs[0].id != 2 || !pubs[0].dup {
				t.Errorf("session present: want PUBREL 1 and DUP PUBLISH 2, got %d PUBREL, publishes %+v", len(pubrels), pubs)
			}
		} else {
			for _, p := range pubrels {
				if p.id == 1 {
					t.Errorf("session lost: PUBREL for packet identifier 1, which the broker no longer knows")
				}
			}
			// The broker lost the message of the flow past PUBREC too, if
			// it forwards only on PUBREL, so both are published again.
			if len(pubs) != 2 || pubs[0].dup || pubs[0].payload != "0" || pubs[1].dup || pubs[1].payload != "1" {
				t.Errorf("session lost: want seq 1 and 2 published again as new, in order, got %+v", pubs)
			}
		}
		r.stop(t)
	}
}

// Packet buffers are reused once written. Messages of varied sizes, many
// in flight at once, must each reach the broker with their own payload.
func TestPublish_ReusedBuffersKeepEachPayload(t *testing.T) {
	b := newFakeBroker(t, brokerScript{})
	src := newMemSource()
	want := map[string]bool{}
	for i := range 600 {
		payload := strings.Repeat(string(rune('a'+i%26)), 200+(i*37)%900) + fmt.Sprint(i)
		want[payload] = true
		src.add(message.Message{Topic: "t", QoS: byte(i % 3), Payload: []byte(payload)})
	}
	r := start(t, testOptions(b), src, &testJournal{}, nil)

	waitFor(t, 10*time.Second, "every outcome", func() bool { return len(r.outcomes()) == len(want) })
	got := map[string]bool{}
	for _, p := range b.received(packets.PUBLISH) {
		if !want[p.payload] {
			t.Fatalf("broker got a payload of %d bytes that was never sent", len(p.payload))
		}
		got[p.payload] = true
	}
	if len(got) != len(want) {
		t.Errorf("broker got %d distinct payloads, want %d", len(got), len(want))
	}
}

// poisoningSource overwrites each payload it gets back, so a payload the
// loop reads after recycling it reaches the broker changed.
type poisoningSource struct {
	*memSource
	recycled atomic.Int64
}

// Next and Load hand out a copy of each payload, as a source that
// decodes from storage does.
func (s *poisoningSource) Next() (Request, bool, error) {
	req, ok, err := s.memSource.Next()
	req.Message.Payload = slices.Clone(req.Message.Payload)
	return req, ok, err
}

func (s *poisoningSource) Load(seq uint64) (Request, error) {
	req, err := s.memSource.Load(seq)
	req.Message.Payload = slices.Clone(req.Message.Payload)
	return req, err
}

func (s *poisoningSource) Recycle(payload []byte) {
	for i := range payload {
		payload[i] = '!'
	}
	s.recycled.Add(1)
}

func TestPublish_RecycledPayloadsNotReadAgain(t *testing.T) {
	b := newFakeBroker(t, brokerScript{dropAck: func(conn int, _ *packets.Publish) bool { return conn == 0 }})
	src := &poisoningSource{memSource: newMemSource()}
	var want []string
	for i := range 300 {
		payload := fmt.Sprintf("%d-%s", i, strings.Repeat("p", i%50))
		want = append(want, payload)
		src.add(message.Message{Topic: "t", QoS: byte(i % 3), Payload: []byte(payload)})
	}
	opts := testOptions(b)
	opts.MaxInflight = 7 // the window fills, so requests are held
	opts.AckTimeout = 300 * time.Millisecond
	r := start(t, opts, src, &testJournal{}, nil)

	waitFor(t, 10*time.Second, "every outcome", func() bool { return len(r.outcomes()) == len(want) })
	for _, p := range b.received(packets.PUBLISH) {
		if strings.Contains(p.payload, "!") {
			t.Fatalf("broker got payload %q, read after it was recycled", p.payload)
		}
	}
	if src.recycled.Load() < int64(len(want)) {
		t.Errorf("%d payloads recycled, want at least %d", src.recycled.Load(), len(want))
	}
}

// Messages queued to be published again go out in spool order, whatever
// queued them: a QoS 0 write that never happened, a flow of a lost
// session at either stage, a retry that became due.
func TestReplay_SpoolOrder(t *testing.T) {
	b := newFakeBroker(t, brokerScript{})
	l, err := New(testOptions(b), newMemSource(), &testJournal{}, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer l.Close()

	l.qos0Done(5, false)
	l.st.Outgoing = []state.Flow{
		{PacketID: 1, Seq: 9, QoS: 1, Stage: state.StagePublish, Order: 1},
		{PacketID: 2, Seq: 7, QoS: 1, Stage: state.StagePublish, Order: 2},
		{PacketID: 3, Seq: 3, QoS: 2, Stage: state.StagePubrel, Order: 3},
	}
	l.replayOpenFlows()
	l.retries = append(l.retries, retry{seq: 2, due: l.clock.Now()})
	l.retriesDue()
	l.qos0Done(8, false)

	want := []uint64{2, 3, 5, 7, 8, 9}
	if !slices.Equal(l.replay, want) {
		t.Errorf("replay queue %v, want %v in spool order", l.replay, want)
	}
}

// With QoS 0 messages not kept offline, a QoS 0 write that a lost
// connection cut off is dropped, not queued to be published again.
func TestQoS0_UnwrittenDroppedWhenNotKeptOffline(t *testing.T) {
	b := newFakeBroker(t, brokerScript{})
	opts := testOptions(b)
	opts.DropQoS0Offline = true
	l, err := New(opts, newMemSource(), &testJournal{}, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer l.Close()

	l.qos0Done(5, false)
	if len(l.replay) != 0 {
		t.Errorf("replay queue %v, want the unwritten QoS 0 message dropped", l.replay)
	}
}

// A QoS 2 message past PUBREC is published again when the broker loses
// the session, but it was reported delivered at PUBREC already: it gets
// no second outcome, so a wait for its file cannot count it twice.
func TestResend_PubrelStageReportedOnce(t *testing.T) {
	b := newFakeBroker(t, brokerScript{
		noPubcomp: func(conn int) bool { return conn == 0 },
		dropAck: func(conn int, p *packets.Publish) bool {
			return conn == 0 && string(p.Payload) == "1"
		},
	})
	src := newMemSource()
	src.add(msgs("t", 2, 2)...)
	r := start(t, testOptions(b), src, &testJournal{}, nil)
	waitFor(t, 3*time.Second, "PUBREL for the first message", func() bool { return len(b.received(packets.PUBREL)) == 1 })

	b.dropConnections()
	waitFor(t, 5*time.Second, "both messages published again", func() bool {
		n := 0
		for _, p := range b.received(packets.PUBLISH) {
			if p.conn > 0 {
				n++
			}
		}
		return n == 2
	})
	waitFor(t, 3*time.Second, "an outcome for the second message", func() bool { return len(r.outcomes()) == 2 })
	time.Sleep(200 * time.Millisecond)

	if n := r.countEvents(EventAcknowledged); n != 2 {
		t.Errorf("%d outcomes for 2 messages, want one each", n)
	}
	if n := r.l.Stats().Acked; n != 2 {
		t.Errorf("Acked = %d, want 2", n)
	}
}

// TestReceiveMaximum_BirthWaitsForResend resumes a session with one flow
// open under a broker Receive Maximum of 1. The resent PUBLISH uses the
// whole quota until its PUBACK, so the birth message must wait for it.
func TestReceiveMaximum_BirthWaitsForResend(t *testing.T) {
	b := newFakeBroker(t, brokerScript{
		sessionPresent: func(int) bool { return true },
		receiveMaximum: 1,
		dropAck:        func(_ int, p *packets.Publish) bool { return p.Duplicate },
	})
	src := newMemSource()
	src.add(msgs("t", 1, 1)...)
	src.next = 1
	restored := &state.State{Session: true, NextOrder: 2, LastPacketID: 1,
		Outgoing: []state.Flow{{PacketID: 1, Seq: 1, QoS: 1, Stage: state.StagePublish, Order: 1}}}
	opts := testOptions(b)
	opts.Birth = &message.Message{Topic: "status", Payload: []byte("online")}
	r := start(t, opts, src, &testJournal{}, restored)

	waitFor(t, 3*time.Second, "resend", func() bool { return len(b.received(packets.PUBLISH)) >= 1 })
	time.Sleep(300 * time.Millisecond)
	if outstanding := maxOutstanding(b.log()); outstanding > 1 {
		t.Errorf("%d publishes outstanding at once, want at most the receive maximum 1", outstanding)
	}
	if n := len(b.received(packets.PUBLISH)); n != 1 {
		t.Errorf("broker got %d publishes before the resend's PUBACK, want 1", n)
	}

	b.sendTo(0, &packets.Puback{PacketID: 1, Properties: &packets.Properties{}})
	waitFor(t, 3*time.Second, "birth after the PUBACK", func() bool { return len(b.received(packets.PUBLISH)) == 2 })
	if p := b.received(packets.PUBLISH)[1]; p.topic != "status" {
		t.Errorf("publish after the PUBACK has topic %q, want the birth topic status", p.topic)
	}
	if o := r.outcomes()[1]; o.Kind != Delivered {
		t.Errorf("resent message outcome %v, want Delivered", o.Kind)
	}
}

// TestMaximumPacketSize_BirthNotSent has a birth message larger than the
// broker's Maximum Packet Size. It is not sent, and messages still are.
func TestMaximumPacketSize_BirthNotSent(t *testing.T) {
	b := newFakeBroker(t, brokerScript{maximumPacketSize: 100})
	src := newMemSource()
	src.add(msgs("t", 1, 1)...)
	opts := testOptions(b)
	opts.Birth = &message.Message{Topic: "status", Payload: make([]byte, 200)}
	r := start(t, opts, src, &testJournal{}, nil)

	waitFor(t, 3*time.Second, "outcome", func() bool { return len(r.outcomes()) == 1 })
	for _, p := range b.received(packets.PUBLISH) {
		if p.topic == "status" {
			t.Errorf("birth message of %d payload bytes sent over the Maximum Packet Size 100", len(p.payload))
		}
	}
	if o := r.outcomes()[1]; o.Kind != Delivered {
		t.Errorf("message outcome %v, want Delivered", o.Kind)
	}
}
