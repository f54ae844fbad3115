package daemon

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mqspool/mqspool/internal/config"
	"github.com/mqspool/mqspool/internal/control"
	"github.com/mqspool/mqspool/internal/eventloop"
	"github.com/mqspool/mqspool/internal/spool"
)

// rateWindow is the smoothing of the in and out rates that status shows.
const rateWindow = 10 * time.Second

// rates turns the ingest and acknowledgement counters into smoothed
// per-second rates, sampled once a second by the daemon.
type rates struct {
	mu      sync.Mutex // guards the fields below
	lastIn  uint64
	lastOut uint64
	in, out float64
	primed  bool
}

func (r *rates) sample(in, out uint64, interval time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()

	if !r.primed {
		r.lastIn, r.lastOut, r.primed = in, out, true
		return
	}
	alpha := interval.Seconds() / rateWindow.Seconds()
	secs := interval.Seconds()
	r.in += alpha * (float64(in-r.lastIn)/secs - r.in)
	r.out += alpha * (float64(out-r.lastOut)/secs - r.out)
	r.lastIn, r.lastOut = in, out
}

func (r *rates) get() (in, out float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.in, r.out
}

// drainRate returns the rate at which the queue drains, in messages per
// second, for the time to drain: the measured rate out, no faster than
// the throttle allows, and 0 while paused or disconnected, when nothing
// drains.
func drainRate(out float64, ls eventloop.Stats, ss spool.Stats) float64 {
	if ls.Paused || !ls.Connected {
		return 0
	}
	rate := out
	if ls.MessagesPerSecond > 0 {
		rate = min(rate, ls.MessagesPerSecond)
	}
	if ls.BytesPerSecond > 0 && ss.Messages > 0 && ss.Bytes > 0 {
		rate = min(rate, ls.BytesPerSecond/(float64(ss.Bytes)/float64(ss.Messages)))
	}
	return rate
}

// controlHandler serves the control socket from the daemon's parts.
type controlHandler struct {
	d *Daemon
}

func (h controlHandler) Status() control.Status {
	d := h.d
	ls := d.loop.Stats()
	ss := d.spool.Stats()
	ps := d.pickup.Stats()
	failedFiles, failedBytes := d.pickup.FailedUsage()
	in, out := d.rates.get()

	st := control.Status{
		Connected:       ls.Connected,
		Broker:          ls.URL,
		SessionPresent:  ls.SessionPresent,
		ClientID:        d.clientIDValue,
		QueueMessages:   ss.Messages,
		QueueBytes:      ss.Bytes,
		Inflight:        ls.Inflight,
		RateIn:          in,
		RateOut:         out,
		Paused:          ls.Paused,
		Throttle:        config.Rate{MessagesPerSecond: ls.MessagesPerSecond, BytesPerSecond: ls.BytesPerSecond}.String(),
		DiskPressure:    ps.DiskPressure,
		SpoolFull:       ps.SpoolFull,
		FailedFiles:     failedFiles,
		FailedBytes:     failedBytes,
		StaleTmpFiles:   ps.StaleTmpFiles,
		WaitingFiles:    ps.Waiting,
		DroppedOverflow: ss.Dropped,
		LastError:       ls.LastError,
		Reconnects:      ls.Reconnects,
		Published:       ls.Published,
		Acknowledged:    ls.Acked,
		Failed:          ls.Failed,
		UptimeSecs:      time.Since(d.started).Seconds(),
		Subscriptions:   d.downlink.status(ls.RejectedSubscriptions),
	}
	st.FailedError, st.FailedKept = failedDirProblem(filepath.Join(d.cfg.Spool.Dir, "failed")), d.failedKept.Load()
	if ps.LastError != "" {
		st.IntakeError, st.IntakeErrorAgeSecs = ps.LastError, time.Since(ps.LastErrorAt).Seconds()
	}
	st.DamagedDatabase = d.spool.RenamedAside()
	d.dirLockMu.Lock()
	st.SpoolDirLockedElsewhere = d.dirClaimLost
	d.dirLockMu.Unlock()
	if pp := ps.Parted; pp.Path != "" {
		st.PartialFile = &control.PartialFile{Path: pp.Path, Stored: pp.Stored, Total: pp.Total}
	}
	if !ss.Oldest.IsZero() {
		st.OldestAgeSecs = time.Since(ss.Oldest).Seconds()
	}
	st.Stopping = d.stopping.Load()
	if rate := drainRate(out, ls, ss); rate > 0 {
		waiting := ss.Messages - min(int64(st.FailedKept), ss.Messages) // kept ones wait for the next start
		st.DrainETASecs = float64(waiting) / rate
	}
	return st
}

func (h controlHandler) Pause()  { h.d.loop.Pause() }
func (h controlHandler) Resume() { h.d.loop.Resume() }

// Reconnect makes the loop reconnect, unless the daemon is stopping.
func (h controlHandler) Reconnect() error {
	if h.d.stopping.Load() {
		return errors.New("the daemon is stopping, so it does not connect again: start it again to reconnect")
	}
	h.d.loop.Reconnect()
	return nil
}

func (h controlHandler) Wait(ctx context.Context, file string) control.WaitResult {
	return h.d.waits.wait(ctx, file)
}

// Throttle sets the rate that text names, a message or a byte rate, and
// keeps the other one; "off" clears both.
func (h controlHandler) Throttle(text string) error {
	r, err := config.ParseRate(text)
	if err != nil {
		return err
	}
	h.d.setThrottle(func(cur config.Rate) config.Rate {
		switch {
		case r.MessagesPerSecond > 0:
			cur.MessagesPerSecond = r.MessagesPerSecond
		case r.BytesPerSecond > 0:
			cur.BytesPerSecond = r.BytesPerSecond
		default:
			cur = config.Rate{}
		}
		return cur
	})
	return nil
}

// setThrottle gives the loop the limits that change makes of the current
// ones.
func (d *Daemon) setThrottle(change func(config.Rate) config.Rate) {
	d.throttleMu.Lock()
	defer d.throttleMu.Unlock()
	d.throttle = change(d.throttle)
	d.loop.SetThrottle(d.throttle.MessagesPerSecond, d.throttle.BytesPerSecond)
}

// fileThrottle returns the limits of the throttle settings in cfg.
func fileThrottle(cfg *config.Config) config.Rate {
	return config.Rate{MessagesPerSecond: cfg.Throttle.MessagesPerSecond, BytesPerSecond: float64(cfg.Throttle.BytesPerSecond)}
}

// failedFiles counts the undelivered files in failed/, as the pickup
// keeps the count.
func (d *Daemon) failedFiles() int {
	files, _ := d.pickup.FailedUsage()
	return files
}

// failedDirProblem returns why dir cannot take failed files, or "" when it
// can or does not exist yet (the first move creates it).
func failedDirProblem(dir string) string {
	info, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return ""
	case err != nil:
		return err.Error()
	case !info.IsDir():
		return dir + " is not a directory: move it away so that a directory can take its place"
	}
	if err := unix.Access(dir, unix.W_OK|unix.X_OK); err != nil {
		return fmt.Sprintf("%s is not writable: %v", dir, err)
	}
	return ""
}
