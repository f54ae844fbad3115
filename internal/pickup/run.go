package pickup

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/mqspool/mqspool/internal/format"
)

const (
	// gatherDelay is how long the pickup waits for more events after one
	// arrived, so many files share one Append call.
	gatherDelay = 10 * time.Millisecond
	// pressureInterval is how often free space is checked again while it
	// is low.
	pressureInterval = time.Second
	// unreadableLogInterval is how often one unreadable file is logged.
	unreadableLogInterval = time.Hour
	// idleWait is the timer period when nothing is due.
	idleWait = time.Hour
	// restoreDelay is the pause between the removal of new/ and the
	// rescan that creates it again, and between the checks whether the
	// spool directory is gone.
	restoreDelay = time.Second
	// linkCheckInterval is how often a spool directory reached through a
	// symbolic link is checked for a link that now leads elsewhere, and
	// how often a failed claim is tried again.
	linkCheckInterval = time.Second
)

// Run watches and ingests the spool directory until ctx is done, then
// returns nil. Nothing it starts outlives it. It returns an error only when
// inotify cannot be set up. Call it at most once per Pickup.
func (p *Pickup) Run(ctx context.Context) error {
	w, err := newWatcher()
	if err != nil {
		return err
	}
	defer w.close()
	ws := &watches{byWD: make(map[int32]string), byDir: make(map[string]int32)}
	p.watchSpoolDir(w)

	p.forgetOrphans()
	// Files that arrived before the watches have no events, so the first
	// scan orders every file it lists, without a sync.
	p.rescan(w, ws, nil)
	p.log.Info("spool pickup started", "dir", p.opts.Dir, "watched_dirs", len(ws.byDir),
		"queued_files", len(p.queue), "waiting_files", p.waitingBeyond())
	rescan := time.NewTicker(p.opts.RescanInterval)
	defer rescan.Stop()
	timer := time.NewTimer(idleWait)
	defer timer.Stop()
	readerStopped := w.stopped

	for {
		// The refill is checked on every pass, because events that come
		// faster than the timer's wait would keep the timer from firing.
		if p.refillDue() {
			p.refill(w, ws)
		}
		p.step(w, ws)
		timer.Reset(p.wait())
		select {
		case <-ctx.Done():
			p.finishRemoval()
			p.flushForget(true)
			return nil
		case evs := <-w.events:
			p.finishRemoval()
			p.handleEvents(w, ws, evs)
			p.gather(ctx, w, ws)
		case <-rescan.C:
			p.finishRemoval()
			p.rescan(w, ws, func() { p.syncEvents(ctx, w, ws, p.syncWD) })
			p.finishSync(w, ws)
		case <-readerStopped:
			readerStopped = nil
			p.log.Error("inotify read failed, so new files are found only by the periodic "+
				"rescan", "err", w.err, "rescan_interval", p.opts.RescanInterval,
				"hint", "restart mqspool to watch again")
		case <-p.room:
			p.roomFreed()
		case <-p.removalDone():
			// Queue the identities to forget now, rather than at the next
			// event, which may be a whole rescan interval away.
			p.finishRemoval()
		case <-timer.C:
			if p.restoreDue() || p.pathCheckDue() {
				p.rescan(w, ws, nil)
			}
			// A settled file may reuse the name of a file being
			// removed, and enqueue skips names still queued. Without
			// settling files the removal keeps running meanwhile.
			if len(p.settling) > 0 {
				p.finishRemoval()
			}
			p.checkSettling()
		}
	}
}

// rescan walks all of new/, watching directories that have no watch and
// queueing the files that are ready. sync, when not nil, handles the
// waiting events before the listing (see scanTree).
func (p *Pickup) rescan(w *watcher, ws *watches, sync func()) {
	if !p.refilling {
		// This rescan retries the files that could not be removed.
		clear(p.unremoved)
	}
	if p.holdRescan() {
		return
	}
	p.restoreAt = time.Time{}
	restored := p.restoreDirs()
	if w != nil {
		// The restore has logged the removal, so a directory it created
		// is watched again without a second report.
		p.checkSpoolDirReplaced(w, ws, !restored)
	}
	p.viaLink = throughSymlink(p.opts.Dir)
	if !p.claim(w, ws) {
		return
	}
	if p.syncLost && w != nil {
		// The spool directory was removed, and its watch with it. While
		// it cannot be watched, as when a symbolic link's target is
		// gone, each rescan tries again.
		p.lateMarkers = 0
		p.syncLost = p.watchSpoolDir(w) < 0
		sync = nil
	}
	p.scanTree(w, ws, "", sync)
	p.checkSettling()
	p.housekeeping()
	if len(p.queue) == 0 {
		// Each batch checks free space; with none waiting, this check
		// keeps the state and its log lines true for the operator.
		p.underPressure()
	}
	now := p.now()
	for rel, last := range p.unreadable {
		if now.Sub(last) >= unreadableLogInterval {
			delete(p.unreadable, rel)
		}
	}
	p.pruneRejectHeld()
}

// claim calls Options.Claim to check whether the daemon holds the spool
// directory at its path. When it does not, the pickup drops its watches and
// the files it has queued or seen written, whose names now lead into a
// directory that another daemon ingests. Run tries the claim again once a
// second.
func (p *Pickup) claim(w *watcher, ws *watches) bool {
	if p.opts.Claim == nil || p.opts.Claim() {
		p.claimLost = false
		return true
	}
	p.claimLost = true
	if w != nil {
		p.dropWatches(w, ws)
	}
	if p.parted != nil {
		// The stored identity of a file in parts stays, so that the file
		// resumes after its stored parts when this directory is claimed
		// again. If the file is gone by the next start, forgetOrphans
		// removes the identity.
		p.parted = nil
		p.showParted()
	}
	p.queue = nil
	clear(p.queued)
	clear(p.settling)
	clear(p.writing)
	clear(p.tentative)
	p.overflowed, p.reserve, p.unlisted = false, nil, 0
	return false
}

// claimBeforeBatch reports whether the next batch may be read. It checks
// the claim, since watches go on reporting files after another daemon
// locked the directory. While new/ or one of Options.OwnFiles is missing,
// as during an rm -rf of the spool directory, it leaves the claim to the
// rescan that restoreDue schedules. Taking the lock now would create a
// lock file in the directory being removed, so the removal would fail
// with "Directory not empty".
func (p *Pickup) claimBeforeBatch(w *watcher, ws *watches) bool {
	if p.ownEntryMissing() {
		if p.restoreAt.IsZero() {
			p.restoreAt = p.now().Add(restoreDelay)
		}
		return true
	}
	return p.claim(w, ws)
}

// restoreDue reports whether the rescan that creates new/ again is due.
// While the spool directory that lost new/ is still in place, as during
// an rm -rf of a spool directory with many files in failed/, a new new/
// in it would make that removal fail with "Directory not empty". So the
// rescan waits until the spool directory is gone, or until its tree has
// stopped shrinking, as when new/ was removed alone.
func (p *Pickup) restoreDue() bool {
	if p.restoreAt.IsZero() || p.now().Before(p.restoreAt) {
		return false
	}
	if p.syncLost || p.syncWD < 0 || p.spoolDirGone() || !p.spoolDirShrinking() {
		p.restoreApproved = true
		return true
	}
	p.restoreAt = p.now().Add(restoreDelay)
	return false
}

// spoolDirGone reports whether the spool directory's path leads nowhere,
// or to another directory than the watched one. The watch of a removed
// spool directory does not end while a file in it stays open, as the
// daemon's lock file does, so the path is checked as well.
func (p *Pickup) spoolDirGone() bool {
	current, err := os.Stat(p.opts.Dir)
	if errors.Is(err, fs.ErrNotExist) {
		return true
	}
	return err == nil && p.syncDir != nil && !os.SameFile(current, p.syncDir)
}

// restoreDirs creates tmp/, new/ and failed/ again when new/ is gone, as
// after the spool directory was removed while the daemon ran, so that
// producers can go on, and reports whether it did. The scan that follows
// watches the new new/.
func (p *Pickup) restoreDirs() bool {
	if _, err := os.Lstat(p.newDir); !errors.Is(err, fs.ErrNotExist) {
		return false
	}
	var missing []string
	for _, dir := range []string{p.opts.Dir, p.tmpDir, p.newDir, p.failedDir} {
		if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
			missing = append(missing, dir)
		}
	}
	for _, dir := range []string{p.tmpDir, p.newDir, p.failedDir} {
		if err := format.MkdirAllSync(dir); err != nil {
			p.log.Error("new/ of the spool directory is missing and cannot be created again",
				"path", dir, "err", err, "hint", "create the spool directory writable by the mqspool user")
			return false
		}
	}
	p.restoreModes(missing)
	p.log.Error("new/ of the spool directory was removed while the daemon ran; created tmp/, new/ and "+
		"failed/ again, and files in the removed directories are lost to mqspool", "dir", p.opts.Dir,
		"hint", "stop mqspool before removing or replacing its spool directory")
	return true
}

// restoreModes gives each of dirs, which restoreDirs created, the mode
// that its predecessor had at start, such as the setgid, group-writable
// modes of the shipped layout that keep producers' files readable by the
// daemon.
func (p *Pickup) restoreModes(dirs []string) {
	for _, dir := range dirs {
		mode, ok := p.dirModes[dir]
		if !ok {
			continue
		}
		if err := os.Chmod(dir, mode); err != nil {
			p.log.Warn("directory created again without its former mode, so producers may not be able "+
				"to write to it", "path", dir, "mode", mode, "err", err,
				"hint", "set the mode by hand, or run systemd-tmpfiles --create")
		}
	}
}

// finishSync runs the rescan that an event handled during a sync called
// for, then handles the events that the sync deferred.
func (p *Pickup) finishSync(w *watcher, ws *watches) {
	if p.rescanAgain {
		p.rescanAgain = false
		p.rescan(w, ws, nil)
	}
	if evs := p.deferred; len(evs) > 0 {
		p.deferred = nil
		p.handleEvents(w, ws, evs)
	}
}

// handleEvents applies a batch of events. An overflow or a moved
// directory triggers a rescan at once, before the events after it: the
// files whose events were lost are older than those events, so the rescan
// must queue them first to keep arrival order.
func (p *Pickup) handleEvents(w *watcher, ws *watches, evs []watchEvent) {
	for _, ev := range evs {
		// No sync here: it would handle the events after ev before the
		// rest of evs.
		if p.handleEvent(w, ws, ev) {
			p.rescan(w, ws, nil)
		}
	}
}

// gather takes the events that arrive within gatherDelay, so a burst of
// files is appended in few batches.
func (p *Pickup) gather(ctx context.Context, w *watcher, ws *watches) {
	deadline := time.NewTimer(gatherDelay)
	defer deadline.Stop()
	for len(p.queue) < p.opts.BatchMax {
		select {
		case evs := <-w.events:
			p.handleEvents(w, ws, evs)
		case <-deadline.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

// step ingests one batch unless ingest is held back.
func (p *Pickup) step(w *watcher, ws *watches) {
	now := p.now()
	p.headWait = time.Time{}
	switch {
	case len(p.queue) == 0:
		p.finishRemoval()
		p.flushForget(false)
	case now.Before(p.retryAt):
		p.finishRemoval()
	case p.underPressure():
		p.finishRemoval()
		p.retryAt = now.Add(pressureInterval)
	default:
		if p.claimBeforeBatch(w, ws) {
			p.ingestBatch()
		}
	}
	waiting := 0
	if p.now().Before(p.retryAt) {
		waiting = len(p.queue) + p.waitingBeyond()
	}
	p.updateStats(func(s *Stats) { s.Waiting = waiting })
}

// wait returns the time until something is due: the next batch, the end
// of a backoff or a file that may have settled.
func (p *Pickup) wait() time.Duration {
	now := p.now()
	d := idleWait
	if len(p.queue) > 0 {
		d = max(p.retryAt.Sub(now), p.headWait.Sub(now), 0)
	}
	if next := p.nextSettle(); !next.IsZero() {
		d = min(d, max(next.Sub(now), time.Millisecond))
	}
	if len(p.forget) > 0 {
		d = min(d, max(p.forgetBy.Sub(now), time.Millisecond))
	}
	if !p.restoreAt.IsZero() {
		d = min(d, max(p.restoreAt.Sub(now), time.Millisecond))
	}
	if p.refillNeeded() {
		d = min(d, max(p.refillAt.Sub(now), time.Millisecond))
	}
	if p.pathCheckNeeded() {
		if p.pathCheckAt.IsZero() {
			p.pathCheckAt = now.Add(linkCheckInterval)
		}
		d = min(d, max(p.pathCheckAt.Sub(now), time.Millisecond))
	}
	return d
}

// pathCheckNeeded reports whether the spool directory's path needs the
// once-a-second check: it leads through a symbolic link, or another
// daemon holds the directory.
func (p *Pickup) pathCheckNeeded() bool {
	return (p.viaLink && p.syncDir != nil) || p.claimLost
}

// pathCheckDue reports whether the path check is due and whether it found
// a reason to rescan: a link that leads elsewhere or a claim to try again.
// The check keeps its own deadline, since the timer is set again after
// every event, and a steady stream of events would otherwise put it off
// for as long as the stream lasts.
func (p *Pickup) pathCheckDue() bool {
	if !p.pathCheckNeeded() {
		p.pathCheckAt = time.Time{}
		return false
	}
	now := p.now()
	if now.Before(p.pathCheckAt) {
		return false
	}
	p.pathCheckAt = now.Add(linkCheckInterval)
	return p.claimLost || p.linkRepointed()
}

// linkRepointed reports whether a spool directory reached through a
// symbolic link now leads to another directory than the watched one, as
// after ln -sfn. Files there would otherwise wait for the periodic rescan.
func (p *Pickup) linkRepointed() bool {
	if !p.viaLink || p.syncDir == nil {
		return false
	}
	current, err := os.Stat(p.opts.Dir)
	return err == nil && current.IsDir() && !os.SameFile(current, p.syncDir)
}

// throughSymlink reports whether the path dir goes through a symbolic
// link, in its last element or in a parent.
func throughSymlink(dir string) bool {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return false
	}
	real, err := filepath.EvalSymlinks(abs)
	return err == nil && real != abs
}
