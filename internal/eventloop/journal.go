package eventloop

import (
	"sync"
	"time"

	"github.com/mqspool/mqspool/internal/state"
)

// Group commit under load. A commit has a fixed cost (two fsyncs in bbolt,
// the meta page, the upper pages of the trees): spool's
// BenchmarkCommitDrain measured it at about the CPU of 40 messages' own
// work. A large batch means changes arrive faster than commits finish, so
// after one the committer waits a little for more. It stops waiting when a
// whole lingerGap brought no change, because then the loop is waiting for
// this commit. A lone change after a quiet spell is committed at once.
const (
	// lingerFrom is the batch size from which the next commit waits.
	lingerFrom = 64
	// lingerUntil is the pending count that ends the wait early.
	lingerUntil = 1024
	// lingerFor is the longest wait, counted from the end of the last
	// commit.
	lingerFor = 8 * time.Millisecond
	// lingerGap ends the wait when one check interval this long brought
	// no new change.
	lingerGap = 500 * time.Microsecond
)

// commitRetryDelay is the wait before a failed Commit is tried again with
// the same changes, as when the disk is full until space is freed.
const commitRetryDelay = time.Second

// committer hands session changes to the [Journal] from a goroutine of its
// own, so the loop's select never waits on the disk. Changes that pile up
// while a Commit runs go together in the next one (group commit).
type committer struct {
	journal Journal

	// lingerFrom, lingerUntil, lingerFor, lingerGap and retryDelay are
	// the constants of the same names outside tests.
	lingerFrom, lingerUntil int
	lingerFor, lingerGap    time.Duration
	retryDelay              time.Duration

	mu        sync.Mutex     // guards the fields below
	pending   []state.Change // changes not yet handed to the journal
	spare     []state.Change // the last batch committed, for reuse as pending
	queued    uint64         // tickets issued: one per change
	committed uint64         // tickets that the journal made durable
	err       error          // error of the last Commit; nil once one succeeds
	stopping  bool

	kick chan struct{} // wakes the goroutine; capacity 1
	done chan struct{} // receives after each commit; capacity 1
	wg   sync.WaitGroup
}

func newCommitter(j Journal) *committer {
	return startCommitter(&committer{journal: j, lingerFrom: lingerFrom, lingerUntil: lingerUntil,
		lingerFor: lingerFor, lingerGap: lingerGap, retryDelay: commitRetryDelay})
}

// startCommitter starts the goroutine of c, which has its journal and
// linger fields set.
func startCommitter(c *committer) *committer {
	c.kick = make(chan struct{}, 1)
	c.done = make(chan struct{}, 1)
	c.wg.Add(1)
	go c.run()
	return c
}

// add queues changes and returns the ticket that is committed once all of
// them are durable.
func (c *committer) add(changes ...state.Change) uint64 {
	c.mu.Lock()
	c.pending = append(c.pending, changes...)
	c.queued += uint64(len(changes))
	ticket := c.queued
	c.mu.Unlock()
	notify(c.kick)
	return ticket
}

// progress returns the last issued ticket, the last durable ticket and the
// error of the last Commit while commits fail.
func (c *committer) progress() (queued, committed uint64, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.queued, c.committed, c.err
}

// stop commits what is pending, then ends the goroutine. While commits
// fail it tries once more, and what still fails stays uncommitted.
func (c *committer) stop() {
	c.mu.Lock()
	c.stopping = true
	c.mu.Unlock()
	notify(c.kick)
	c.wg.Wait()
}

func (c *committer) run() {
	defer c.wg.Done()
	for range c.kick {
		if !c.commitPending() {
			return
		}
	}
}

// commitPending commits every pending change in one call and reports
// whether the goroutine should keep running. After a large batch it
// lingers before the next one. A failed batch goes back in front of the
// changes added since, and is tried again after retryDelay.
func (c *committer) commitPending() bool {
	last := 0
	for {
		if last >= c.lingerFrom {
			c.linger()
		}
		c.mu.Lock()
		batch, stopping := c.pending, c.stopping
		c.pending, c.spare = c.spare, nil
		c.mu.Unlock()

		if len(batch) == 0 {
			return !stopping
		}
		if err := c.journal.Commit(batch); err != nil {
			c.failed(batch, err)
			if stopping {
				return false
			}
			c.waitRetry()
			last = 0
			continue
		}
		last = len(batch)
		clear(batch)

		c.mu.Lock()
		c.spare = batch[:0]
		c.err = nil
		c.committed += uint64(len(batch))
		c.mu.Unlock()
		notify(c.done)
	}
}

// failed puts batch, which the journal did not store, back in front of
// the pending changes and records err for progress.
func (c *committer) failed(batch []state.Change, err error) {
	c.mu.Lock()
	c.pending = append(batch, c.pending...)
	c.err = err
	c.mu.Unlock()
	notify(c.done)
}

// waitRetry waits retryDelay, or until stop is called. Changes added
// meanwhile do not end the wait.
func (c *committer) waitRetry() {
	t := time.NewTimer(c.retryDelay)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			return
		case <-c.kick:
			c.mu.Lock()
			stopping := c.stopping
			c.mu.Unlock()
			if stopping {
				return
			}
		}
	}
}

// linger waits until lingerUntil changes are pending, lingerFor has
// passed, a whole lingerGap went by without a new change, or stop is
// called.
func (c *committer) linger() {
	deadline := time.Now().Add(c.lingerFor)
	gap := time.NewTimer(min(c.lingerGap, c.lingerFor))
	defer gap.Stop()
	seen, done := c.lingerDone()
	for !done {
		select {
		case <-c.kick:
			_, done = c.lingerDone()
		case <-gap.C:
			var n int
			n, done = c.lingerDone()
			wait := time.Until(deadline)
			done = done || n == seen || wait <= 0
			seen = n
			gap.Reset(min(c.lingerGap, wait))
		}
	}
}

// lingerDone returns the pending count and whether it or a stop ends the
// wait.
func (c *committer) lingerDone() (int, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending), len(c.pending) >= c.lingerUntil || c.stopping
}

// notify sends on a channel of capacity 1 without blocking; a value
// already waiting carries the same news.
func notify(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
