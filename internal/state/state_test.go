package state

import (
	"errors"
	"reflect"
	"testing"
)

func equal(t *testing.T, what string, got, want any) {
	t.Helper()
	// States compare by their flows in send order, not by slice order.
	if g, ok := got.(*State); ok && g != nil {
		got = g.Sorted()
	}
	if w, ok := want.(*State); ok && w != nil {
		want = w.Sorted()
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s = %v, want %v", what, got, want)
	}
}

func TestAllocateSkipsOutstanding(t *testing.T) {
	s := &State{LastPacketID: 4, Outgoing: []Flow{{PacketID: 5}, {PacketID: 6}, {PacketID: 8}}}
	id, err := s.AllocatePacketID(nil)
	if err != nil {
		t.Fatal(err)
	}
	equal(t, "id", id, uint16(7))
	equal(t, "last id", s.LastPacketID, uint16(7))

	id, err = s.AllocatePacketID(nil)
	if err != nil {
		t.Fatal(err)
	}
	equal(t, "next id", id, uint16(9))
}

func TestAllocateWrapsPast65535(t *testing.T) {
	s := &State{LastPacketID: 65534, Outgoing: []Flow{{PacketID: 1}}}
	for _, want := range []uint16{65535, 2, 3} {
		id, err := s.AllocatePacketID(nil)
		if err != nil {
			t.Fatal(err)
		}
		equal(t, "id", id, want)
	}
}

func TestAllocateHonoursInUse(t *testing.T) {
	s := &State{}
	id, err := s.AllocatePacketID(func(id uint16) bool { return id < 10 })
	if err != nil {
		t.Fatal(err)
	}
	equal(t, "id", id, uint16(10))
}

func TestAllocateNeverReturnsOutstanding(t *testing.T) {
	s := &State{}
	outstanding := map[uint16]bool{}
	// 70 000 allocations wrap the id space once.
	for i := range 70_000 {
		id, err := s.AllocatePacketID(nil)
		if err != nil {
			t.Fatalf("allocation %d: %v", i, err)
		}
		if id == 0 || outstanding[id] {
			t.Fatalf("allocation %d returned id %d, which is outstanding or zero", i, id)
		}
		if err := s.Apply(Change{Kind: ChangeSent, PacketID: id, Seq: uint64(i)}); err != nil {
			t.Fatal(err)
		}
		outstanding[id] = true
		// Complete every flow except each hundredth, so long-lived ids
		// accumulate and the allocator has to step around them on wrap.
		if i%100 != 0 {
			if err := s.Apply(Change{Kind: ChangeAcked, PacketID: id}); err != nil {
				t.Fatal(err)
			}
			delete(outstanding, id)
		}
	}
}

func TestAllocateAllOutstanding(t *testing.T) {
	s := &State{}
	for id := 1; id <= 65535; id++ {
		s.Outgoing = append(s.Outgoing, Flow{PacketID: uint16(id)})
	}
	if _, err := s.AllocatePacketID(nil); !errors.Is(err, ErrNoPacketID) {
		t.Fatalf("error = %v, want ErrNoPacketID", err)
	}
}

func TestApplyEachKind(t *testing.T) {
	base := func() *State {
		return &State{
			Session: true, NextOrder: 3, LastPacketID: 2,
			Outgoing: []Flow{
				{PacketID: 1, Seq: 10, QoS: 1, Stage: StagePublish, Order: 1},
				{PacketID: 2, Seq: 11, QoS: 2, Stage: StagePublish, Order: 2},
			},
			IncomingQoS2: []uint16{5},
		}
	}
	cases := []struct {
		change Change
		want   func(s *State)
	}{
		{Change{Kind: ChangeSessionStarted}, func(s *State) { s.Outgoing, s.IncomingQoS2 = s.Outgoing[:0], s.IncomingQoS2[:0] }},
		{Change{Kind: ChangeSessionLost}, func(s *State) { s.Outgoing, s.IncomingQoS2 = s.Outgoing[:0], s.IncomingQoS2[:0] }},
		{Change{Kind: ChangeSent, PacketID: 7, Seq: 12, QoS: 1, Order: 3}, func(s *State) {
			s.Outgoing = append(s.Outgoing, Flow{PacketID: 7, Seq: 12, QoS: 1, Stage: StagePublish, Order: 3})
			s.LastPacketID, s.NextOrder = 7, 4
		}},
		{Change{Kind: ChangePubrec, PacketID: 2}, func(s *State) { s.Outgoing[1].Stage = StagePubrel }},
		{Change{Kind: ChangeAcked, PacketID: 1}, func(s *State) { s.Outgoing = s.Outgoing[1:] }},
		{Change{Kind: ChangeCompleted, PacketID: 2}, func(s *State) { s.Outgoing = s.Outgoing[:1] }},
		{Change{Kind: ChangeFailed, PacketID: 1}, func(s *State) { s.Outgoing = s.Outgoing[1:] }},
		{Change{Kind: ChangeReleased, PacketID: 2}, func(s *State) { s.Outgoing = s.Outgoing[:1] }},
		{Change{Kind: ChangeDelivered, Seq: 10}, func(*State) {}},
		{Change{Kind: ChangeExpired, Seq: 10}, func(*State) {}},
		{Change{Kind: ChangeIncomingStored, PacketID: 3}, func(s *State) { s.IncomingQoS2 = []uint16{3, 5} }},
		{Change{Kind: ChangeIncomingStored, PacketID: 5}, func(*State) {}},
		{Change{Kind: ChangeIncomingReleased, PacketID: 5}, func(s *State) { s.IncomingQoS2 = s.IncomingQoS2[:0] }},
		{Change{Kind: ChangeIncomingReleased, PacketID: 9}, func(*State) {}},
	}
	for _, tc := range cases {
		t.Run(tc.change.Kind.String(), func(t *testing.T) {
			got, want := base(), base()
			if err := got.Apply(tc.change); err != nil {
				t.Fatalf("Apply(%+v): %v", tc.change, err)
			}
			tc.want(want)
			equal(t, "state", got, want)
		})
	}
}

func TestApplyRejectsInvalid(t *testing.T) {
	s := &State{Outgoing: []Flow{{PacketID: 1}}}
	for name, c := range map[string]Change{
		"sent with id 0":      {Kind: ChangeSent},
		"sent with id in use": {Kind: ChangeSent, PacketID: 1},
		"pubrec for unknown":  {Kind: ChangePubrec, PacketID: 2},
		"unknown change kind": {Kind: 99},
		"zero change kind":    {},
	} {
		t.Run(name, func(t *testing.T) {
			if err := s.Clone().Apply(c); err == nil {
				t.Fatalf("Apply(%+v) succeeded", c)
			}
		})
	}
}

func TestChangeKindString(t *testing.T) {
	equal(t, "pubrec", ChangePubrec.String(), "pubrec")
	equal(t, "unknown", ChangeKind(99).String(), "change(99)")
}

func TestCloneIsDeep(t *testing.T) {
	s := &State{Outgoing: []Flow{{PacketID: 1}}, IncomingQoS2: []uint16{2}}
	c := s.Clone()
	c.Outgoing[0].PacketID = 9
	c.IncomingQoS2[0] = 9
	equal(t, "original flow id", s.Outgoing[0].PacketID, uint16(1))
	equal(t, "original incoming id", s.IncomingQoS2[0], uint16(2))
}

func TestFlowAfterOutgoingChangedByHand(t *testing.T) {
	s := &State{Outgoing: []Flow{{PacketID: 1, Seq: 10}, {PacketID: 2, Seq: 11}}}
	if f, ok := s.Flow(2); !ok || f.Seq != 11 {
		t.Fatalf("Flow(2) = %+v, %t, want seq 11", f, ok)
	}

	// Same length, other identifier: the stale entry of 2 is noticed and
	// the index rebuilt.
	s.Outgoing[1] = Flow{PacketID: 9, Seq: 12}
	if _, ok := s.Flow(2); ok {
		t.Errorf("Flow(2) found after it was replaced")
	}
	if f, ok := s.Flow(9); !ok || f.Seq != 12 {
		t.Errorf("Flow(9) after replacing flow 2 = %+v, %t, want seq 12", f, ok)
	}

	s.LastPacketID = 8
	if id, err := s.AllocatePacketID(nil); err != nil || id != 10 {
		t.Errorf("AllocatePacketID after 8 = %d, %v, want 10: 9 is taken", id, err)
	}
}

func TestFlowIndexPastEndOfOutgoing(t *testing.T) {
	// A duplicate identifier makes the index hold fewer entries than
	// Outgoing, and replacing the flows by hand can then leave an entry
	// that points past the end of a slice of the index's length.
	s := &State{Outgoing: []Flow{{PacketID: 1}, {PacketID: 1}, {PacketID: 2, Seq: 11}}}
	if f, ok := s.Flow(2); !ok || f.Seq != 11 {
		t.Fatalf("Flow(2) = %+v, %t, want seq 11", f, ok)
	}

	s.Outgoing = []Flow{{PacketID: 5, Seq: 12}, {PacketID: 2, Seq: 13}}
	if f, ok := s.Flow(2); !ok || f.Seq != 13 {
		t.Errorf("Flow(2) after replacing the flows = %+v, %t, want seq 13", f, ok)
	}
}
