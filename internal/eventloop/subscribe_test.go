package eventloop

import (
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"

	"github.com/mqspool/mqspool/internal/state"
)

func TestDiffSubscriptions(t *testing.T) {
	a := Subscription{Filter: "a/#", QoS: 1, Identifier: 1}
	b := Subscription{Filter: "b/#", QoS: 2, Identifier: 2}
	bQoS1 := b
	bQoS1.QoS = 1
	bRenumbered := b
	bRenumbered.Identifier = 1
	cases := []struct {
		name       string
		have, want []Subscription
		add        []Subscription
		remove     []string
	}{
		{"no session", nil, []Subscription{a, b}, []Subscription{a, b}, nil},
		{"unchanged", []Subscription{a, b}, []Subscription{a, b}, nil, nil},
		{"removed", []Subscription{a, b}, []Subscription{b}, nil, []string{"a/#"}},
		{"added", []Subscription{a}, []Subscription{a, b}, []Subscription{b}, nil},
		{"options changed", []Subscription{a, b}, []Subscription{a, bQoS1}, []Subscription{bQoS1}, nil},
		{"identifier changed", []Subscription{a, b}, []Subscription{bRenumbered}, []Subscription{bRenumbered}, []string{"a/#"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			add, remove := diffSubscriptions(c.have, c.want)
			if !reflect.DeepEqual(add, c.add) {
				t.Errorf("add = %v, want %v", add, c.add)
			}
			if !reflect.DeepEqual(remove, c.remove) {
				t.Errorf("remove = %v, want %v", remove, c.remove)
			}
		})
	}
}

// lastSubscribed returns the Subscribed of the last EventSubscribed.
func (r *runner) lastSubscribed() *Subscribed {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := len(r.events) - 1; i >= 0; i-- {
		if r.events[i].Kind == EventSubscribed {
			return r.events[i].Subscribed
		}
	}
	return nil
}

func TestSubscribe_IdentifiersAndRejection(t *testing.T) {
	b := newFakeBroker(t, brokerScript{subackCode: func(filter string) byte {
		if filter == "denied/#" {
			return 0x87
		}
		return 1
	}})
	opts := testOptions(b)
	opts.Subscriptions = []Subscription{
		{Filter: "a/#", QoS: 1, Identifier: 1},
		{Filter: "denied/#", QoS: 1, Identifier: 2},
	}
	r := start(t, opts, newMemSource(), &testJournal{}, nil)
	waitFor(t, 3*time.Second, "subscribed event", func() bool { return r.lastSubscribed() != nil })

	subs := b.received(packets.SUBSCRIBE)
	if len(subs) != 2 {
		t.Fatalf("%d SUBSCRIBE packets, want one per identifier", len(subs))
	}
	for i, want := range []int{1, 2} {
		if subs[i].subID != want || len(subs[i].filters) != 1 {
			t.Errorf("SUBSCRIBE %d: identifier %d filters %v, want identifier %d alone", i, subs[i].subID, subs[i].filters, want)
		}
	}
	got := r.lastSubscribed()
	if len(got.Session) != 1 || got.Session[0].Filter != "a/#" {
		t.Errorf("session subscriptions = %v, want only a/#", got.Session)
	}
	if len(got.Rejected) != 1 || got.Rejected[0] != (SubscriptionError{Filter: "denied/#", Reason: "0x87 not authorized"}) {
		t.Errorf("rejected = %v, want denied/# with 0x87 not authorized", got.Rejected)
	}
	if st := r.l.Stats(); len(st.RejectedSubscriptions) != 1 {
		t.Errorf("stats rejected = %v, want one entry", st.RejectedSubscriptions)
	}
}

func TestSubscribe_ResumedSessionSendsDifference(t *testing.T) {
	b := newFakeBroker(t, brokerScript{sessionPresent: func(int) bool { return true }})
	opts := testOptions(b)
	kept := Subscription{Filter: "kept/#", QoS: 1, Identifier: 1}
	opts.SessionSubscriptions = []Subscription{kept, {Filter: "old/#", QoS: 1, Identifier: 2}}
	opts.Subscriptions = []Subscription{kept, {Filter: "new/#", QoS: 2, Identifier: 2}}
	restored := &state.State{Session: true}
	r := start(t, opts, newMemSource(), &testJournal{}, restored)
	waitFor(t, 3*time.Second, "subscribed event", func() bool { return r.lastSubscribed() != nil })

	unsubs := b.received(packets.UNSUBSCRIBE)
	if len(unsubs) != 1 || len(unsubs[0].filters) != 1 || unsubs[0].filters[0] != "old/#" {
		t.Errorf("UNSUBSCRIBE packets = %+v, want one for old/#", unsubs)
	}
	subs := b.received(packets.SUBSCRIBE)
	if len(subs) != 1 || subs[0].filters[0] != "new/#" {
		t.Errorf("SUBSCRIBE packets = %+v, want one for new/# only", subs)
	}
	got := r.lastSubscribed().Session
	if len(got) != 2 || got[0] != kept || got[1].Filter != "new/#" {
		t.Errorf("session subscriptions = %v, want kept/# and new/#", got)
	}
}

func TestSubscribe_WithoutIdentifiers(t *testing.T) {
	b := newFakeBroker(t, brokerScript{noSubscriptionIDs: true})
	opts := testOptions(b)
	opts.Subscriptions = []Subscription{{Filter: "a/#", QoS: 1, Identifier: 1}, {Filter: "b/#", QoS: 1, Identifier: 2}}
	r := start(t, opts, newMemSource(), &testJournal{}, nil)
	waitFor(t, 3*time.Second, "subscribed event", func() bool { return r.lastSubscribed() != nil })

	subs := b.received(packets.SUBSCRIBE)
	if len(subs) != 1 || len(subs[0].filters) != 2 || subs[0].subID != 0 {
		t.Errorf("SUBSCRIBE packets = %+v, want one with both filters and no identifier", subs)
	}
	for _, s := range r.lastSubscribed().Session {
		if s.Identifier != 0 {
			t.Errorf("session subscription %s has identifier %d, want 0", s.Filter, s.Identifier)
		}
	}
}

// The sizes that splitToFit works with must be the sizes the codec
// writes, or a packet could exceed the broker's Maximum Packet Size by
// the byte a longer Remaining Length or identifier takes.
func TestSubscribePacketBytes_MatchesCodec(t *testing.T) {
	filters := map[string][]string{
		"one short":                  {"a"},
		"remaining length 127":       {strings.Repeat("f", 119)},
		"remaining length 128":       {strings.Repeat("f", 120)},
		"remaining length 16384":     {strings.Repeat("f", 8000), strings.Repeat("g", 8375)},
		"several":                    {"a/#", "b/+/c", "$share/g/d"},
		"longest filter":             {strings.Repeat("f", 65535)},
		"empty list for the headers": nil,
	}
	for name, list := range filters {
		for _, identifier := range []int{0, 1, 127, 128, 16384, maxSubscriptionIdentifier} {
			p := &subscribePacket{PacketID: 7, Identifier: identifier}
			entries := 0
			for _, f := range list {
				s := Subscription{Filter: f, QoS: 1}
				p.Subscriptions = append(p.Subscriptions, s)
				entries += subscribeEntryBytes(s)
			}
			data, err := mqtt5Codec{}.encode(p)
			if err != nil {
				t.Fatalf("%s, identifier %d: encode: %v", name, identifier, err)
			}
			if got := packetBytes(subscribeHeaderBytes(identifier) + entries); got != len(data) {
				t.Errorf("%s, identifier %d: SUBSCRIBE computed as %d bytes, codec wrote %d", name, identifier, got, len(data))
			}
		}

		entries := 0
		for _, f := range list {
			entries += unsubscribeEntryBytes(f)
		}
		data, err := mqtt5Codec{}.encode(&unsubscribePacket{PacketID: 7, Filters: list})
		if err != nil {
			t.Fatalf("%s: encode: %v", name, err)
		}
		if got := packetBytes(unsubscribeHeaderBytes + entries); got != len(data) {
			t.Errorf("%s: UNSUBSCRIBE computed as %d bytes, codec wrote %d", name, got, len(data))
		}
	}
}

func TestSplitToFit(t *testing.T) {
	sizes := func(n ...int) []int { return n }
	itemBytes := func(n int) int { return n }
	cases := []struct {
		name     string
		items    []int
		limit    int
		batches  [][]int
		tooLarge []int
	}{
		// A packet of header 3 and items is 1 + 1 + 3 + items bytes while
		// the Remaining Length stays below 128.
		{"all in one", sizes(10, 10, 10), 35, [][]int{{10, 10, 10}}, nil},
		{"split at the limit", sizes(10, 10, 10), 34, [][]int{{10, 10}, {10}}, nil},
		{"one per packet", sizes(10, 10), 15, [][]int{{10}, {10}}, nil},
		{"too large alone", sizes(10, 11, 10), 15, [][]int{{10}, {10}}, sizes(11)},
		{"order kept around a skip", sizes(5, 30, 5, 5), 20, [][]int{{5, 5, 5}}, sizes(30)},
		{"nothing fits", sizes(30), 20, nil, sizes(30)},
		// Remaining Length 128 takes two bytes: 3 + 125 = 128, so 131.
		{"longer remaining length", sizes(100, 25), 130, [][]int{{100}, {25}}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var skipped []int
			batches := splitToFit(c.items, 3, itemBytes, c.limit, func(n, _ int) { skipped = append(skipped, n) })
			if !reflect.DeepEqual(batches, c.batches) {
				t.Errorf("batches = %v, want %v", batches, c.batches)
			}
			if !reflect.DeepEqual(skipped, c.tooLarge) {
				t.Errorf("too large = %v, want %v", skipped, c.tooLarge)
			}
		})
	}
}

// A broker's Maximum Packet Size also limits SUBSCRIBE. The loop spreads
// the subscriptions over as many packets as fit, and one that is too
// large even alone is reported like a rejected one while the rest are
// subscribed. The fake broker ends the connection on a larger packet, as
// MQTT 5 requires of it.
func TestSubscribe_SplitToMaximumPacketSize(t *testing.T) {
	const limit = 64
	b := newFakeBroker(t, brokerScript{maximumPacketSize: limit})
	opts := testOptions(b)
	logs := &lockedBuffer{}
	opts.Logger = slog.New(slog.NewTextHandler(logs, nil))
	long := strings.Repeat("x", limit)
	var fitting []string
	for i := range 6 {
		f := fmt.Sprintf("plain/filter/%d", i)
		fitting = append(fitting, f)
		opts.Subscriptions = append(opts.Subscriptions, Subscription{Filter: f, QoS: 1})
	}
	opts.Subscriptions = append(opts.Subscriptions,
		Subscription{Filter: "long/" + long, QoS: 1},
		Subscription{Filter: "with/identifier", QoS: 1, Identifier: 300},
		Subscription{Filter: "long/identifier/" + long, QoS: 1, Identifier: 301},
	)
	fitting = append(fitting, "with/identifier")
	r := start(t, opts, newMemSource(), &testJournal{}, nil)
	waitFor(t, 3*time.Second, "subscribed event", func() bool { return r.lastSubscribed() != nil })

	subs := b.received(packets.SUBSCRIBE)
	var sent []string
	for _, s := range subs {
		if s.size > limit {
			t.Errorf("SUBSCRIBE of %d bytes for %v, want at most %d", s.size, s.filters, limit)
		}
		sent = append(sent, s.filters...)
	}
	if len(subs) != 3 {
		t.Errorf("%d SUBSCRIBE packets, want 3: two for six filters and one for the identifier", len(subs))
	}
	slices.Sort(sent)
	slices.Sort(fitting)
	if !slices.Equal(sent, fitting) {
		t.Errorf("filters sent = %v, want %v", sent, fitting)
	}
	if n := len(b.received(packets.DISCONNECT)); n != 0 {
		t.Errorf("%d DISCONNECT packets from the client, want 0", n)
	}
	if st := r.l.Stats(); !st.Connected {
		t.Errorf("stats connected = false, want the connection kept")
	}

	got := r.lastSubscribed()
	if len(got.Session) != len(fitting) {
		t.Errorf("session subscriptions = %v, want the %d that fit", got.Session, len(fitting))
	}
	if len(got.Rejected) != 2 {
		t.Fatalf("rejected = %v, want the two long filters", got.Rejected)
	}
	for _, rejected := range got.Rejected {
		if !strings.HasPrefix(rejected.Filter, "long/") {
			t.Errorf("rejected filter %q, want only the long ones", rejected.Filter)
		}
		if !strings.Contains(rejected.Reason, "Maximum Packet Size of 64 bytes") {
			t.Errorf("rejected reason %q, want the broker's limit", rejected.Reason)
		}
	}
	if st := r.l.Stats(); len(st.RejectedSubscriptions) != 2 {
		t.Errorf("stats rejected = %v, want the two long filters", st.RejectedSubscriptions)
	}
	out := logs.String()
	if n := strings.Count(out, "level=ERROR msg=\"subscription not sent"); n != 2 {
		t.Errorf("%d errors about a SUBSCRIBE over the limit, want 2:\n%s", n, out)
	}
	if !strings.Contains(out, "maximum_packet_size=64") || !strings.Contains(out, "filter=long/"+long) {
		t.Errorf("log without the limit or the filter:\n%s", out)
	}
}

// When no subscription fits, no SUBACK arrives, and the rejections must
// still be reported.
func TestSubscribe_NoneFitsStillReported(t *testing.T) {
	b := newFakeBroker(t, brokerScript{maximumPacketSize: 32})
	opts := testOptions(b)
	opts.Subscriptions = []Subscription{{Filter: strings.Repeat("x", 40), QoS: 1}}
	r := start(t, opts, newMemSource(), &testJournal{}, nil)
	waitFor(t, 3*time.Second, "subscribed event", func() bool { return r.lastSubscribed() != nil })

	if n := len(b.received(packets.SUBSCRIBE)); n != 0 {
		t.Errorf("%d SUBSCRIBE packets, want 0", n)
	}
	got := r.lastSubscribed()
	if len(got.Rejected) != 1 || got.Rejected[0].Filter != opts.Subscriptions[0].Filter {
		t.Errorf("rejected = %v, want the one filter", got.Rejected)
	}
	if len(got.Session) != 0 {
		t.Errorf("session subscriptions = %v, want none", got.Session)
	}
	if st := r.l.Stats(); len(st.RejectedSubscriptions) != 1 {
		t.Errorf("stats rejected = %v, want one entry", st.RejectedSubscriptions)
	}
}

// UNSUBSCRIBE for filters dropped from the configuration is split the same
// way, so a resumed session can drop many filters on a small broker. A
// filter too long for any UNSUBSCRIBE stays in the session.
func TestSubscribe_UnsubscribeSplitToMaximumPacketSize(t *testing.T) {
	const limit = 40
	b := newFakeBroker(t, brokerScript{maximumPacketSize: limit, sessionPresent: func(int) bool { return true }})
	opts := testOptions(b)
	logs := &lockedBuffer{}
	opts.Logger = slog.New(slog.NewTextHandler(logs, nil))
	var old []string
	for i := range 5 {
		f := fmt.Sprintf("old/filter/%d", i)
		old = append(old, f)
		opts.SessionSubscriptions = append(opts.SessionSubscriptions, Subscription{Filter: f, QoS: 1})
	}
	long := Subscription{Filter: "old/" + strings.Repeat("x", limit), QoS: 1}
	opts.SessionSubscriptions = append(opts.SessionSubscriptions, long)
	opts.Subscriptions = []Subscription{{Filter: "kept/#", QoS: 1}}
	r := start(t, opts, newMemSource(), &testJournal{}, &state.State{Session: true})
	waitFor(t, 3*time.Second, "subscribed event", func() bool { return r.lastSubscribed() != nil })

	unsubs := b.received(packets.UNSUBSCRIBE)
	var sent []string
	for _, u := range unsubs {
		if u.size > limit {
			t.Errorf("UNSUBSCRIBE of %d bytes for %v, want at most %d", u.size, u.filters, limit)
		}
		sent = append(sent, u.filters...)
	}
	if len(unsubs) < 2 {
		t.Errorf("%d UNSUBSCRIBE packets, want the five filters split over several", len(unsubs))
	}
	if !slices.Equal(sent, old) {
		t.Errorf("filters unsubscribed = %v, want %v in order", sent, old)
	}
	got := r.lastSubscribed().Session
	if len(got) != 2 || got[0] != long || got[1].Filter != "kept/#" {
		t.Errorf("session subscriptions = %v, want the long filter and kept/#", got)
	}
	if out := logs.String(); !strings.Contains(out, "level=WARN msg=\"unsubscribe not sent") {
		t.Errorf("log without a warning about the long filter:\n%s", out)
	}
}

// A write that fails while the subscriptions are sent ends the connection
// at once. The packets after it must be skipped, so that nothing reads the
// limits of the closed connection and no request waits for an ack that
// cannot come.
func TestSubscribe_WriteFailureStopsSync(t *testing.T) {
	b := newFakeBroker(t, brokerScript{})
	opts := testOptions(b)
	opts.Subscriptions = []Subscription{
		{Filter: "with/identifier", QoS: 1, Identifier: 7},
		{Filter: "long/" + strings.Repeat("x", 64), QoS: 1, Identifier: 8},
		{Filter: "plain", QoS: 1},
	}
	l, err := New(opts, newMemSource(), &testJournal{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })

	for _, tc := range []struct {
		name    string
		session []Subscription
	}{
		{"unsubscribe fails", []Subscription{{Filter: "old/filter", QoS: 1}}},
		{"subscribe fails", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l.conn = &connection{netConn: &recordingConn{failAfter: 1}, url: b.url(), gen: l.connGen,
				writeTimeout: time.Second, limits: &connackPacket{MaximumPacketSize: 64}, done: make(chan struct{})}
			l.subSession = tc.session
			l.syncSubscriptions(true, true)

			if l.conn != nil {
				t.Fatalf("connection kept after a failed write")
			}
			if n := len(l.subIDs); n != 0 {
				t.Errorf("%d requests wait for an ack after the connection ended, want 0", n)
			}
		})
	}
}
