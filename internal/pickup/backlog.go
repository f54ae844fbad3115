package pickup

import (
	"container/heap"
	"slices"
	"time"
)

// DefaultQueueMax is the default of [Options.QueueMax].
const DefaultQueueMax = 32768

// minRefillGap is the shortest wait after a rescan that refilled nothing
// from a backlog in new/.
const minRefillGap = 100 * time.Millisecond

// oldest keeps the limit oldest of the candidates offered to it, by change
// time then name, and counts the others. Its memory is bounded by limit,
// however many files a directory holds.
type oldest struct {
	limit  int
	chosen candidateHeap
	left   int
}

func (o *oldest) offer(c candidate) {
	switch {
	case len(o.chosen) < o.limit:
		o.chosen = append(o.chosen, c)
		if len(o.chosen) == o.limit {
			heap.Init(&o.chosen)
		}
	case o.limit > 0 && c.before(o.chosen[0]):
		o.chosen[0] = c
		heap.Fix(&o.chosen, 0)
		o.left++
	default:
		o.left++
	}
}

// sorted returns the kept candidates, oldest first.
func (o *oldest) sorted() []candidate {
	slices.SortFunc(o.chosen, func(a, b candidate) int {
		if a.before(b) {
			return -1
		}
		if b.before(a) {
			return 1
		}
		return 0
	})
	return o.chosen
}

// before orders candidates by change time, then name.
func (c candidate) before(d candidate) bool {
	if c.ctime != d.ctime {
		return c.ctime < d.ctime
	}
	return c.rel < d.rel
}

// candidateHeap is a max-heap: the newest candidate is at index 0.
type candidateHeap []candidate

func (h candidateHeap) Len() int           { return len(h) }
func (h candidateHeap) Less(i, j int) bool { return h[j].before(h[i]) }
func (h candidateHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *candidateHeap) Push(x any)        { *h = append(*h, x.(candidate)) }

func (h *candidateHeap) Pop() any {
	old := *h
	c := old[len(old)-1]
	*h = old[:len(old)-1]
	return c
}

// scanRoom is how many files a scan of dir may add to the queue. A full
// scan may fill the queue up to Options.QueueMax, counting files that
// settle first. While files wait in new/ beyond the queue, a scan of one
// directory adds none, since its files would go ahead of older ones.
func (p *Pickup) scanRoom(dir string) int {
	if dir != "" && p.overflowed {
		return 0
	}
	return max(p.opts.QueueMax-len(p.queue)-len(p.settling), 0)
}

// noteLeftOut records the files a scan of dir found but left in new/.
// A full scan counts the whole backlog; a scan of one directory adds to it.
func (p *Pickup) noteLeftOut(dir string, left int) {
	if dir == "" {
		p.overflowed, p.backlog = left > 0, left
		return
	}
	if left > 0 {
		p.overflowed = true
		p.backlog += left
	}
}

// arrived queues a file that an event announced. While files wait in new/
// beyond the queue, the newer file waits with them for the rescan that
// queues them oldest first. A file being settled was counted by a scan.
func (p *Pickup) arrived(rel string) {
	if _, tracked := p.settling[rel]; p.overflowed && !tracked && !p.queued[rel] {
		p.backlog++
		return
	}
	p.enqueue(rel)
}

// refillNeeded reports whether files wait in new/ beyond a queue that has
// fallen to a quarter of Options.QueueMax.
func (p *Pickup) refillNeeded() bool {
	return p.overflowed && len(p.queue)+len(p.settling) <= p.opts.QueueMax/4
}

// refillDue reports whether the rescan that refills the queue is due.
func (p *Pickup) refillDue() bool {
	return p.refillNeeded() && !p.now().Before(p.refillAt)
}

// refill runs the rescan that queues the oldest files of the backlog. A
// refill may queue nothing, as when every file left is one whose move to
// failed/ keeps failing. The next one then waits as long as this one took,
// so such a backlog costs at most half the time in listings.
func (p *Pickup) refill(w *watcher, ws *watches) {
	began, before := p.now(), len(p.queue)+len(p.settling)
	p.rescan(w, ws, nil)
	p.refillAt = time.Time{}
	if len(p.queue)+len(p.settling) <= before {
		p.refillAt = p.now().Add(max(minRefillGap, p.now().Sub(began)))
	}
}
