package spool

import (
	"encoding/binary"
	"errors"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/mqspool/mqspool/internal/message"
	"github.com/mqspool/mqspool/internal/state"
)

func mustCommit(t testing.TB, s *Spool, changes ...state.Change) {
	t.Helper()
	if err := s.Commit(changes); err != nil {
		t.Fatalf("Commit(%v): %v", changes, err)
	}
}

func mustLoadState(t testing.TB, s *Spool) *state.State {
	t.Helper()
	st, err := s.LoadState()
	if err != nil {
		t.Fatalf("LoadState: %v", err)
	}
	return st
}

func present(t testing.TB, s *Spool, seq uint64) bool {
	t.Helper()
	_, err := s.Load(seq)
	if err != nil && !errors.Is(err, ErrNotFound) {
		t.Fatalf("Load(%d): %v", seq, err)
	}
	return err == nil
}

func sent(id uint16, seq uint64, qos byte) state.Change {
	return state.Change{Kind: state.ChangeSent, PacketID: id, Seq: seq, QoS: qos, Order: seq}
}

func TestCommitChangeKinds(t *testing.T) {
	cases := []struct {
		name        string
		changes     []state.Change
		wantPresent []uint64 // of seqs 1..3
		wantFlows   []state.Flow
		wantExpired uint64
	}{
		{
			name:        "sent keeps message",
			changes:     []state.Change{sent(1, 1, 1)},
			wantPresent: []uint64{1, 2, 3},
			wantFlows:   []state.Flow{{PacketID: 1, Seq: 1, QoS: 1, Stage: state.StagePublish, Order: 1}},
		},
		{
			name:        "acked deletes message and flow",
			changes:     []state.Change{sent(1, 1, 1), {Kind: state.ChangeAcked, PacketID: 1, Seq: 1}},
			wantPresent: []uint64{2, 3},
		},
		{
			name:        "pubrec keeps message and moves flow",
			changes:     []state.Change{sent(1, 2, 2), {Kind: state.ChangePubrec, PacketID: 1, Seq: 2}},
			wantPresent: []uint64{1, 2, 3},
			wantFlows:   []state.Flow{{PacketID: 1, Seq: 2, QoS: 2, Stage: state.StagePubrel, Order: 2}},
		},
		{
			name: "completed deletes flow and message",
			changes: []state.Change{sent(1, 2, 2), {Kind: state.ChangePubrec, PacketID: 1, Seq: 2},
				{Kind: state.ChangeCompleted, PacketID: 1}},
			wantPresent: []uint64{1, 3},
		},
		{
			// A database written by a version that deleted the message at
			// PUBREC has flows at StagePubrel without their message.
			name: "completed without message",
			changes: []state.Change{sent(1, 2, 2), {Kind: state.ChangePubrec, PacketID: 1, Seq: 2},
				{Kind: state.ChangeDelivered, Seq: 2}, {Kind: state.ChangeCompleted, PacketID: 1}},
			wantPresent: []uint64{1, 3},
		},
		{
			name:        "delivered deletes message",
			changes:     []state.Change{{Kind: state.ChangeDelivered, Seq: 3}},
			wantPresent: []uint64{1, 2},
		},
		{
			name:        "expired deletes and counts",
			changes:     []state.Change{{Kind: state.ChangeExpired, Seq: 1}},
			wantPresent: []uint64{2, 3},
			wantExpired: 1,
		},
		{
			name:        "released keeps message",
			changes:     []state.Change{sent(5, 3, 1), {Kind: state.ChangeReleased, PacketID: 5, Seq: 3}},
			wantPresent: []uint64{1, 2, 3},
		},
		{
			name:        "session lost clears flows",
			changes:     []state.Change{sent(1, 1, 1), sent(2, 2, 2), {Kind: state.ChangeSessionLost}},
			wantPresent: []uint64{1, 2, 3},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := openSpool(t, testOptions(t))
			mustAppend(t, s, batch("a", 0, 3))
			mustCommit(t, s, tc.changes...)

			var got []uint64
			for seq := uint64(1); seq <= 3; seq++ {
				if present(t, s, seq) {
					got = append(got, seq)
				}
			}
			equal(t, "present seqs", got, tc.wantPresent)
			equal(t, "flows", mustLoadState(t, s).Outgoing, tc.wantFlows)
			equal(t, "stats flows", s.Stats().Flows, len(tc.wantFlows))
			equal(t, "stats messages", s.Stats().Messages, int64(len(tc.wantPresent)))
			equal(t, "expired", s.Stats().Expired, tc.wantExpired)
		})
	}
}

func TestCommitFailedQuarantinesFirst(t *testing.T) {
	var q quarantined
	opts := testOptions(t)
	opts.Quarantine = q.fn
	s := openSpool(t, opts)
	mustAppend(t, s, batch("a", 0, 2))

	mustCommit(t, s, sent(9, 2, 1), state.Change{Kind: state.ChangeFailed, PacketID: 9, Seq: 2, Reason: "0x87 not authorized"})
	equal(t, "quarantined seqs", q.seqs, []uint64{2})
	equal(t, "quarantined payload", string(q.msgs[0].Payload), "payload 1")
	equal(t, "reason", q.reasons[0], "0x87 not authorized")
	equal(t, "seq 2 present", present(t, s, 2), false)
	equal(t, "flows", len(mustLoadState(t, s).Outgoing), 0)
}

func TestCommitFailedKeepsMessageOnQuarantineError(t *testing.T) {
	opts := testOptions(t)
	opts.Quarantine = func(uint64, *message.Message, []byte, string) error { return errors.New("disk full") }
	s := openSpool(t, opts)
	mustAppend(t, s, batch("a", 0, 1))

	mustCommit(t, s, sent(4, 1, 1), state.Change{Kind: state.ChangeFailed, PacketID: 4, Seq: 1, Reason: "r"})
	equal(t, "seq 1 present", present(t, s, 1), true)
	equal(t, "stats messages", s.Stats().Messages, int64(1))
	equal(t, "flows", len(mustLoadState(t, s).Outgoing), 0)
}

// The event loop retries a failed Commit with the same changes. A
// message that Quarantine took in a failed attempt is not handed to it
// again, so failed/ gets one copy. The change with packet id 0 makes the
// transaction fail after the quarantine, as a full disk would at fsync.
func TestCommitFailedRetryQuarantinesOnce(t *testing.T) {
	var q quarantined
	opts := testOptions(t)
	opts.Quarantine = q.fn
	s := openSpool(t, opts)
	mustAppend(t, s, batch("a", 0, 2))
	failed := state.Change{Kind: state.ChangeFailed, PacketID: 9, Seq: 2, Reason: "0x87 not authorized"}

	for attempt := 1; attempt <= 3; attempt++ {
		if err := s.Commit([]state.Change{sent(9, 2, 1), failed, sent(0, 1, 1)}); err == nil {
			t.Fatalf("attempt %d: Commit with packet id 0 succeeded, want an error", attempt)
		}
	}
	equal(t, "seq 2 present after failed commits", present(t, s, 2), true)
	mustCommit(t, s, sent(9, 2, 1), failed)

	equal(t, "quarantined seqs", q.seqs, []uint64{2})
	equal(t, "seq 2 present", present(t, s, 2), false)
	equal(t, "stats messages", s.Stats().Messages, int64(1))
}

// After PUBREC the message stays stored, so that it can be published
// again if the broker loses the session before it forwards the message.
func TestPubrecKeepsMessage(t *testing.T) {
	opts := testOptions(t)
	s, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	mustAppend(t, s, batch("a", 0, 1))
	mustCommit(t, s, sent(3, 1, 2))

	// Read the file with bbolt directly, so the test reads only what was
	// committed.
	mustCommit(t, s, state.Change{Kind: state.ChangePubrec, PacketID: 3, Seq: 1})
	s.Close()

	db, err := bolt.Open(opts.Path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketMessages).Get(seqKey(1)) == nil {
			t.Error("message deleted at PUBREC, want it kept until PUBCOMP")
		}
		var f state.Flow
		if err := f.UnmarshalBinary(tx.Bucket(bucketFlows).Get(packetKey(3))); err != nil {
			t.Fatalf("flow record: %v", err)
		}
		equal(t, "stage", f.Stage, state.StagePubrel)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestPubrecRollsBackWithBatch(t *testing.T) {
	s := openSpool(t, testOptions(t))
	mustAppend(t, s, batch("a", 0, 1))
	mustCommit(t, s, sent(3, 1, 2))

	// An unknown kind later in the batch fails the whole transaction, so
	// the PUBREC before it must not be half applied.
	err := s.Commit([]state.Change{{Kind: state.ChangePubrec, PacketID: 3, Seq: 1}, {Kind: 200}})
	if err == nil {
		t.Fatal("Commit accepted an unknown change kind")
	}
	equal(t, "message present", present(t, s, 1), true)
	equal(t, "stage", mustLoadState(t, s).Outgoing[0].Stage, state.StagePublish)
}

func TestStateRoundTripThroughReopen(t *testing.T) {
	opts := testOptions(t)
	s, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	mustAppend(t, s, batch("a", 0, 4))
	mustCommit(t, s,
		state.Change{Kind: state.ChangeSessionStarted},
		state.Change{Kind: state.ChangeSent, PacketID: 10, Seq: 1, QoS: 1, Order: 5},
		state.Change{Kind: state.ChangeSent, PacketID: 11, Seq: 2, QoS: 2, Order: 6},
		state.Change{Kind: state.ChangePubrec, PacketID: 11, Seq: 2},
		state.Change{Kind: state.ChangeSent, PacketID: 12, Seq: 3, QoS: 2, Order: 7},
		state.Change{Kind: state.ChangeIncomingStored, PacketID: 40},
		state.Change{Kind: state.ChangeIncomingStored, PacketID: 30},
		state.Change{Kind: state.ChangeIncomingReleased, PacketID: 40},
	)

	// Replaying the same changes on a State must give what the journal
	// stores.
	want := &state.State{}
	for _, c := range []state.Change{
		{Kind: state.ChangeSessionStarted},
		{Kind: state.ChangeSent, PacketID: 10, Seq: 1, QoS: 1, Order: 5},
		{Kind: state.ChangeSent, PacketID: 11, Seq: 2, QoS: 2, Order: 6},
		{Kind: state.ChangePubrec, PacketID: 11, Seq: 2},
		{Kind: state.ChangeSent, PacketID: 12, Seq: 3, QoS: 2, Order: 7},
		{Kind: state.ChangeIncomingStored, PacketID: 40},
		{Kind: state.ChangeIncomingStored, PacketID: 30},
		{Kind: state.ChangeIncomingReleased, PacketID: 40},
	} {
		if err := want.Apply(c); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()

	s = openSpool(t, opts)
	equal(t, "state", mustLoadState(t, s), want)
}

func TestSaveStateReplacesJournal(t *testing.T) {
	opts := testOptions(t)
	s, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	mustCommit(t, s, sent(1, 1, 1), state.Change{Kind: state.ChangeIncomingStored, PacketID: 2})
	want := &state.State{
		Session: true, NextOrder: 9, LastPacketID: 65535,
		Outgoing:     []state.Flow{{PacketID: 65535, Seq: 4, QoS: 2, Stage: state.StagePubrel, Order: 8}},
		IncomingQoS2: []uint16{7},
	}
	if err := s.SaveState(want); err != nil {
		t.Fatalf("SaveState: %v", err)
	}
	s.Close()

	s = openSpool(t, opts)
	equal(t, "state", mustLoadState(t, s), want)
	equal(t, "stats flows", s.Stats().Flows, 1)
	equal(t, "stats incoming", s.Stats().Incoming, 1)
}

func TestLoadStateDropsUnreadableFlow(t *testing.T) {
	opts := testOptions(t)
	s, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	mustCommit(t, s, state.Change{Kind: state.ChangeSessionStarted}, sent(1, 1, 1), sent(2, 2, 1))
	s.Close()

	db, err := bolt.Open(opts.Path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketFlows).Put(packetKey(2), []byte("garbage"))
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}

	s = openSpool(t, opts)
	st := mustLoadState(t, s)
	equal(t, "session", st.Session, false)
	equal(t, "flows", len(st.Outgoing), 1)
	equal(t, "flows after reload", len(mustLoadState(t, s).Outgoing), 1)
	equal(t, "stats flows", s.Stats().Flows, 1)
}

// packetKey returns the flows and incoming buckets' key of id.
func packetKey(id uint16) []byte { return binary.BigEndian.AppendUint16(nil, id) }

// Commits reuse one buffer for the keys and values they put, and a large
// commit outgrows it. Records of earlier commits and of the earlier parts
// of a large one must come back unchanged.
func TestCommit_ReusedBufferKeepsRecords(t *testing.T) {
	opts := testOptions(t)
	s := openSpool(t, opts)
	mustAppend(t, s, batch("a", 0, 1000))

	want := &state.State{}
	commit := func(changes []state.Change) {
		t.Helper()
		mustCommit(t, s, changes...)
		for _, c := range changes {
			if err := want.Apply(c); err != nil {
				t.Fatal(err)
			}
		}
	}
	var changes []state.Change
	for seq := uint64(1); seq <= 600; seq++ { // about 16 KiB of records
		changes = append(changes, sent(uint16(seq), seq, 2))
	}
	commit(append(changes, state.Change{Kind: state.ChangeIncomingStored, PacketID: 7}))
	for round := range 5 {
		changes = changes[:0]
		for i := range 80 {
			seq := uint64(round*80 + i + 1)
			changes = append(changes, state.Change{Kind: state.ChangePubrec, PacketID: uint16(seq), Seq: seq},
				sent(uint16(600+seq), 600+seq, 1))
		}
		commit(changes)
	}
	s.Close()

	s = openSpool(t, opts)
	equal(t, "state", mustLoadState(t, s), want)
}

// A writer waiting for room hears of it when a commit deletes messages:
// QoS 1 at PUBACK, QoS 2 only at PUBCOMP, since PUBREC keeps the message.
func TestCommitRoomFreedHook(t *testing.T) {
	opts := testOptions(t)
	calls := 0
	opts.OnRoomFreed = func() { calls++ }
	s := openSpool(t, opts)
	mustAppend(t, s, batch("a", 1, 2))

	steps := []struct {
		name    string
		changes []state.Change
		want    int
	}{
		{"publish qos 1 and 2", []state.Change{sent(1, 1, 1), sent(2, 2, 2)}, 0},
		{"puback", []state.Change{{Kind: state.ChangeAcked, PacketID: 1, Seq: 1}}, 1},
		{"pubrec", []state.Change{{Kind: state.ChangePubrec, PacketID: 2, Seq: 2}}, 1},
		{"pubcomp", []state.Change{{Kind: state.ChangeCompleted, PacketID: 2}}, 2},
	}
	for _, step := range steps {
		mustCommit(t, s, step.changes...)
		if calls != step.want {
			t.Errorf("after %s: OnRoomFreed called %d times, want %d", step.name, calls, step.want)
		}
	}
}
