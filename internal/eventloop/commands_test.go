package eventloop

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"

	"github.com/mqspool/mqspool/internal/message"
	"github.com/mqspool/mqspool/internal/state"
)

func TestPause_StopsPublishingKeepsPinging(t *testing.T) {
	b := newFakeBroker(t, brokerScript{})
	src := newMemSource()
	opts := testOptions(b)
	opts.KeepAlive = time.Second
	r := start(t, opts, src, &testJournal{}, nil)

	src.add(msgs("t", 1, 3)...)
	waitFor(t, 3*time.Second, "three outcomes", func() bool { return len(r.outcomes()) == 3 })
	r.l.Pause()
	waitFor(t, 3*time.Second, "paused", func() bool { return r.l.Stats().Paused })
	src.add(msgs("t", 1, 3)...)
	time.Sleep(2300 * time.Millisecond)
	if n := len(b.received(packets.PUBLISH)); n != 3 {
		t.Errorf("%d publishes while paused, want the 3 from before", n)
	}
	if n := len(b.received(packets.PINGREQ)); n < 1 {
		t.Errorf("no PINGREQ while paused, want keep alive to continue")
	}
	r.l.Resume()
	waitFor(t, 3*time.Second, "six outcomes", func() bool { return len(r.outcomes()) == 6 })
}

func TestThrottle_MessagesPerSecond(t *testing.T) {
	b := newFakeBroker(t, brokerScript{})
	src := newMemSource()
	src.add(msgs("t", 0, 200)...)
	opts := testOptions(b)
	opts.MessagesPerSecond = 20
	start(t, opts, src, &testJournal{}, nil)

	waitFor(t, 3*time.Second, "first publish", func() bool { return len(b.received(packets.PUBLISH)) > 0 })
	first := b.received(packets.PUBLISH)[0].at
	time.Sleep(3*time.Second - time.Since(first))
	n := 0
	for _, p := range b.received(packets.PUBLISH) {
		if p.at.Sub(first) < 3*time.Second {
			n++
		}
	}
	if n < 54 || n > 66 {
		t.Errorf("%d publishes in 3 s at 20 messages/s, want 60 within 10%%", n)
	}
}

func TestThrottle_SetWhileRunning(t *testing.T) {
	b := newFakeBroker(t, brokerScript{})
	src := newMemSource()
	src.add(msgs("t", 0, 40)...)
	opts := testOptions(b)
	opts.MessagesPerSecond = 1
	r := start(t, opts, src, &testJournal{}, nil)

	waitFor(t, 3*time.Second, "first publish", func() bool { return len(b.received(packets.PUBLISH)) > 0 })
	r.l.SetThrottle(0, 0)
	waitFor(t, 3*time.Second, "all publishes once unlimited", func() bool { return len(b.received(packets.PUBLISH)) == 40 })
	if s := r.l.Stats(); s.MessagesPerSecond != 0 {
		t.Errorf("stats throttle %g, want 0", s.MessagesPerSecond)
	}
}

func TestShutdown_DrainsAndReturnsState(t *testing.T) {
	b := newFakeBroker(t, brokerScript{})
	src := newMemSource()
	src.add(msgs("t", 1, 5)...)
	r := start(t, testOptions(b), src, &testJournal{}, nil)
	waitFor(t, 3*time.Second, "five publishes", func() bool { return len(b.received(packets.PUBLISH)) == 5 })
	r.l.Shutdown(2 * time.Second)

	select {
	case err := <-r.done:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("Poll returned %v after shutdown, want ErrClosed", err)
		}
		r.done <- err
	case <-time.After(3 * time.Second):
		t.Fatal("Poll did not return after shutdown")
	}
	if n := len(r.outcomes()); n != 5 {
		t.Errorf("%d outcomes before ErrClosed, want 5", n)
	}
	waitFor(t, time.Second, "disconnect", func() bool { return len(b.received(packets.DISCONNECT)) > 0 })
	disconnects := b.received(packets.DISCONNECT)
	if len(disconnects) != 1 || disconnects[0].code != 0 {
		t.Errorf("broker got %v, want one DISCONNECT with reason 0x00", disconnects)
	}
	if st := r.l.State(); len(st.Outgoing) != 0 || !st.Session {
		t.Errorf("state after drain has %d flows, session %t; want 0 flows and a session", len(st.Outgoing), st.Session)
	}
}

func TestShutdown_DrainDeadlineKeepsFlows(t *testing.T) {
	b := newFakeBroker(t, brokerScript{dropAck: func(int, *packets.Publish) bool { return true }})
	src := newMemSource()
	src.add(msgs("t", 2, 3)...)
	r := start(t, testOptions(b), src, &testJournal{}, nil)
	waitFor(t, 3*time.Second, "three publishes", func() bool { return len(b.received(packets.PUBLISH)) == 3 })

	began := time.Now()
	r.l.Shutdown(300 * time.Millisecond)
	err := <-r.done
	r.done <- err
	if took := time.Since(began); took < 300*time.Millisecond || took > 2*time.Second {
		t.Errorf("shutdown took %s with drain 300ms", took)
	}
	if st := r.l.State(); len(st.Outgoing) != 3 {
		t.Errorf("state keeps %d flows, want the 3 unacknowledged", len(st.Outgoing))
	}
}

// A broker that stops reading leaves the loop inside a write whose own
// deadline is the keep alive; Shutdown must end it at the drain deadline.
func TestShutdown_EndsWriteToStalledBroker(t *testing.T) {
	b := newFakeBroker(t, brokerScript{stallAfterConnack: true})
	src := newMemSource()
	big := msgs("t", 1, 16)
	for i := range big {
		big[i].Payload = make([]byte, 1<<20)
	}
	src.add(big...)
	opts := testOptions(b)
	opts.KeepAlive = 60 * time.Second
	r := start(t, opts, src, &testJournal{}, nil)
	waitFor(t, 3*time.Second, "connack", func() bool { return r.countEvents(EventConnected) == 1 })
	time.Sleep(500 * time.Millisecond) // the send buffers fill and a write blocks

	began := time.Now()
	r.l.Shutdown(300 * time.Millisecond)
	select {
	case err := <-r.done:
		r.done <- err
	case <-time.After(5 * time.Second):
		t.Fatal("Poll did not return within 5 s of Shutdown with a drain of 300ms")
	}
	if took := time.Since(began); took < 300*time.Millisecond {
		t.Errorf("shutdown took %s, want the drain of 300ms first", took)
	}
}

func TestDisconnect_StaysOfflineUntilReconnect(t *testing.T) {
	b := newFakeBroker(t, brokerScript{})
	r := start(t, testOptions(b), newMemSource(), &testJournal{}, nil)
	waitFor(t, 3*time.Second, "connack", func() bool { return r.countEvents(EventConnected) == 1 })
	r.l.Disconnect()
	time.Sleep(500 * time.Millisecond)
	if n := b.connections(); n != 1 {
		t.Fatalf("%d connections after Disconnect, want to stay offline", n)
	}
	if r.l.Stats().Connected {
		t.Errorf("stats report connected after Disconnect")
	}
	r.l.Reconnect()
	waitFor(t, 3*time.Second, "second connack", func() bool { return r.countEvents(EventConnected) == 2 })
}

func TestReconnectNever_EndsWithState(t *testing.T) {
	b := newFakeBroker(t, brokerScript{dropAck: func(int, *packets.Publish) bool { return true }})
	src := newMemSource()
	src.add(msgs("t", 1, 2)...)
	opts := testOptions(b)
	opts.Reconnect = ReconnectNever
	r := start(t, opts, src, &testJournal{}, nil)
	waitFor(t, 3*time.Second, "two publishes", func() bool { return len(b.received(packets.PUBLISH)) == 2 })
	b.dropConnections()

	err := <-r.done
	r.done <- err
	if !errors.Is(err, ErrClosed) {
		t.Fatalf("Poll returned %v, want ErrClosed", err)
	}
	if st := r.l.State(); len(st.Outgoing) != 2 {
		t.Errorf("returned state has %d flows, want 2 to hand to a new loop", len(st.Outgoing))
	}
	if n := b.connections(); n != 1 {
		t.Errorf("%d connections, want no reconnect", n)
	}
}

func TestReconnectAfterFirstSuccess_FirstFailureReturned(t *testing.T) {
	b := newFakeBroker(t, brokerScript{connackCode: 0x87})
	opts := testOptions(b)
	opts.Reconnect = ReconnectAfterFirstSuccess
	r := start(t, opts, newMemSource(), &testJournal{}, nil)
	err := <-r.done
	r.done <- err
	if err == nil || errors.Is(err, ErrClosed) || !strings.Contains(err.Error(), "not authorized") {
		t.Fatalf("Poll returned %v, want the connect error naming 0x87 not authorized", err)
	}
}

func TestPoll_ContextCancelKeepsLoop(t *testing.T) {
	b := newFakeBroker(t, brokerScript{})
	src := newMemSource()
	l, err := New(testOptions(b), src, &testJournal{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	if ev, err := l.Poll(ctx); err != nil || ev.Kind != EventConnected {
		t.Fatalf("first Poll: %v %v, want EventConnected", ev.Kind, err)
	}
	cancel()
	if _, err := l.Poll(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Poll with a cancelled context returned %v", err)
	}
	src.add(msgs("t", 1, 1)...)
	ev, err := l.Poll(context.Background())
	if err != nil || ev.Kind != EventAcknowledged || ev.Outcome.Kind != Delivered {
		t.Fatalf("Poll after cancel: %+v %v, want the message delivered", ev, err)
	}
}

func TestIncoming_ReleaseThenAcknowledge(t *testing.T) {
	b := newFakeBroker(t, brokerScript{})
	opts := testOptions(b)
	opts.Subscriptions = []Subscription{{Filter: "in/#", QoS: 2}}
	j := &testJournal{}
	r := start(t, opts, newMemSource(), j, nil)
	waitFor(t, 3*time.Second, "subscribe", func() bool { return len(b.received(packets.SUBSCRIBE)) == 1 })

	b.sendTo(0, &packets.Publish{Topic: "in/1", QoS: 1, PacketID: 7, Payload: []byte("x"), Properties: &packets.Properties{}})
	waitFor(t, 3*time.Second, "puback", func() bool { return len(b.received(packets.PUBACK)) == 1 })

	q2 := &packets.Publish{Topic: "in/2", QoS: 2, PacketID: 9, Payload: []byte("y"), Properties: &packets.Properties{}}
	b.sendTo(0, q2)
	waitFor(t, 3*time.Second, "pubrec", func() bool { return len(b.received(packets.PUBREC)) == 1 })
	if j.count(state.ChangeIncomingStored) != 1 {
		t.Errorf("PUBREC written before the incoming-stored change was committed")
	}
	dup := *q2
	dup.Duplicate = true
	b.sendTo(0, &dup)
	waitFor(t, 3*time.Second, "second pubrec", func() bool { return len(b.received(packets.PUBREC)) == 2 })
	if n := r.countEvents(EventIncoming); n != 2 {
		t.Errorf("%d incoming events, want 2: a duplicate QoS 2 publish must not be reported again", n)
	}

	b.sendTo(0, &packets.Pubrel{PacketID: 9, Properties: &packets.Properties{}})
	waitFor(t, 3*time.Second, "pubcomp", func() bool { return len(b.received(packets.PUBCOMP)) == 1 })
	if j.count(state.ChangeIncomingReleased) != 1 {
		t.Errorf("PUBCOMP written before the incoming-released change was committed")
	}
}

func TestBirth_PublishedRetainedAfterConnack(t *testing.T) {
	b := newFakeBroker(t, brokerScript{})
	opts := testOptions(b)
	opts.Birth = &message.Message{Topic: "status", Payload: []byte("online")}
	opts.Will = &message.Message{Topic: "status", Payload: []byte("offline"), Retain: true}
	r := start(t, opts, newMemSource(), &testJournal{}, nil)
	waitFor(t, 3*time.Second, "birth", func() bool { return len(b.received(packets.PUBLISH)) == 1 })
	if p := b.received(packets.PUBLISH)[0]; p.topic != "status" || p.qos != 1 {
		t.Errorf("birth topic %q qos %d, want status qos 1", p.topic, p.qos)
	}
	if n := len(r.outcomes()); n != 0 {
		t.Errorf("birth message reported %d outcomes, want none: it is not a request", n)
	}
}

func TestPublishAll_TimesOut(t *testing.T) {
	b := newFakeBroker(t, brokerScript{dropAck: func(_ int, p *packets.Publish) bool { return string(p.Payload) == "1" }})
	reqs := []Request{
		{Seq: 100, Message: message.Message{Topic: "t", QoS: 1, Payload: []byte("0")}},
		{Seq: 100, Message: message.Message{Topic: "t", QoS: 1, Payload: []byte("1")}},
	}
	outcomes, err := PublishAll(context.Background(), testOptions(b), reqs, 500*time.Millisecond)
	if !errors.Is(err, ErrTimedOut) {
		t.Fatalf("PublishAll error %v, want ErrTimedOut", err)
	}
	if outcomes[0].Kind != Delivered || outcomes[0].Seq != 100 {
		t.Errorf("first outcome %+v, want Delivered with seq 100", outcomes[0])
	}
	if outcomes[1].Kind != TimedOut {
		t.Errorf("second outcome %v, want TimedOut", outcomes[1].Kind)
	}
}

func TestPublishAll_AllDelivered(t *testing.T) {
	b := newFakeBroker(t, brokerScript{})
	reqs := []Request{{Message: message.Message{Topic: "t", QoS: 2}}, {Message: message.Message{Topic: "t", QoS: 0}}}
	outcomes, err := PublishAll(context.Background(), testOptions(b), reqs, 3*time.Second)
	if err != nil {
		t.Fatalf("PublishAll: %v", err)
	}
	for i, o := range outcomes {
		if o.Kind != Delivered {
			t.Errorf("outcome %d: %v, want Delivered", i, o.Kind)
		}
	}
	waitFor(t, time.Second, "disconnect", func() bool { return len(b.received(packets.DISCONNECT)) == 1 })
}

// jumpClock is a Clock whose Now jumps like a wall clock set by hand,
// while its timers run in real time.
type jumpClock struct{ offset atomic.Int64 }

func (c *jumpClock) Now() time.Time { return time.Now().Round(0).Add(time.Duration(c.offset.Load())) }

func (c *jumpClock) NewTimer(d time.Duration) Timer { return realClock{}.NewTimer(d) }

func TestClock_WallJumpChangesNothing(t *testing.T) {
	b := newFakeBroker(t, brokerScript{})
	src := newMemSource()
	clock := &jumpClock{}
	opts := testOptions(b)
	opts.KeepAlive = time.Second
	opts.AckTimeout = 800 * time.Millisecond
	opts.Clock = clock
	r := start(t, opts, src, &testJournal{}, nil)

	for i := range 30 {
		switch i {
		case 10:
			clock.offset.Store(int64(3 * time.Hour))
		case 20:
			clock.offset.Store(int64(-3 * time.Hour))
		}
		src.add(message.Message{Topic: "t", QoS: 1})
		time.Sleep(100 * time.Millisecond)
	}
	waitFor(t, 3*time.Second, "thirty outcomes", func() bool { return len(r.outcomes()) == 30 })
	if n := b.connections(); n != 1 {
		t.Errorf("%d connections across clock jumps, want 1", n)
	}
	for seq, o := range r.outcomes() {
		if o.Kind != Delivered || o.Latency < 0 {
			t.Errorf("seq %d: outcome %v latency %s", seq, o.Kind, o.Latency)
		}
	}
}

func TestNew_RejectsInvalidOptions(t *testing.T) {
	base := Options{URLs: []string{"mqtt://127.0.0.1:1"}, ClientID: "c"}
	cases := []struct {
		name   string
		modify func(o *Options)
		want   string
	}{
		{"no url", func(o *Options) { o.URLs = nil }, "broker.urls"},
		{"bad scheme", func(o *Options) { o.URLs = []string{"http://x"} }, "mqtt://"},
		{"no client id", func(o *Options) { o.ClientID = "" }, "client_id"},
		{"negative ack timeout", func(o *Options) { o.AckTimeout = -time.Second }, "ack timeout"},
		{"keep alive too long", func(o *Options) { o.KeepAlive = 100000 * time.Second }, "keep alive"},
		{"max below min", func(o *Options) { o.MinDelay, o.MaxDelay = time.Second, time.Millisecond }, "max_delay"},
		{"inflight too large", func(o *Options) { o.MaxInflight = 70000 }, "max inflight"},
		{"bad subscription", func(o *Options) { o.Subscriptions = []Subscription{{Filter: "a", QoS: 3}} }, "subscription"},
		{"bad will", func(o *Options) { o.Will = &message.Message{Topic: "a/#"} }, "will"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := base
			tc.modify(&o)
			_, err := New(o, newMemSource(), &testJournal{}, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New error %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}

func TestDropQoS0Offline_DropsUntilHigherQoS(t *testing.T) {
	b := newFakeBroker(t, brokerScript{})
	url := b.url()
	b.close() // nothing listens: every connect fails
	src := newMemSource()
	src.add(msgs("t", 0, 3)...)
	src.add(msgs("t", 1, 1)...)
	src.add(msgs("t", 0, 1)...)
	opts := testOptions(b)
	opts.URLs = []string{url}
	opts.DropQoS0Offline = true
	r := start(t, opts, src, &testJournal{}, nil)

	waitFor(t, 3*time.Second, "three outcomes", func() bool { return len(r.outcomes()) == 3 })
	time.Sleep(200 * time.Millisecond)
	outcomes := r.outcomes()
	if len(outcomes) != 3 {
		t.Errorf("%d outcomes, want 3: the QoS 1 message must wait for a connection and keep the one after it waiting", len(outcomes))
	}
	for seq := uint64(1); seq <= 3; seq++ {
		if outcomes[seq].Kind != Dropped {
			t.Errorf("seq %d: outcome %v, want Dropped", seq, outcomes[seq].Kind)
		}
	}
	if n := r.l.Stats().Dropped; n != 3 {
		t.Errorf("stats dropped %d, want 3", n)
	}
}

func TestPause_ShownDuringConnectAttempt(t *testing.T) {
	// A listener that accepts and never sends CONNACK keeps the loop in
	// its connect attempt until ConnectTimeout.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	accepted := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	opts := testOptions(&fakeBroker{ln: ln})
	opts.ConnectTimeout = 10 * time.Second
	r := start(t, opts, newMemSource(), &testJournal{}, nil)
	select {
	case c := <-accepted:
		t.Cleanup(func() { c.Close() })
	case <-time.After(3 * time.Second):
		t.Fatal("no connect attempt within 3s")
	}

	r.l.Pause()
	r.l.SetThrottle(5, 1024)
	s := r.l.Stats()
	if !s.Paused {
		t.Error("stats not paused right after Pause during a connect attempt")
	}
	if s.MessagesPerSecond != 5 || s.BytesPerSecond != 1024 {
		t.Errorf("stats throttle %g messages/s, %g bytes/s right after SetThrottle, want 5 and 1024",
			s.MessagesPerSecond, s.BytesPerSecond)
	}
	r.l.Resume()
	if r.l.Stats().Paused {
		t.Error("stats still paused right after Resume")
	}
}
