package eventloop

import (
	"sync"

	"github.com/mqspool/mqspool/internal/state"
)

// committer hands session changes to the [Journal] from a goroutine of its
// own, so the loop's select never waits on the disk. Changes that pile up
// while a Commit runs go together in the next one (group commit).
type committer struct {
	journal Journal

	mu        sync.Mutex     // guards the fields below
	pending   []state.Change // changes not yet handed to the journal
	spare     []state.Change // the last batch committed, for reuse as pending
	queued    uint64         // tickets issued: one per change
	committed uint64         // tickets that the journal made durable
	err       error          // first Commit error; no commit follows it
	stopping  bool

	kick chan struct{} // wakes the goroutine; capacity 1
	done chan struct{} // receives after each commit; capacity 1
	wg   sync.WaitGroup
}

func newCommitter(j Journal) *committer {
	c := &committer{
		journal: j,
		kick:    make(chan struct{}, 1),
		done:    make(chan struct{}, 1),
	}
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
// journal's error, if any.
func (c *committer) progress() (queued, committed uint64, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.queued, c.committed, c.err
}

// stop commits what is pending, then ends the goroutine.
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
// whether the goroutine should keep running.
func (c *committer) commitPending() bool {
	for {
		c.mu.Lock()
		batch, stopping, failed := c.pending, c.stopping, c.err != nil
		c.pending, c.spare = c.spare, nil
		c.mu.Unlock()

		if len(batch) == 0 || failed {
			return !stopping
		}
		err := c.journal.Commit(batch)
		clear(batch)

		c.mu.Lock()
		c.spare = batch[:0]
		if err != nil {
			c.err = err
		} else {
			c.committed += uint64(len(batch))
		}
		c.mu.Unlock()
		notify(c.done)
	}
}

// notify sends on a channel of capacity 1 without blocking; a value
// already waiting carries the same news.
func notify(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
