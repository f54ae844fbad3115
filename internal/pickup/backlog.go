package pickup

import (
	"container/heap"
	"os"
	"slices"
	"time"
)

// DefaultQueueMax is the default of [Options.QueueMax].
const DefaultQueueMax = 16384

// minRefillGap is the shortest wait after a rescan that refilled nothing
// from a backlog in new/.
const minRefillGap = 100 * time.Millisecond

// reserveFactor sets the size of the reserve. A full scan that finds more
// files than fit in the queue keeps the paths and change times of the next
// reserveFactor*QueueMax, so refills need not list new/ until those are used.
const reserveFactor = 3

// oldest keeps the limit oldest of the candidates offered to it, by change
// time then name, and counts the others. Its memory is bounded by limit,
// however many files a directory holds.
type oldest struct {
	limit  int
	chosen candidateHeap
	left   int
}

// wants reports whether a candidate with change time ctime may be kept,
// before its path is built: one newer than every kept candidate is not,
// once sel is full.
func (o *oldest) wants(ctime int64) bool {
	return len(o.chosen) < o.limit || (o.limit > 0 && ctime <= o.chosen[0].ctime)
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
	return max(p.opts.QueueMax-len(p.queue)-p.inPlace(), 0)
}

// noteScan records what a scan of dir found beyond the queue: rest, the
// oldest of them in order, and the number left unlisted. A full scan
// replaces the reserve and the count; a scan of one directory only adds
// to the count.
func (p *Pickup) noteScan(dir string, rest []candidate, unlisted int) {
	if dir == "" {
		p.reserve, p.unlisted = rest, unlisted
	} else {
		p.reserve = append(p.reserve, rest...)
		p.unlisted += unlisted
	}
	if len(p.reserve) == 0 {
		p.reserve = nil
	}
	p.overflowed = len(p.reserve) > 0 || p.unlisted > 0
}

// waitingBeyond counts the files that wait in new/ beyond the queue.
func (p *Pickup) waitingBeyond() int {
	return len(p.reserve) + p.unlisted
}

// retriedAtRescan reports whether a scan leaves rel out of its listing.
// Every scan leaves out a bad file whose move to failed/ failed just now.
// A refill also leaves out a file that could not be read and a stored
// file that could not be removed. Later rescans retry them. A refill that
// listed them would queue them first each time, since they are the
// oldest, and the files behind them would wait for as long as they stay.
func (p *Pickup) retriedAtRescan(rel []byte) bool {
	if len(p.rejectHeld) == 0 && len(p.unreadable) == 0 && len(p.unremoved) == 0 {
		return false // the common case, without building a string
	}
	if p.rejectHeldBack(string(rel)) {
		return true
	}
	_, unreadable := p.unreadable[string(rel)]
	return p.refilling && (unreadable || p.unremoved[string(rel)])
}

// arrived queues a file that has just become ready: announced by an event,
// or written in place and settled. While files wait in new/ beyond the
// queue, the file waits with them for the rescan that queues them oldest
// first, because it became ready after them.
func (p *Pickup) arrived(rel string) {
	if p.overflowed && !p.queued[rel] {
		delete(p.settling, rel)
		delete(p.writing, rel)
		delete(p.tentative, rel)
		p.unlisted++
		return
	}
	p.enqueue(rel)
}

// inPlace counts the files written in place that are not queued yet:
// settling, or still open for writing. Each takes a place in the queue
// once it is complete. Every file in Pickup.writing is in Pickup.settling
// too, so it is counted once.
func (p *Pickup) inPlace() int {
	return len(p.settling)
}

// refillNeeded reports whether files wait in new/ beyond a queue that has
// fallen to a quarter of Options.QueueMax.
func (p *Pickup) refillNeeded() bool {
	return p.overflowed && len(p.queue)+p.inPlace() <= p.opts.QueueMax/4
}

// refillDue reports whether the queue is to be refilled now.
func (p *Pickup) refillDue() bool {
	return p.refillNeeded() && !p.now().Before(p.refillAt)
}

// refill queues the oldest files of the backlog: from the reserve that the
// last full scan listed, or, once that is used up, by a rescan. A rescan
// may queue nothing, as when the files it chose were removed meanwhile or
// are still being written. The next one then waits as long as this one
// took, so such a backlog costs at most half the time in listings.
func (p *Pickup) refill(w *watcher, ws *watches) {
	if len(p.reserve) > 0 {
		p.takeReserve()
		return
	}
	began, before := p.now(), len(p.queue)+p.inPlace()
	p.refilling = true
	p.rescan(w, ws, nil)
	p.refilling = false
	p.refillAt = time.Time{}
	if len(p.queue)+p.inPlace() <= before {
		p.refillAt = p.now().Add(max(minRefillGap, p.now().Sub(began)))
	}
}

// takeReserve queues files from the head of the reserve, as many as fit.
func (p *Pickup) takeReserve() {
	n := min(p.scanRoom(""), len(p.reserve))
	take := p.reserve[:n]
	p.noteScan("", p.reserve[n:], p.unlisted)
	p.considerAll(take)
}

// considerAll takes the lstat result of each of found, which a scan
// listed, and queues those that are ready.
func (p *Pickup) considerAll(found []candidate) {
	for _, c := range found {
		info, err := os.Lstat(p.abs(c.rel))
		if err != nil {
			info = nil
		}
		p.considerFound(c.rel, info)
	}
}
