package spool

import (
	"fmt"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/mqspool/mqspool/internal/state"
)

// droppedMessage is logged after the transaction that dropped it commits.
type droppedMessage struct {
	seq  uint64
	size int
}

// checkRoom makes room for n records of size bytes or returns why not. Under
// OverflowDropOldest it deletes the oldest messages that are not in an
// open flow, recording them in drops.
func (s *Spool) checkRoom(tx *bolt.Tx, t *totals, id FileID, n, size int64, drops *[]droppedMessage) error {
	maxMsgs, maxBytes := s.opts.MaxMessages, s.opts.MaxBytes
	switch {
	case maxMsgs > 0 && n > maxMsgs:
		return fmt.Errorf("%w: %s has %d messages, more than spool.max_messages (%d): raise it or split the file",
			ErrTooLarge, id.Name, n, maxMsgs)
	case maxBytes > 0 && size > maxBytes:
		return fmt.Errorf("%w: %s has %d bytes of messages, more than spool.max_bytes (%d): raise it or split the file",
			ErrTooLarge, id.Name, size, maxBytes)
	}
	if s.fits(t, n, size) {
		return nil
	}
	if s.opts.Overflow == OverflowReject {
		return fmt.Errorf("%w: %s needs %d messages and %d bytes, %d messages and %d bytes are queued", ErrFull, id.Name, n, size, t.messages, t.bytes)
	}

	dropped, err := s.dropOldest(tx, t, n, size)
	*drops = append(*drops, dropped...)
	if err != nil {
		return err
	}
	if !s.fits(t, n, size) {
		return fmt.Errorf("%w: %s does not fit even after dropping, because the remaining messages are in flight", ErrFull, id.Name)
	}
	return nil
}

func (s *Spool) fits(t *totals, n, size int64) bool {
	if s.opts.MaxMessages > 0 && t.messages+n > s.opts.MaxMessages {
		return false
	}
	if s.opts.MaxBytes > 0 && t.bytes+size > s.opts.MaxBytes {
		return false
	}
	return true
}

// dropOldest deletes messages from the head of the queue, skipping those
// in open flows, until n records of size bytes fit. It deletes nothing
// when they would not fit even then.
func (s *Spool) dropOldest(tx *bolt.Tx, t *totals, n, size int64) ([]droppedMessage, error) {
	inFlight, err := flowSeqs(tx)
	if err != nil {
		return nil, err
	}

	// Collect first and delete after, because a bbolt cursor skips an
	// element when the current one is deleted under it.
	var victims []droppedMessage
	msgs, bytes := t.messages, t.bytes
	c := tx.Bucket(bucketMessages).Cursor()
	for k, v := c.First(); k != nil && !s.fitsAfter(msgs, bytes, n, size); k, v = c.Next() {
		seq := keySeq(k)
		if _, ok := inFlight[seq]; ok {
			continue
		}
		victims = append(victims, droppedMessage{seq: seq, size: len(v)})
		msgs--
		bytes -= int64(len(v))
	}
	if !s.fitsAfter(msgs, bytes, n, size) {
		return nil, nil
	}

	b := tx.Bucket(bucketMessages)
	for _, d := range victims {
		if err := b.Delete(seqKey(d.seq)); err != nil {
			return nil, fmt.Errorf("drop message %d: %w", d.seq, err)
		}
		t.messages--
		t.bytes -= int64(d.size)
		t.dropped++
	}
	return victims, nil
}

func (s *Spool) fitsAfter(msgs, bytes, n, size int64) bool {
	t := totals{messages: msgs, bytes: bytes}
	return s.fits(&t, n, size)
}

// flowSeqs returns the sequence numbers of messages in open flows. A flow
// record that does not decode is ignored here; LoadState reports it.
func flowSeqs(tx *bolt.Tx) (map[uint64]struct{}, error) {
	seqs := map[uint64]struct{}{}
	err := tx.Bucket(bucketFlows).ForEach(func(_, v []byte) error {
		var f state.Flow
		if f.UnmarshalBinary(v) == nil {
			seqs[f.Seq] = struct{}{}
		}
		return nil
	})
	return seqs, err
}

// dropLogEvery limits the warnings about messages that drop-oldest
// deleted. A long overflow drops a message for each one it takes in, and
// the status and metrics count every drop.
const dropLogEvery = time.Minute

// dropLog limits the drop warnings to one at once and then one per
// dropLogEvery, each with the count and size since the one before. Drops
// held back are logged when the interval ends, even if none follow, and
// at Close, so every drop reaches the log.
type dropLog struct {
	mu       sync.Mutex
	every    time.Duration
	last     time.Time
	messages int
	bytes    int
	lastSeq  uint64
	timer    *time.Timer
	// closed is set by Close. An append that committed before Close
	// reports its drops after it, and they are logged at once.
	closed bool
}

// reportDrops logs the messages that a committed append dropped and
// passes each to Options.OnDrop.
func (s *Spool) reportDrops(drops []droppedMessage) {
	if len(drops) == 0 {
		return
	}
	s.logDrops(drops)
	if s.opts.OnDrop != nil {
		for _, d := range drops {
			s.opts.OnDrop(d.seq)
		}
	}
}

func (s *Spool) logDrops(drops []droppedMessage) {
	l := &s.drops
	l.mu.Lock()
	defer l.mu.Unlock()

	for _, d := range drops {
		l.messages++
		l.bytes += d.size
	}
	l.lastSeq = drops[len(drops)-1].seq

	wait := l.every - time.Since(l.last)
	if l.last.IsZero() || wait <= 0 || l.closed {
		s.flushDropsLocked()
		return
	}
	if l.timer == nil {
		l.timer = time.AfterFunc(wait, s.flushDrops)
	}
}

// flushDrops logs the drops held back since the last warning.
func (s *Spool) flushDrops() {
	s.drops.mu.Lock()
	defer s.drops.mu.Unlock()
	s.flushDropsLocked()
}

// closeDrops logs the drops held back and makes later drops log at once.
func (s *Spool) closeDrops() {
	s.drops.mu.Lock()
	defer s.drops.mu.Unlock()
	s.drops.closed = true
	s.flushDropsLocked()
}

func (s *Spool) flushDropsLocked() {
	l := &s.drops
	if l.timer != nil {
		l.timer.Stop()
		l.timer = nil
	}
	if l.messages == 0 {
		return
	}
	s.log.Warn("spool is full; dropped the oldest messages (spool.overflow is drop-oldest)",
		"dropped", l.messages, "bytes", l.bytes, "last_seq", l.lastSeq,
		"next_log_after", l.every)
	l.last, l.messages, l.bytes = time.Now(), 0, 0
}
