package pickup

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// settleRef records the size and modification time of a file written in
// place, and when the pickup first saw them.
type settleRef struct {
	size  int64
	mtime time.Time
	since time.Time
}

// candidate is a file found by a scan, ordered by change time then name.
type candidate struct {
	rel   string
	ctime int64
	// watched is set when the file's directory had a watch before the
	// scan's cutoff was taken, so a change after the cutoff has an event.
	watched bool
}

// watches maps watch descriptors to directories under new/ ("" is new/).
type watches struct {
	byWD  map[int32]string
	byDir map[string]int32
}

func (p *Pickup) abs(rel string) string {
	return filepath.Join(p.newDir, filepath.FromSlash(rel))
}

// hidden reports whether a name is ignored: names starting with a dot.
func hidden(name string) bool { return strings.HasPrefix(name, ".") }

// scanTree watches dir (relative to new/) and every directory below it,
// and queues the files it finds that are ready, oldest change time first.
// It adds the missing watches first, then takes the cutoff, then lists
// the files, so that every file is either listed or announced by an event
// (see scanCutoff). sync, when not nil, runs between the cutoff and the
// listing. It handles the events already queued, so the files they
// announce are queued in arrival order instead of by the listing, which
// orders files with one change time by name. Only the oldest files that
// fit in the queue are queued (see scanRoom); the others wait in new/.
func (p *Pickup) scanTree(w *watcher, ws *watches, dir string, sync func()) {
	p.watchTree(w, ws, dir)
	cutoff, ok := p.scanCutoff()
	if sync != nil {
		// NOTE: a file without an event, such as one in a directory that
		// watchTree has just watched, is queued after the files the sync
		// queued, also when it arrived before them.
		sync()
	}
	room, spare := p.scanRoom(dir), 0
	if dir == "" {
		// The files of the reserve are listed again.
		p.reserve, spare = nil, reserveFactor*p.opts.QueueMax
	}
	sel := &oldest{limit: room + spare}
	p.walk(w, ws, dir, sel)
	found, left := sel.sorted(), sel.left
	if ok {
		listed := p.leaveToEvents(found, cutoff)
		if sync != nil && p.overflowed {
			// While files wait beyond the queue, arrived counts a file
			// instead of queueing it, and the sync has handled the
			// events of some files left to events already. So they
			// count as left out, and a refill takes them.
			// NOTE: a file whose event comes after the listing is
			// counted twice in Stats.Waiting until the next rescan.
			left += len(found) - len(listed)
		}
		found = listed
	}
	room = min(room, len(found))
	p.noteScan(dir, found[room:], left)
	p.considerAll(found[:room])
}

// leaveToEvents removes the files in watched directories that changed
// between cutoff and the end of the listing, because their events queue
// them in order. A change time after the end of the listing comes from a
// wall clock set back, not from a change during it. Such a file is kept,
// so it does not wait until the clock catches up.
func (p *Pickup) leaveToEvents(found []candidate, cutoff int64) []candidate {
	end, err := p.touchMarker()
	if err != nil {
		p.logCutoffError(err)
		return found
	}
	return slices.DeleteFunc(found, func(c candidate) bool {
		return c.watched && c.ctime >= cutoff && c.ctime <= end
	})
}

// watchTree adds a watch to dir and every directory below it that has
// none. It reads directory entries in chunks and keeps only directories,
// so a directory of many files costs neither stat calls nor memory.
func (p *Pickup) watchTree(w *watcher, ws *watches, dir string) {
	if w == nil {
		return
	}
	if _, ok := ws.byDir[dir]; !ok {
		p.addWatch(w, ws, dir)
	}
	f, err := os.Open(p.abs(dir))
	if err != nil {
		return // walk reports it
	}
	var subdirs []string
	for {
		entries, err := f.ReadDir(1024)
		for _, e := range entries {
			if e.IsDir() && !hidden(e.Name()) {
				subdirs = append(subdirs, path.Join(dir, e.Name()))
			}
		}
		if err != nil {
			break // io.EOF, or an error that walk reports
		}
	}
	f.Close()
	for _, sub := range subdirs {
		p.watchTree(w, ws, sub)
	}
}

// considerFound queues a file that a scan found. A regular file seen for
// the first time that has not settled may have been renamed in just now
// or may still be written in place, and no file attribute separates the
// two reliably. It is queued as tentative, so files that arrive after it
// wait behind it until it is closed, settles or has waited the settle
// time. A file whose change time is later than its modification time was
// renamed or linked after its last write and is taken at once.
func (p *Pickup) considerFound(rel string, info fs.FileInfo) {
	_, tracked := p.settling[rel]
	_, writing := p.writing[rel]
	if info == nil {
		p.consider(rel)
		return
	}
	if tracked || writing || !info.Mode().IsRegular() || p.settled(rel, info) {
		p.considerInfo(rel, info)
		return
	}
	p.enqueue(rel)
	if !changedAfterWrite(info) {
		p.settling[rel] = settleRef{size: info.Size(), mtime: info.ModTime(), since: p.now()}
		p.tentative[rel] = p.now().Add(p.opts.Settle)
	}
}

// changedAfterWrite reports whether the change time is later than the
// modification time. Both come from the same coarse kernel clock, so a
// rename within one tick of the last write is not detected.
func changedAfterWrite(info fs.FileInfo) bool {
	st, ok := info.Sys().(*syscall.Stat_t)
	return ok && st.Ctim.Nano() > st.Mtim.Nano()
}

// resolveTentative decides whether the file at the head of the queue may
// be read now. It returns ready for a file that is not tentative or has
// been resolved, and drop for a file that waited the settle time without
// settling and must leave the queue. Both false means wait.
func (p *Pickup) resolveTentative(rel string) (ready, drop bool) {
	deadline, ok := p.tentative[rel]
	if !ok {
		return true, false
	}
	info, err := os.Lstat(p.abs(rel))
	if err != nil || !info.Mode().IsRegular() || changedAfterWrite(info) || p.settled(rel, info) {
		delete(p.tentative, rel)
		return true, false
	}
	if !p.now().Before(deadline) {
		// Still being written: it stops holding back the queue and is
		// taken once it is closed or settles.
		delete(p.tentative, rel)
		return false, true
	}
	p.headWait = deadline
	return false, false
}

// walk visits one directory and offers its files to sel. It reads the
// entries in chunks, so a directory of many files costs memory only for
// the files sel keeps. Symbolic links to directories are files to it, so
// the pickup rejects them and never follows them.
func (p *Pickup) walk(w *watcher, ws *watches, dir string, sel *oldest) {
	_, watched := ws.byDir[dir]
	if !watched && w != nil {
		// Created after watchTree ran: its files may have no events.
		p.addWatch(w, ws, dir)
	}
	f, err := os.Open(p.abs(dir))
	if err != nil {
		p.walkError(dir, err)
		return
	}
	fd := int(f.Fd())
	var subdirs []string
	for {
		entries, err := f.ReadDir(1024)
		subdirs = p.offerEntries(fd, dir, watched, entries, sel, subdirs)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			p.walkError(dir, err)
			break
		}
	}
	f.Close()
	slices.Sort(subdirs)
	for _, sub := range subdirs {
		p.walk(w, ws, sub, sel)
	}
}

// offerEntries offers the files among entries of dir, open as fd, to sel
// and returns subdirs with the directories among them added. It builds
// each path and reads each change time in reused buffers, so a file costs
// no memory unless sel keeps it.
func (p *Pickup) offerEntries(fd int, dir string, watched bool, entries []fs.DirEntry, sel *oldest,
	subdirs []string) []string {
	var st unix.Stat_t
	var rel []byte
	for _, e := range entries {
		if hidden(e.Name()) {
			continue
		}
		rel = append(rel[:0], dir...)
		if dir != "" {
			rel = append(rel, '/')
		}
		rel = append(rel, e.Name()...)
		if e.IsDir() {
			subdirs = append(subdirs, string(rel))
			continue
		}
		if p.queued[string(rel)] || p.retriedAtRescan(rel) {
			continue
		}
		if unix.Fstatat(fd, e.Name(), &st, unix.AT_SYMLINK_NOFOLLOW) != nil {
			// The file was removed since the listing, or is in a
			// directory that the daemon may list but not search, so
			// it cannot be read.
			continue
		}
		if !sel.wants(st.Ctim.Nano()) {
			sel.left++
			continue
		}
		sel.offer(candidate{rel: string(rel), ctime: st.Ctim.Nano(), watched: watched})
	}
	return subdirs
}

// walkError reports a directory that walk cannot list.
func (p *Pickup) walkError(dir string, err error) {
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case errors.Is(err, fs.ErrPermission):
		p.logUnreadable(dir, err)
	case errors.Is(err, syscall.ENAMETOOLONG):
		p.logPathTooLong(dir, err)
	default:
		p.log.Error("read spool directory", "path", p.abs(dir), "err", err)
		p.setError(err)
	}
}

func (p *Pickup) addWatch(w *watcher, ws *watches, dir string) {
	wd, err := w.add(p.abs(dir))
	if errors.Is(err, syscall.ENAMETOOLONG) || errors.Is(err, fs.ErrPermission) {
		// Rescans cannot read it either, and walk logs it with the fix.
		return
	}
	if err != nil {
		// Files in an unwatched directory are still found by rescans.
		if p.watchErrLog.allow(p.now(), time.Hour) {
			p.log.Error("watch spool directory; its files are picked up at rescans only",
				"path", p.abs(dir), "err", err,
				"hint", "raise fs.inotify.max_user_watches if the error is ENOSPC")
		}
		p.setError(err)
		return
	}
	ws.byWD[wd] = dir
	ws.byDir[dir] = wd
}

// consider queues rel, as one that has just arrived, when it is ready:
// not a regular file (so it is rejected at once), or a regular file that
// has settled. Other files are tracked until they settle.
func (p *Pickup) consider(rel string) {
	info, err := os.Lstat(p.abs(rel))
	if err != nil {
		if errors.Is(err, syscall.ENAMETOOLONG) {
			p.logPathTooLong(rel, err)
		}
		delete(p.settling, rel)
		delete(p.writing, rel)
		return
	}
	if p.ready(rel, info) {
		p.arrived(rel)
	}
}

// considerInfo queues rel, which a scan found, when it is ready.
func (p *Pickup) considerInfo(rel string, info fs.FileInfo) {
	if p.ready(rel, info) {
		p.enqueue(rel)
	}
}

// ready reports whether rel may be queued: not a directory, and either not
// a regular file or a regular file that has settled.
func (p *Pickup) ready(rel string, info fs.FileInfo) bool {
	return !info.IsDir() && (!info.Mode().IsRegular() || p.settled(rel, info))
}

// settled reports whether a regular file has kept its size and
// modification time for its settle time, either by its modification time
// or by what the pickup saw earlier.
func (p *Pickup) settled(rel string, info fs.FileInfo) bool {
	now := p.now()
	settle := p.settleFor(rel)
	if now.Sub(info.ModTime()) >= settle {
		return true
	}
	ref, ok := p.settling[rel]
	if ok && ref.size == info.Size() && ref.mtime.Equal(info.ModTime()) {
		return now.Sub(ref.since) >= settle
	}
	p.settling[rel] = settleRef{size: info.Size(), mtime: info.ModTime(), since: now}
	return false
}

// createdOpen handles the IN_CREATE of rel. A regular file with one link
// was created by an open, so an IN_CLOSE_WRITE will announce it once its
// writer closes it, even when the writer pauses for longer than the
// settle time. It is recorded as being written, and createdOpen returns
// true. A hard link, which gets no close event, and everything else
// return false and settle as before.
//
// The file is tracked as settling too, with the longer settle time of
// settleFor. A file removed or renamed while its writer still has it open
// gets no IN_CLOSE_WRITE under that name, since the watches have neither
// IN_DELETE nor IN_MOVED_FROM and use IN_EXCL_UNLINK. The settle check
// then finds it gone and drops both entries, so it stops taking a place
// in the queue (see inPlace).
func (p *Pickup) createdOpen(rel string) bool {
	info, err := os.Lstat(p.abs(rel))
	if err != nil || !info.Mode().IsRegular() {
		return false
	}
	st, ok := info.Sys().(*syscall.Stat_t)
	if !ok || st.Nlink != 1 {
		return false
	}
	p.writing[rel] = struct{}{}
	p.settling[rel] = settleRef{size: info.Size(), mtime: info.ModTime(), since: p.now()}
	return true
}

// settleFor returns how long rel must keep its size and modification time
// to be taken without a close event. A file still open for writing, as
// far as the events tell, must wait a whole rescan interval, so that a
// writer's pause of a few seconds does not send half a file.
func (p *Pickup) settleFor(rel string) time.Duration {
	if _, ok := p.writing[rel]; ok {
		return max(p.opts.Settle, p.opts.RescanInterval)
	}
	return p.opts.Settle
}

// checkSettling looks again at files written in place whose settle time
// has passed.
func (p *Pickup) checkSettling() {
	now := p.now()
	var due []string
	for rel, ref := range p.settling {
		settle := p.settleFor(rel)
		if now.Sub(ref.since) >= settle || now.Sub(ref.mtime) >= settle {
			due = append(due, rel)
		}
	}
	sort.Strings(due)
	for _, rel := range due {
		p.consider(rel)
	}
}

// nextSettle returns when the next tracked file may have settled.
func (p *Pickup) nextSettle() time.Time {
	var next time.Time
	for rel, ref := range p.settling {
		settle := p.settleFor(rel)
		t := ref.since.Add(settle)
		if m := ref.mtime.Add(settle); m.Before(t) {
			t = m
		}
		if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	return next
}

func (p *Pickup) enqueue(rel string) {
	delete(p.settling, rel)
	delete(p.writing, rel)
	delete(p.tentative, rel)
	if p.queued[rel] || p.rejectHeldBack(rel) {
		return
	}
	if len(p.queue) >= p.opts.QueueMax {
		// It waits in new/ for a rescan; see scanRoom.
		p.overflowed = true
		p.unlisted++
		return
	}
	p.queued[rel] = true
	p.queue = append(p.queue, rel)
}

// handleEvent applies one inotify event. It returns true when the event
// calls for a full rescan.
func (p *Pickup) handleEvent(w *watcher, ws *watches, ev watchEvent) bool {
	if ev.mask&unix.IN_Q_OVERFLOW != 0 {
		// The overflow may have lost the events of late sync markers,
		// and the close events of files being written.
		p.lateMarkers = 0
		clear(p.writing)
		return true
	}
	dir, ok := ws.byWD[ev.wd]
	if !ok {
		// A late sync marker's event that comes between syncs is
		// counted here, so that the next sync waits for its own.
		if ev.wd == p.syncWD && ev.name == syncMarkerName && p.lateMarkers > 0 {
			p.lateMarkers--
		}
		if ev.wd == p.syncWD && ev.mask&unix.IN_IGNORED != 0 {
			// The spool directory is gone; the next rescan watches the
			// one at its path.
			p.syncWD, p.syncLost = -1, true
		}
		if ev.wd == p.syncWD && ev.mask&unix.IN_MOVE_SELF != 0 {
			p.spoolDirMoved(w, ws)
		}
		return false
	}
	switch {
	case ev.mask&unix.IN_IGNORED != 0:
		forgetWatch(ws, ev.wd, dir)
		return false
	case ev.mask&unix.IN_DELETE_SELF != 0:
		forgetWatch(ws, ev.wd, dir)
		if dir == "" {
			// new/ itself was removed. A rescan creates it again once
			// the whole spool directory is gone (see restoreDue).
			p.restoreAt = p.now().Add(restoreDelay)
		}
		return false
	case ev.mask&unix.IN_MOVE_SELF != 0:
		// The directory left its place, so its path is stale. A rescan
		// watches it again wherever it now is under new/.
		w.remove(ev.wd)
		forgetWatch(ws, ev.wd, dir)
		return true
	}
	if ev.name == "" || hidden(ev.name) {
		return false
	}
	rel := path.Join(dir, ev.name)
	switch {
	case ev.mask&unix.IN_ISDIR != 0:
		if ev.mask&(unix.IN_CREATE|unix.IN_MOVED_TO) != 0 {
			// Files may have arrived before the watch existed.
			p.scanTree(w, ws, rel, nil)
		}
	case ev.mask&(unix.IN_MOVED_TO|unix.IN_CLOSE_WRITE) != 0:
		delete(p.writing, rel)
		p.arrived(rel)
	case ev.mask&unix.IN_CREATE != 0:
		if p.createdOpen(rel) {
			return false
		}
		if _, tracked := p.settling[rel]; !p.overflowed || tracked {
			p.consider(rel)
		}
	}
	return false
}

// spoolDirMoved drops the watches of a spool directory that was moved
// away, as by mv, since they follow the moved directories and new/ gets
// no event of its own. A rescan after restoreDelay watches what is at the
// path then, and creates new/ there if it is missing. The pause lets an
// operator's mv of a replacement into the path come first.
func (p *Pickup) spoolDirMoved(w *watcher, ws *watches) {
	p.dropWatches(w, ws)
	p.restoreAt = p.now().Add(restoreDelay)
	p.log.Warn("spool directory was moved away while the daemon ran, so the daemon watches the directory "+
		"at the path from now on", "dir", p.opts.Dir, "hint", "stop mqspool before moving or replacing its spool directory")
}

// checkSpoolDirReplaced drops the watches when the path of the spool
// directory leads to another directory than the one watched, as after a
// symbolic link was pointed elsewhere, which no watch reports. The rescan
// that calls it then watches the directory at the path. report is false
// when the caller has logged the replacement already.
func (p *Pickup) checkSpoolDirReplaced(w *watcher, ws *watches, report bool) {
	if p.syncWD < 0 || p.syncDir == nil {
		return
	}
	current, err := os.Stat(p.opts.Dir)
	if err != nil || os.SameFile(current, p.syncDir) {
		return
	}
	p.dropWatches(w, ws)
	if !report {
		return
	}
	p.log.Warn("spool directory path leads to another directory than the one watched, as after a symbolic "+
		"link was changed, so the daemon watches the directory at the path from now on", "dir", p.opts.Dir,
		"hint", "stop mqspool before moving or replacing its spool directory")
}

// dropWatches removes the watches of the spool directory and of new/, so
// that the next rescan watches the directories at their paths again.
func (p *Pickup) dropWatches(w *watcher, ws *watches) {
	if p.syncWD >= 0 {
		w.remove(p.syncWD)
	}
	p.syncWD, p.syncLost, p.syncDir = -1, true, nil
	for wd, dir := range ws.byWD {
		w.remove(wd)
		forgetWatch(ws, wd, dir)
	}
}

func forgetWatch(ws *watches, wd int32, dir string) {
	delete(ws.byWD, wd)
	if ws.byDir[dir] == wd {
		delete(ws.byDir, dir)
	}
}
