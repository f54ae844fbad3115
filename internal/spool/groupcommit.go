package spool

import (
	bolt "go.etcd.io/bbolt"
)

// pendingWrite is a write waiting for the next group commit.
type pendingWrite struct {
	op   string
	fn   func(tx *bolt.Tx, t *totals) error
	done chan error // buffered, receives the write's result once
}

// writeShared runs fn in a write transaction that it may share with other
// writes queued while an earlier transaction was committing, so they pay
// for one fsync together. It adds no delay: a write that finds the writer
// idle commits at once. fn must change nothing outside tx and t, because
// it runs again on its own when another write in its group fails.
func (s *Spool) writeShared(op string, fn func(tx *bolt.Tx, t *totals) error) error {
	w := &pendingWrite{op: op, fn: fn, done: make(chan error, 1)}
	s.pendingMu.Lock()
	s.pending = append(s.pending, w)
	s.pendingMu.Unlock()

	// The next holder of writeMu commits everything queued, possibly
	// including w, so w may be done before this caller gets the lock.
	s.writeMu.Lock()
	s.pendingMu.Lock()
	group := s.pending
	s.pending = nil
	s.pendingMu.Unlock()
	if len(group) > 0 {
		s.commitGroup(group)
	}
	s.writeMu.Unlock()
	return <-w.done
}

// commitGroup commits group in one transaction, in queue order. When the
// shared transaction fails, each write runs again alone, so only the
// failing write reports an error. The caller holds writeMu.
func (s *Spool) commitGroup(group []*pendingWrite) {
	if len(group) == 1 {
		group[0].done <- s.writeLocked(group[0].op, group[0].fn)
		return
	}

	err := s.writeLocked("group commit", func(tx *bolt.Tx, t *totals) error {
		for _, w := range group {
			if err := w.fn(tx, t); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		s.pendingMu.Lock()
		s.groupCommits++
		s.pendingMu.Unlock()
		for _, w := range group {
			w.done <- nil
		}
		return
	}
	for _, w := range group {
		w.done <- s.writeLocked(w.op, w.fn)
	}
}
