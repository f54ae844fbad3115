package pickup

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// A directory listing taken while files are renamed into the directory
// may return a file renamed late in the listing and miss one renamed
// earlier, because the file system returns entries in hash order. A scan
// that queued both would break arrival order. So a scan first takes a
// change-time cutoff and queues only files whose change time is below
// it. Newer files are queued by their inotify events, which arrive in
// order.
//
// The cutoff comes from the change time of a marker file in the spool
// directory, which the kernel stamps from the same clock and with the
// same granularity as the files in new/. The marker is touched until its
// change time moves past the first touch. Stamps never go backwards
// unless the wall clock is set back. So a file whose change time is below
// the cutoff changed before the scan lists the directory, and the listing
// contains it. A file at or above the cutoff changed after the first
// touch, when the watches were already in place, so its event is still
// to come.

// stampMarkerName names the marker file in the spool directory.
const stampMarkerName = ".mqspool-scan"

const (
	// maxStampWait bounds the wait for the marker's change time to move.
	// File systems with one-second time stamps need up to a second.
	maxStampWait = 2 * time.Second
	// stampPoll is the pause between touches while the change time is
	// unchanged.
	stampPoll = time.Millisecond
)

// scanCutoff returns the change-time cutoff for the next listing, in
// nanoseconds, and false when none could be taken. Without a cutoff a scan
// queues every file it lists, as a best effort.
func (p *Pickup) scanCutoff() (int64, bool) {
	first, err := p.touchMarker()
	if err != nil {
		p.logCutoffError(err)
		return 0, false
	}
	deadline := time.Now().Add(maxStampWait)
	for tries := 0; ; tries++ {
		stamp, err := p.touchMarker()
		switch {
		case err != nil:
			p.logCutoffError(err)
			return 0, false
		case stamp > first:
			return stamp, true
		case time.Now().After(deadline):
			p.logCutoffError(fmt.Errorf("change time of %s did not move in %s",
				p.markerPath(), maxStampWait))
			return 0, false
		}
		// A file system with fine-grained stamps moves on the next touch.
		if tries > 0 {
			time.Sleep(stampPoll)
		}
	}
}

func (p *Pickup) markerPath() string {
	return filepath.Join(p.opts.Dir, stampMarkerName)
}

// touchMarker sets the scan marker's times to now, creating it when
// missing, and returns its change time.
func (p *Pickup) touchMarker() (int64, error) {
	stamp, err := p.touch(stampMarkerName)
	if err == nil {
		p.markerMade = true
	}
	return stamp, err
}

// touch sets the times of the file base in the spool directory to now,
// creating it when missing, and returns its change time.
func (p *Pickup) touch(base string) (int64, error) {
	name := filepath.Join(p.opts.Dir, base)
	err := unix.UtimesNanoAt(unix.AT_FDCWD, name, nil, unix.AT_SYMLINK_NOFOLLOW)
	if errors.Is(err, unix.ENOENT) {
		var f *os.File
		f, err = os.OpenFile(name, os.O_CREATE|os.O_WRONLY, 0o644)
		if err == nil {
			err = f.Close()
		}
	}
	if err != nil {
		return 0, &os.PathError{Op: "touch", Path: name, Err: err}
	}
	var st unix.Stat_t
	if err := unix.Lstat(name, &st); err != nil {
		return 0, &os.PathError{Op: "lstat", Path: name, Err: err}
	}
	return st.Ctim.Nano(), nil
}

// logCutoffError logs that scans run without a cutoff. The rate limit
// cutoffErrLog keeps it to one line an hour.
func (p *Pickup) logCutoffError(err error) {
	if p.cutoffErrLog.allow(p.now(), time.Hour) {
		p.log.Warn("rescans cannot tell files being renamed in from older ones, so files "+
			"renamed during a rescan may be queued out of order",
			"err", err, "hint", "let the mqspool user write the spool directory")
	}
}

// syncMarkerName names the file in the spool directory whose times
// syncEvents sets. It is separate from the scan marker, so an event left
// over from a scan cannot end a sync early.
const syncMarkerName = ".mqspool-sync"

// syncMask selects the events of the spool directory's watch: the
// marker's new times, or its close after it was created, and a move of
// the directory itself. It follows a spool directory given as a symbolic
// link, as the paths of new/ and of the markers do.
const syncMask = unix.IN_ATTRIB | unix.IN_CLOSE_WRITE | unix.IN_MOVE_SELF | unix.IN_ONLYDIR

// watchSpoolDir watches the spool directory for syncEvents and returns
// the watch descriptor, or -1 when it cannot. The watch's events have no
// entry in the watches of new/, so handleEvent takes from them only the
// late markers, the end of the watch and a move of the directory. Without the
// watch, rescans still take their cutoff and only the sync is skipped.
func (p *Pickup) watchSpoolDir(w *watcher) int32 {
	wd, err := w.addMask(p.opts.Dir, syncMask)
	if err != nil {
		p.log.Warn("watch spool directory failed, so a periodic rescan may queue files renamed "+
			"in within one clock tick out of arrival order", "path", p.opts.Dir, "err", err,
			"hint", "raise fs.inotify.max_user_watches if the error is ENOSPC, "+
				"else let the mqspool user read the spool directory")
		p.syncWD = -1
		return -1
	}
	p.syncWD = wd
	p.syncDir, _ = os.Stat(p.opts.Dir)
	return wd
}

// syncEvents handles every event that the kernel queued before it
// returns. A periodic rescan would otherwise queue the files that those
// events announce itself, ordered by change time and then by name, which
// breaks arrival order for files renamed in within one clock tick. It
// touches a marker in the spool directory, which has a watch of its own,
// and handles events until the marker's event, an overflow (whose lost
// files the rescan finds), maxStampWait, a stop, or the end of the
// watcher's reader.
func (p *Pickup) syncEvents(ctx context.Context, w *watcher, ws *watches, syncWD int32) {
	if w == nil || syncWD < 0 || w.failed() {
		return
	}
	if _, err := p.touch(syncMarkerName); err != nil {
		p.logCutoffError(err)
		return
	}
	timeout := time.NewTimer(maxStampWait)
	defer timeout.Stop()
	for {
		select {
		case evs := <-w.events:
			if p.handleUntilMarker(w, ws, evs, syncWD) {
				return
			}
		case <-timeout.C:
			// The marker's event is still to come. It must not end
			// the next sync before that sync's own event.
			p.lateMarkers++
			return
		case <-w.stopped:
			return
		case <-ctx.Done():
			return
		}
	}
}

// handleUntilMarker handles evs and reports whether they contain the
// marker's event or an overflow. The events of markers whose sync timed
// out are skipped. A rescan that an event calls for is left to the caller
// through p.rescanAgain. After an overflow, the events that follow it go
// to p.deferred, so that the caller handles them after that rescan, as
// handleEvents would.
func (p *Pickup) handleUntilMarker(w *watcher, ws *watches, evs []watchEvent, syncWD int32) bool {
	found := false
	for i, ev := range evs {
		if ev.wd == syncWD && ev.name == syncMarkerName {
			if p.lateMarkers > 0 {
				p.lateMarkers--
			} else {
				found = true
			}
			continue
		}
		if ev.mask&unix.IN_Q_OVERFLOW != 0 {
			// The overflow may have lost the late markers' events.
			p.lateMarkers = 0
			p.rescanAgain = true
			p.deferred = append(p.deferred, evs[i+1:]...)
			return true
		}
		if p.handleEvent(w, ws, ev) {
			p.rescanAgain = true
		}
	}
	return found
}
