package spool

import (
	"errors"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"

	"github.com/mqspool/mqspool/internal/bufstack"
)

// Cursor reads the queue in sequence order through a bounded read-ahead
// buffer. It deletes nothing: messages leave the spool only through
// [Spool.Commit]. Next and Load must be called from one goroutine; Ready
// may be used from any.
type Cursor struct {
	s     *Spool
	ready chan struct{}

	// Used only by the goroutine that calls Next.
	next uint64              // first sequence number not yet read
	buf  []Record            // read ahead and not yet returned
	pos  int                 // index of the next record in buf
	skip map[uint64]struct{} // sequence numbers in open flows at creation

	free      *bufstack.Stack // payloads handed back by Recycle, for reuse by fill
	lastTopic string          // topic of the last record read, shared by the next on the same topic
}

// recycleMaxTotal bounds the payload buffers a Cursor keeps for reuse.
const recycleMaxTotal = 1 << 20

// badRecord is a stored message that failed to decode.
type badRecord struct {
	seq uint64
	raw []byte
	err error
}

// NewCursor returns a cursor at the head of the queue. It skips messages
// that are in open flows now, because the event loop resends those from
// its restored state.
func (s *Spool) NewCursor() *Cursor {
	c := &Cursor{
		s: s, ready: make(chan struct{}, 1), next: 1,
		free: bufstack.New(64, recycleMaxTotal, recycleMaxTotal),
	}
	err := s.view("read open flows", func(tx *bolt.Tx) error {
		var err error
		c.skip, err = flowSeqs(tx)
		return err
	})
	if err != nil {
		s.log.Error("could not read open flows for a new cursor; their messages may be sent twice", "error", err)
	}

	s.mu.Lock()
	s.cursors[c] = struct{}{}
	s.mu.Unlock()
	c.ready <- struct{}{}
	return c
}

// Close stops Ready signals for this cursor.
func (c *Cursor) Close() {
	c.s.mu.Lock()
	delete(c.s.cursors, c)
	c.s.mu.Unlock()
}

// Ready returns a channel that receives a value after Append stored new
// messages, so a Next that returned ok false may now return more.
func (c *Cursor) Ready() <-chan struct{} { return c.ready }

// Next returns the next queued message, or ok false when there is none
// now. It does not wait for new messages, and a refill is one short read
// transaction. A record that fails its checksum is quarantined, deleted
// and skipped, which adds one write transaction to that call.
func (c *Cursor) Next() (Record, bool, error) {
	if c.pos == len(c.buf) {
		if err := c.fill(); err != nil {
			return Record{}, false, err
		}
		if len(c.buf) == 0 {
			return Record{}, false, nil
		}
	}
	r := c.buf[c.pos]
	c.buf[c.pos] = Record{}
	c.pos++
	c.s.shiftEnqueued(&r)
	return r, true, nil
}

// fill reads up to ReadAheadMessages or ReadAheadBytes after c.next.
func (c *Cursor) fill() error {
	c.buf, c.pos = c.buf[:0], 0
	var bad []badRecord
	err := c.s.view("read ahead", func(tx *bolt.Tx) error {
		bytes := 0
		cur := tx.Bucket(bucketMessages).Cursor()
		for k, v := cur.Seek(seqKey(c.next)); k != nil; k, v = cur.Next() {
			if len(c.buf) >= c.s.opts.ReadAheadMessages || bytes >= c.s.opts.ReadAheadBytes {
				break
			}
			seq := keySeq(k)
			c.next = seq + 1
			if _, ok := c.skip[seq]; ok {
				delete(c.skip, seq)
				continue
			}
			payload := c.free.Get()
			enqueued, m, used, err := decodeRecordInto(v, payload, c.lastTopic)
			if !used {
				c.Recycle(payload)
			}
			if err != nil {
				bad = append(bad, badRecord{seq: seq, raw: slices.Clone(v), err: err})
				continue
			}
			c.buf = append(c.buf, Record{Seq: seq, Enqueued: enqueued, Message: m})
			c.lastTopic = m.Topic
			bytes += len(v)
		}
		return nil
	})
	for _, b := range bad {
		c.s.dropCorrupt(b)
	}
	return err
}

// Recycle takes back the payload of a message returned by Next or Load,
// which the caller no longer uses, to decode a later message into. It
// must be called from the goroutine that calls Next.
func (c *Cursor) Recycle(payload []byte) {
	c.free.Put(payload)
}

// Load returns the message with seq, for a resend. It returns an error
// wrapping ErrNotFound when the message is gone, including when it failed
// its checksum and was quarantined now.
func (c *Cursor) Load(seq uint64) (Record, error) {
	return c.s.Load(seq)
}

// Load returns the message with seq; see [Cursor.Load].
func (s *Spool) Load(seq uint64) (Record, error) {
	var rec Record
	var bad *badRecord
	err := s.view("load message", func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketMessages).Get(seqKey(seq))
		if v == nil {
			return fmt.Errorf("seq %d: %w", seq, ErrNotFound)
		}
		enqueued, m, err := decodeRecord(v)
		if err != nil {
			bad = &badRecord{seq: seq, raw: slices.Clone(v), err: err}
			return nil
		}
		rec = Record{Seq: seq, Enqueued: enqueued, Message: m}
		return nil
	})
	if err != nil {
		return Record{}, err
	}
	if bad != nil {
		s.dropCorrupt(*bad)
		return Record{}, fmt.Errorf("seq %d was unreadable and quarantined: %w", seq, ErrNotFound)
	}
	s.shiftEnqueued(&rec)
	return rec, nil
}

// shiftEnqueued moves the stamp of a message with a Message Expiry
// Interval by the steps of the wall clock since its append, so that the
// event loop computes the time left from its true age.
func (s *Spool) shiftEnqueued(r *Record) {
	if r.Message.ExpirySeconds != 0 {
		r.Enqueued = s.wall.shift(r.Seq, r.Enqueued, s.wall.offsetNow())
	}
}

// List returns up to limit messages with sequence numbers above after,
// for paged inspection. Unreadable records are left out and logged.
func (s *Spool) List(after uint64, limit int) ([]Record, error) {
	var out []Record
	err := s.view("list messages", func(tx *bolt.Tx) error {
		cur := tx.Bucket(bucketMessages).Cursor()
		for k, v := cur.Seek(seqKey(after + 1)); k != nil && len(out) < limit; k, v = cur.Next() {
			enqueued, m, err := decodeRecord(v)
			if err != nil {
				s.log.Warn("skipped an unreadable message while listing", "seq", keySeq(k), "error", err)
				continue
			}
			out = append(out, Record{Seq: keySeq(k), Enqueued: enqueued, Message: m})
		}
		return nil
	})
	return out, err
}

// dropCorrupt hands an unreadable record to Options.Quarantine and deletes
// it in one transaction. When either fails, the record stays and is
// logged. A cursor that found it has already moved past it, so it cannot
// block the queue.
func (s *Spool) dropCorrupt(b badRecord) {
	err := s.write("quarantine unreadable message", func(tx *bolt.Tx, t *totals) error {
		if err := s.quarantine(b.seq, b.raw, "stored record is unreadable: "+b.err.Error()); err != nil {
			return err
		}
		_, err := deleteMessage(tx.Bucket(bucketMessages).Cursor(), t, b.seq)
		return err
	})
	if errors.Is(err, ErrReadOnly) {
		s.log.Warn("skipped an unreadable message in a read-only spool", "seq", b.seq, "error", b.err)
		return
	}
	if err != nil {
		s.log.Error("could not quarantine an unreadable message; it stays in the spool and is skipped",
			"seq", b.seq, "error", err)
		return
	}
	s.log.Error("quarantined an unreadable message", "seq", b.seq, "error", b.err)
}

// quarantine decodes raw when it can and calls Options.Quarantine with a
// copy of it.
func (s *Spool) quarantine(seq uint64, raw []byte, reason string) error {
	raw = slices.Clone(raw)
	_, m, err := decodeRecord(raw)
	msg := &m
	if err != nil {
		msg = nil
	}
	if s.opts.Quarantine == nil {
		s.log.Warn("no quarantine is configured; dropping the message", "seq", seq, "reason", reason)
		return nil
	}
	if err := s.opts.Quarantine(seq, msg, raw, reason); err != nil {
		return fmt.Errorf("quarantine message %d: %w", seq, err)
	}
	return nil
}
