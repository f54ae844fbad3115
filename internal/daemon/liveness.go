package daemon

import (
	"errors"
	"sync/atomic"
	"time"
)

// probeInterval bounds each Poll of the event loop while it is connected,
// so the goroutine that drives the loop comes back at least this often.
const probeInterval = time.Second

// liveness holds the heartbeats that the systemd watchdog checks.
//
// The event loop's heartbeat is taken each time Poll returns, with an
// event or at its deadline. Poll returns at that deadline only when the
// loop's own goroutine gets round to checking its context, so a loop stuck
// in a step stops the heartbeat.
//
// TODO: the pickup has no heartbeat of its own, so its liveness is only
// "Run has not returned"; a pickup stuck in a scan still gets pings.
type liveness struct {
	// nextBeat is the Unix time in nanoseconds by which Poll must have
	// returned again: its deadline plus a grace period.
	nextBeat    atomic.Int64
	pickupEnded atomic.Bool // the pickup's Run returned
}

// beatLoop records that Poll returned at now and that the next Poll may
// run for up to bound.
func (l *liveness) beatLoop(now time.Time, bound time.Duration) {
	l.nextBeat.Store(now.Add(bound + beatGrace).UnixNano())
}

// beatGrace allows for a slow machine between Poll's deadline and its
// return.
const beatGrace = 2 * time.Second

// Errors of check, one for each part that can stall. They carry no
// figures, so that the repeat limiter folds a stall that goes on.
var (
	errPickupStopped = errors.New("pickup stopped")
	errLoopOverdue   = errors.New("event loop poll is overdue")
)

// check returns an error naming the part that looks stalled and, for the
// event loop, how long its heartbeat is overdue.
func (l *liveness) check(now time.Time) (time.Duration, error) {
	if l.pickupEnded.Load() {
		return 0, errPickupStopped
	}
	due := time.Unix(0, l.nextBeat.Load())
	if late := now.Sub(due); late > 0 {
		return late, errLoopOverdue
	}
	return 0, nil
}
