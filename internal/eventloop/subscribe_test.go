package eventloop

import (
	"reflect"
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
