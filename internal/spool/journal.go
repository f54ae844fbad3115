package spool

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"

	"github.com/mqspool/mqspool/internal/crashpoint"
	"github.com/mqspool/mqspool/internal/state"
)

// Commit applies the event loop's session changes in order in one fsync'd
// transaction. [state.ChangeKind] documents what each kind means. Commit
// returns nil only when every change is durable, and on error none of
// them is stored. ChangeFailed calls Options.Quarantine before deleting the
// message; when the quarantine fails, the message is kept instead.
//
// The event loop tries a failed Commit again with the same changes. A
// message that Quarantine took in the failed attempt is not handed to it
// again, so failed/ gets one copy however often the Commit is retried.
// NOTE: a daemon stopped before a retry succeeds keeps the message, and
// the next start can quarantine it a second time.
func (s *Spool) Commit(changes []state.Change) error {
	if len(changes) == 0 {
		return s.checkWritable()
	}
	crashpoint.Hit(crashpoint.JournalBeforeCommit)
	if err := crashpoint.CommitFault(); err != nil {
		return err
	}
	// A failed group commit runs each write again on its own, which would
	// call Quarantine twice, so a batch that quarantines commits alone.
	write := s.writeShared
	if slices.ContainsFunc(changes, func(c state.Change) bool { return c.Kind == state.ChangeFailed }) {
		write = s.write
	}
	arena := s.takeArena()
	defer s.putArena(arena)
	var copied []uint64
	freed := false
	err := write("commit session changes", func(tx *bolt.Tx, t *totals) error {
		j := journalTx{s: s, tx: tx, t: t, arena: arena}
		before := t.messages
		defer func() { copied, freed = j.copied, t.messages < before }()
		for i, c := range changes {
			if err := j.apply(c); err != nil {
				return fmt.Errorf("change %d of %d (%s, packet id %d, seq %d): %w", i+1, len(changes), c.Kind, c.PacketID, c.Seq, err)
			}
		}
		return j.finish()
	})
	s.noteCopiedToFailed(copied, err == nil)
	if err != nil {
		return err
	}
	crashpoint.Hit(crashpoint.JournalAfterCommit)
	if freed && s.opts.OnRoomFreed != nil {
		s.opts.OnRoomFreed()
	}
	return nil
}

// journalTx applies changes inside one write transaction.
type journalTx struct {
	s  *Spool
	tx *bolt.Tx
	t  *totals

	// lastPacketID and nextOrder are written to the meta bucket once, in
	// finish, instead of for every PUBLISH sent.
	lastPacketID uint16
	nextOrder    uint64

	// messages and flows are cursors reused by every seek of the
	// transaction, so each seek does not grow a new cursor's stack.
	messages, flows *bolt.Cursor

	// arena provides the keys and values put. A nil arena allocates each.
	arena *recordArena

	// copied lists the messages that are in failed/ once the transaction
	// commits, because Options.Quarantine took them in this attempt or in
	// a failed one.
	copied []uint64
}

// recordArena is the buffer of the keys and values that one Commit puts.
// bbolt uses them until the transaction ends, so the buffer is reused
// only by the next Commit, which spares an allocation per record.
type recordArena struct{ buf []byte }

// maxArenaKept bounds the buffer kept between commits.
const maxArenaKept = 1 << 20

// alloc returns n bytes that stay unchanged until reset. A nil arena
// allocates them.
func (a *recordArena) alloc(n int) []byte {
	if a == nil {
		return make([]byte, n)
	}
	if cap(a.buf)-len(a.buf) < n {
		// The full buffer stays with the records of the running
		// transaction, and the arena goes on in a new one.
		a.buf = make([]byte, 0, max(2*cap(a.buf), n, 4096))
	}
	start := len(a.buf)
	a.buf = a.buf[:start+n]
	return a.buf[start : start+n : start+n]
}

// takeArena returns the arena kept by the last Commit, or a new one.
func (s *Spool) takeArena() *recordArena {
	if a := s.arena.Swap(nil); a != nil {
		return a
	}
	return &recordArena{}
}

// putArena keeps a for the next Commit. The transactions that used it
// have ended.
func (s *Spool) putArena(a *recordArena) {
	if cap(a.buf) > maxArenaKept {
		return
	}
	a.buf = a.buf[:0]
	s.arena.Store(a)
}

// packetKey returns the key of packet identifier id in the flows and
// incoming buckets, in the arena.
func (j *journalTx) packetKey(id uint16) []byte {
	k := j.arena.alloc(2)
	binary.BigEndian.PutUint16(k, id)
	return k
}

func (j *journalTx) messageCursor() *bolt.Cursor {
	if j.messages == nil {
		j.messages = j.tx.Bucket(bucketMessages).Cursor()
	}
	return j.messages
}

func (j *journalTx) flowCursor() *bolt.Cursor {
	if j.flows == nil {
		j.flows = j.tx.Bucket(bucketFlows).Cursor()
	}
	return j.flows
}

// finish stores the last packet identifier and the next order number of
// the PUBLISH packets sent in this transaction.
func (j *journalTx) finish() error {
	if j.lastPacketID == 0 {
		return nil
	}
	if err := j.meta().Put(keyLastPacketID, binary.BigEndian.AppendUint16(nil, j.lastPacketID)); err != nil {
		return err
	}
	if j.nextOrder > getU64(j.meta(), keyNextOrder) {
		return putU64(j.meta(), keyNextOrder, j.nextOrder)
	}
	return nil
}

func (j *journalTx) apply(c state.Change) error {
	switch c.Kind {
	case state.ChangeSessionStarted:
		if err := j.clearSession(); err != nil {
			return err
		}
		return j.meta().Put(keySession, []byte{1})
	case state.ChangeSessionLost:
		return j.clearSession()
	case state.ChangeSent:
		return j.sent(c)
	case state.ChangePubrec:
		return j.pubrec(c)
	case state.ChangeAcked, state.ChangeCompleted:
		return j.endFlow(c, true)
	case state.ChangeReleased:
		return j.endFlow(c, false)
	case state.ChangeDelivered:
		return j.deleteMessage(c.Seq)
	case state.ChangeExpired:
		return j.expire(c.Seq)
	case state.ChangeFailed:
		return j.fail(c)
	case state.ChangeIncomingStored:
		return j.tx.Bucket(bucketIncoming).Put(j.packetKey(c.PacketID), []byte{})
	case state.ChangeIncomingReleased:
		var key [2]byte
		binary.BigEndian.PutUint16(key[:], c.PacketID)
		return j.tx.Bucket(bucketIncoming).Delete(key[:])
	default:
		return fmt.Errorf("unknown change kind %d: this build cannot journal it", c.Kind)
	}
}

func (j *journalTx) meta() *bolt.Bucket { return j.tx.Bucket(bucketMeta) }

// clearSession drops every flow and incoming id by recreating the buckets.
func (j *journalTx) clearSession() error {
	j.flows = nil
	for _, name := range [][]byte{bucketFlows, bucketIncoming} {
		if err := j.tx.DeleteBucket(name); err != nil {
			return fmt.Errorf("clear bucket %s: %w", name, err)
		}
		if _, err := j.tx.CreateBucket(name); err != nil {
			return fmt.Errorf("recreate bucket %s: %w", name, err)
		}
	}
	return nil
}

func (j *journalTx) sent(c state.Change) error {
	if c.PacketID == 0 {
		return fmt.Errorf("packet id 0 is invalid for a flow")
	}
	f := state.Flow{PacketID: c.PacketID, Seq: c.Seq, QoS: c.QoS, Stage: state.StagePublish, Order: c.Order}
	if err := j.putFlow(f); err != nil {
		return err
	}
	j.lastPacketID = c.PacketID
	j.nextOrder = max(j.nextOrder, c.Order+1)
	return nil
}

// pubrec moves a flow to the PUBREL stage. The message stays in the spool
// until PUBCOMP: a broker that forwards a QoS 2 message only on PUBREL,
// as mosquitto does, loses it with the session until then, and the
// message is published again if that happens. A missing flow record is
// rebuilt from the change, so that the PUBREL is still resent and PUBCOMP
// deletes the message.
func (j *journalTx) pubrec(c state.Change) error {
	f, ok := j.flow(c.PacketID)
	if !ok {
		j.s.log.Warn("pubrec for a packet id without a flow record; recording it from the change",
			"packet_id", c.PacketID, "seq", c.Seq)
		f = state.Flow{PacketID: c.PacketID, Seq: c.Seq, QoS: 2, Order: c.Order}
	}
	f.Stage = state.StagePubrel
	return j.putFlow(f)
}

// endFlow deletes the flow and, for PUBACK and PUBCOMP, its message.
func (j *journalTx) endFlow(c state.Change, deleteMessage bool) error {
	f, ok, err := j.takeFlow(c.PacketID)
	if err != nil {
		return err
	}
	if !deleteMessage {
		return nil
	}
	seq := c.Seq
	if ok {
		seq = flowSeq(c, f)
	}
	return j.deleteMessage(seq)
}

// takeFlow deletes the flow record of a packet identifier and returns it,
// with one cursor seek. A record that does not decode is deleted too and
// reported as missing.
func (j *journalTx) takeFlow(id uint16) (state.Flow, bool, error) {
	v, found := j.seekFlow(id)
	if !found {
		return state.Flow{}, false, nil
	}
	var f state.Flow
	ok := f.UnmarshalBinary(v) == nil
	if err := j.flowCursor().Delete(); err != nil {
		return state.Flow{}, false, fmt.Errorf("delete flow of packet id %d: %w", id, err)
	}
	return f, ok, nil
}

func (j *journalTx) expire(seq uint64) error {
	deleted, err := j.deleteIfPresent(seq)
	if deleted {
		j.t.expired++
	}
	return err
}

// fail hands the message to Options.Quarantine, then deletes it and its
// flow. A message already gone (dropped to make room, for example) is
// only logged.
//
// When the quarantine fails (failed/ unwritable, or the disk full) the
// message stays in the spool and only its flow ends. The loop has moved
// past it, so it no longer holds up delivery. The next start sends it
// again and, if the broker still rejects it, tries failed/ again. Failing
// the commit instead would stop the daemon on every rejection.
func (j *journalTx) fail(c state.Change) error {
	seq := c.Seq
	if f, ok := j.flow(c.PacketID); ok && c.PacketID != 0 {
		seq = flowSeq(c, f)
	}
	keep := false
	raw := j.tx.Bucket(bucketMessages).Get(seqKey(seq))
	switch {
	case raw == nil:
		j.s.log.Warn("failed message is no longer in the spool", "seq", seq, "reason", c.Reason)
	case j.s.isCopiedToFailed(seq):
		j.copied = append(j.copied, seq) // taken by an earlier attempt that failed
	default:
		if err := j.s.quarantine(seq, raw, c.Reason); err != nil {
			j.s.log.Error("could not move a failed message to failed/; it stays in the spool "+
				"and is sent again after the next start: check that failed/ is a writable directory",
				"seq", seq, "reason", c.Reason, "err", err)
			keep = true
		} else {
			j.copied = append(j.copied, seq)
		}
	}
	return j.endFlow(state.Change{PacketID: c.PacketID, Seq: seq}, !keep)
}

// isCopiedToFailed reports whether Options.Quarantine took message seq in
// a Commit that failed.
func (s *Spool) isCopiedToFailed(seq uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.copiedToFailed[seq]
}

// noteCopiedToFailed records the messages that Options.Quarantine took in
// a Commit, until that Commit succeeds and deletes them.
func (s *Spool) noteCopiedToFailed(seqs []uint64, committed bool) {
	if len(seqs) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, seq := range seqs {
		if committed {
			delete(s.copiedToFailed, seq)
		} else {
			s.copiedToFailed[seq] = true
		}
	}
}

// flowSeq prefers the sequence number in the change and falls back to
// the flow record's.
func flowSeq(c state.Change, f state.Flow) uint64 {
	if c.Seq != 0 {
		return c.Seq
	}
	return f.Seq
}

func (j *journalTx) flow(id uint16) (state.Flow, bool) {
	v, found := j.seekFlow(id)
	if !found || v == nil {
		return state.Flow{}, false
	}
	var f state.Flow
	if err := f.UnmarshalBinary(v); err != nil {
		return state.Flow{}, false
	}
	return f, true
}

// seekFlow moves the flow cursor to the record of packet identifier id
// and returns its value, if the record exists.
func (j *journalTx) seekFlow(id uint16) ([]byte, bool) {
	var key [2]byte
	binary.BigEndian.PutUint16(key[:], id)
	k, v := j.flowCursor().Seek(key[:])
	return v, bytes.Equal(k, key[:])
}

func (j *journalTx) putFlow(f state.Flow) error {
	v, err := f.AppendBinary(j.arena.alloc(state.FlowRecordSize)[:0])
	if err != nil {
		return err
	}
	return j.tx.Bucket(bucketFlows).Put(j.packetKey(f.PacketID), v)
}

func (j *journalTx) deleteMessage(seq uint64) error {
	_, err := j.deleteIfPresent(seq)
	return err
}

// deleteIfPresent deletes a message and updates the totals. Deleting a
// message that is already gone (dropped, or a repeated change) is not an
// error.
func (j *journalTx) deleteIfPresent(seq uint64) (bool, error) {
	return deleteMessage(j.messageCursor(), j.t, seq)
}

// deleteMessage deletes message seq with c, a cursor on the messages
// bucket, and updates the totals.
func deleteMessage(c *bolt.Cursor, t *totals, seq uint64) (bool, error) {
	// One cursor seek finds and deletes the record; Get and then Delete
	// would walk the tree twice.
	var want [8]byte
	binary.BigEndian.PutUint64(want[:], seq)
	k, v := c.Seek(want[:])
	if !bytes.Equal(k, want[:]) {
		return false, nil
	}
	size := len(v)
	if err := c.Delete(); err != nil {
		return false, fmt.Errorf("delete message %d: %w", seq, err)
	}
	t.messages--
	t.bytes -= int64(size)
	return true, nil
}

// LoadState rebuilds the session state from the journal. A flow record
// that does not decode is logged and deleted, and the session flag is
// cleared, so the next CONNECT uses Clean Start 1 instead of resuming a
// session whose flows are not all known.
func (s *Spool) LoadState() (*state.State, error) {
	st := &state.State{}
	var bad [][]byte
	err := s.view("load session state", func(tx *bolt.Tx) error {
		var err error
		bad, err = readState(tx, st, s)
		return err
	})
	if err != nil || len(bad) == 0 {
		return st, err
	}
	st.Session = false
	if s.opts.ReadOnly {
		return st, nil
	}

	err = s.write("drop unreadable flows", func(tx *bolt.Tx, _ *totals) error {
		for _, k := range bad {
			if err := tx.Bucket(bucketFlows).Delete(k); err != nil {
				return err
			}
		}
		return tx.Bucket(bucketMeta).Put(keySession, []byte{0})
	})
	return st, err
}

// readState fills st and returns the keys of flow records that failed to
// decode.
func readState(tx *bolt.Tx, st *state.State, s *Spool) ([][]byte, error) {
	meta := tx.Bucket(bucketMeta)
	v := meta.Get(keySession)
	st.Session = len(v) == 1 && v[0] == 1
	st.NextOrder = getU64(meta, keyNextOrder)
	if v := meta.Get(keyLastPacketID); len(v) == 2 {
		st.LastPacketID = binary.BigEndian.Uint16(v)
	}

	var bad [][]byte
	err := tx.Bucket(bucketFlows).ForEach(func(k, v []byte) error {
		var f state.Flow
		if err := f.UnmarshalBinary(v); err != nil || len(k) != 2 || f.PacketID != binary.BigEndian.Uint16(k) {
			s.log.Error("dropped an unreadable flow record; the next connect starts a new session",
				"key", fmt.Sprintf("%x", k), "error", err)
			bad = append(bad, slices.Clone(k))
			return nil
		}
		st.Outgoing = append(st.Outgoing, f)
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortStableFunc(st.Outgoing, func(a, b state.Flow) int { return cmpU64(a.Order, b.Order) })

	err = tx.Bucket(bucketIncoming).ForEach(func(k, _ []byte) error {
		if len(k) == 2 {
			st.IncomingQoS2 = append(st.IncomingQoS2, binary.BigEndian.Uint16(k))
		}
		return nil
	})
	return bad, err
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// SaveState replaces the journal's session state with st in one
// transaction. The daemon calls it on shutdown with the loop's final
// state.
func (s *Spool) SaveState(st *state.State) error {
	return s.write("save session state", func(tx *bolt.Tx, t *totals) error {
		j := journalTx{s: s, tx: tx, t: t}
		if err := j.clearSession(); err != nil {
			return err
		}
		for _, f := range st.Outgoing {
			if err := j.putFlow(f); err != nil {
				return err
			}
		}
		for _, id := range st.IncomingQoS2 {
			if err := tx.Bucket(bucketIncoming).Put(j.packetKey(id), []byte{}); err != nil {
				return err
			}
		}
		session := byte(0)
		if st.Session {
			session = 1
		}
		meta := tx.Bucket(bucketMeta)
		if err := meta.Put(keySession, []byte{session}); err != nil {
			return err
		}
		if err := meta.Put(keyLastPacketID, binary.BigEndian.AppendUint16(nil, st.LastPacketID)); err != nil {
			return err
		}
		return putU64(meta, keyNextOrder, st.NextOrder)
	})
}
