package spool

import (
	"cmp"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// wallSteps follows steps of the wall clock while the process runs, so
// that a message stamped before a step does not look older or newer by
// the step. A gateway without a battery-backed clock often boots with a
// wrong date and steps it when NTP first responds. Without this, a message
// spooled before that step would look years old at send time and its
// Message Expiry Interval would drop it at once.
//
// The offset of a moment is its wall time minus CLOCK_BOOTTIME, which
// counts time since boot including suspend. It changes only when the wall
// clock is set or slewed, not across a suspend, after which a message is
// as old as the wall clock says. Each append that sees a new offset
// starts a regime at its first sequence number.
type wallSteps struct {
	// offsetNow returns the offset of the present moment; tests replace
	// it, because they cannot step the machine's clock.
	offsetNow func() time.Duration

	mu      sync.Mutex
	regimes atomic.Pointer[[]wallRegime] // replaced, never changed in place
}

// wallRegime is a range of sequence numbers stamped with one offset.
type wallRegime struct {
	firstSeq uint64
	offset   time.Duration
}

const (
	// minWallStep is the smallest change of the offset that starts a
	// regime. NTP slews at most 500 ppm, about 1.8 s an hour, so slewing
	// alone starts a regime rarely.
	minWallStep = 2 * time.Second
	// maxWallRegimes bounds the regimes kept. Past it the oldest is
	// forgotten, and its messages are aged by their stamps alone.
	maxWallRegimes = 64
)

func newWallSteps() *wallSteps {
	return &wallSteps{offsetNow: bootOffset(time.Now())}
}

// bootOffset returns the function that measures the offset of the
// present moment. Where CLOCK_BOOTTIME cannot be read it falls back to
// Go's monotonic clock since start, which stops during a suspend.
func bootOffset(start time.Time) func() time.Duration {
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts) != nil {
		return func() time.Duration {
			now := time.Now()
			return now.Round(0).Sub(start.Round(0)) - now.Sub(start)
		}
	}
	var last atomic.Int64
	last.Store(time.Now().UnixNano() - ts.Nano())
	return func() time.Duration {
		var boot unix.Timespec
		wall := time.Now()
		if unix.ClockGettime(unix.CLOCK_BOOTTIME, &boot) == nil {
			last.Store(wall.UnixNano() - boot.Nano())
		}
		return time.Duration(last.Load())
	}
}

// note records that the messages from firstSeq on were stamped at a
// moment of offset off.
func (w *wallSteps) note(firstSeq uint64, off time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()

	var current []wallRegime
	if p := w.regimes.Load(); p != nil {
		current = *p
	}
	if n := len(current); n > 0 && (off-current[n-1].offset).Abs() < minWallStep {
		return
	}
	next := append(slices.Clone(current), wallRegime{firstSeq: firstSeq, offset: off})
	if len(next) > maxWallRegimes {
		next = next[1:]
	}
	w.regimes.Store(&next)
}

// shift returns enqueued, the stamp of message seq, moved by the steps of
// the wall clock between its append and a moment of offset now. Messages
// appended before this process started are returned unchanged.
func (w *wallSteps) shift(seq uint64, enqueued time.Time, now time.Duration) time.Time {
	p := w.regimes.Load()
	if p == nil || len(*p) == 0 || seq < (*p)[0].firstSeq {
		return enqueued
	}
	regimes := *p
	i, _ := slices.BinarySearchFunc(regimes, seq, func(r wallRegime, seq uint64) int {
		return cmp.Compare(r.firstSeq, seq+1)
	})
	return enqueued.Add(now - regimes[i-1].offset)
}
