package pickup

import (
	"errors"
	"fmt"
	"os"
	"path"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mqspool/mqspool/internal/crashpoint"
	"github.com/mqspool/mqspool/internal/spool"
)

// Backoff after a full spool or a store error: it doubles from the first
// value up to the second, so a full spool is polled without a busy loop.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 5 * time.Second
)

// batchBytes bounds the payload bytes read ahead for one Append call.
const batchBytes = 8 << 20

// ingestBatch prepares queued files from the head of the queue and
// appends them in one call. A file to append in parts ends the batch and
// follows it. Files the store rejects as full stay at the head of the
// queue, so newer files wait behind them.
func (p *Pickup) ingestBatch() {
	batch, partedData, scanned := p.prepareBatch()
	accepted, err := p.append(batch)
	ids := fileIDs(batch[:accepted])
	var unsent []string
	for _, fb := range batch[accepted:] {
		unsent = append(unsent, fb.ID.Name)
	}

	// A file that can never fit the spool would block every file behind
	// it, so it is bad input.
	if errors.Is(err, spool.ErrTooLarge) && len(unsent) > 0 {
		rel := unsent[0]
		delete(p.queued, rel)
		p.rejectFile(rel, err.Error())
		unsent = unsent[1:]
	}

	// The rejected file leaves the batch, so it does not keep the spool
	// marked full when every other file went in.
	allIn := (err == nil || errors.Is(err, spool.ErrTooLarge)) && len(unsent) == 0
	if partedData != nil {
		switch {
		case !allIn:
			unsent = append(unsent, p.parted.id.Name) // it stays behind the files before it
		case p.ingestParted(partedData, &unsent):
			ids = append(ids, p.parted.id)
			p.parted = nil
		default:
			allIn = false
		}
	}
	p.showParted()
	p.finishRemoval()
	p.startRemoval(ids)

	// Files not accepted go back to the head of the queue, in order.
	p.queue = p.queue[scanned:]
	if len(unsent) > 0 {
		p.queue = append(unsent, p.queue...)
	}
	if allIn {
		p.backoff = 0
		if p.full {
			p.full = false
			p.waitingRoom.Store(false)
			p.updateStats(func(s *Stats) { s.SpoolFull = false })
			if p.fullLogged {
				p.fullLogged = false
				p.log.Info("spool has room again; ingest resumes", "files", len(p.queue)+p.waitingBeyond())
			}
		}
	}
}

// prepareBatch prepares files from the head of the queue until the batch
// is full, a file is not ready, or a file is to be appended in parts,
// which it returns the content of. scanned counts the queued files it
// took, including those that are done without an append.
func (p *Pickup) prepareBatch() (batch []spool.FileBatch, partedData []byte, scanned int) {
	var bytes int
	for scanned < len(p.queue) && len(batch) < p.opts.BatchMax && bytes < batchBytes {
		rel := p.queue[scanned]
		ready, drop := p.resolveTentative(rel)
		if drop {
			scanned++
			delete(p.queued, rel)
			continue
		}
		if !ready {
			break
		}
		fb, data, out := p.prepare(rel)
		if out == outcomeStoreErr {
			break
		}
		scanned++
		switch out {
		case outcomeReady:
			batch = append(batch, fb)
			bytes += batchSize(fb)
		case outcomeParts:
			return batch, data, scanned
		default:
			delete(p.queued, rel)
		}
	}
	return batch, nil, scanned
}

// ingestParted appends p.parted in parts and reports whether all of it is
// stored. A file that must wait goes to unsent, and a rejected one leaves
// the queue.
func (p *Pickup) ingestParted(data []byte, unsent *[]string) bool {
	rel := p.parted.id.Name
	switch p.appendParts(p.parted, data) {
	case partsStored:
		return true
	case partsWaiting:
		*unsent = append(*unsent, rel)
	default:
		delete(p.queued, rel)
		p.parted = nil
	}
	return false
}

// append hands the batch to the store and records the result.
func (p *Pickup) append(batch []spool.FileBatch) (int, error) {
	if len(batch) == 0 {
		return 0, nil
	}
	crashpoint.Hit(crashpoint.IngestBeforeAppend)
	accepted, err := p.store.AppendForget(batch, p.forget)
	if err == nil || errors.Is(err, spool.ErrFull) || errors.Is(err, spool.ErrTooLarge) {
		p.forget = nil
		p.forgetBackoff = 0
	}
	if accepted > 0 {
		crashpoint.Hit(crashpoint.IngestAfterAppend)
	}
	if accepted < 0 || accepted > len(batch) {
		accepted = 0
	}
	files, msgs := 0, 0
	for _, fb := range batch[:accepted] {
		msgs += len(fb.Messages)
		if !fb.More {
			files++ // the last part ends a file appended in parts
		}
	}
	p.updateStats(func(s *Stats) {
		s.FilesIngested += uint64(files)
		s.MessagesIngested += uint64(msgs)
	})
	switch {
	case errors.Is(err, spool.ErrFull):
		p.waitFull()
	case errors.Is(err, spool.ErrTooLarge):
		// ingestBatch rejects the file and goes on at once.
	case err != nil:
		p.storeFailed(err)
	case accepted < len(batch):
		p.waitFull()
	}
	return accepted, err
}

// waitFull holds ingest back while the spool is full.
func (p *Pickup) waitFull() {
	p.nextBackoff()
	// Each failed try arms one wakeup, which RoomFreed sends.
	p.waitingRoom.Store(true)
	if !p.full {
		p.full = true
		p.updateStats(func(s *Stats) { s.SpoolFull = true })
		p.logFull()
	}
	p.log.Debug("spool still full", "files", len(p.queue)+p.waitingBeyond(), "backoff_ms", p.backoff.Milliseconds())
}

// logFull logs that the spool became full, at most once a minute. The
// warning counts the times it became full since the previous one.
func (p *Pickup) logFull() {
	p.fullSpells++
	if !p.fullLog.allow(p.now(), time.Minute) {
		return
	}
	p.log.Warn("spool is full (spool.max_bytes or spool.max_messages); files wait in new/ in order",
		"files", len(p.queue)+p.waitingBeyond(), "times_full", p.fullSpells)
	p.fullSpells = 0
	p.fullLogged = true
}

// RoomFreed wakes a pickup that waits for room in a full spool, because
// messages left the spool. The pickup then tries again within minBackoff
// rather than at the end of a backoff that may have grown to maxBackoff. Only
// the first call after a failed try wakes the pickup, and the others cost
// an atomic load, so it may be called after every commit that deletes.
func (p *Pickup) RoomFreed() {
	if !p.waitingRoom.Load() || !p.waitingRoom.CompareAndSwap(true, false) {
		return
	}
	select {
	case p.room <- struct{}{}:
	default:
	}
}

// roomFreed brings the next try forward after RoomFreed. The backoff
// starts again from minBackoff, so a spool that drains while ingest
// fills it is tried about every minBackoff, each try taking what fits.
func (p *Pickup) roomFreed() {
	if !p.full {
		return
	}
	p.backoff = 0
	if soon := p.now().Add(minBackoff); p.retryAt.After(soon) {
		p.retryAt = soon
	}
}

// storeFailed logs a store error at most once a minute and holds ingest
// back for the backoff time.
func (p *Pickup) storeFailed(err error) {
	p.nextBackoff()
	p.setError(err)
	if p.storeErrLog.allow(p.now(), time.Minute) {
		p.log.Error("spool store failed; files wait in new/", "err", err,
			"backoff_ms", p.backoff.Milliseconds())
	}
}

func (p *Pickup) nextBackoff() {
	p.backoff = min(max(2*p.backoff, minBackoff), maxBackoff)
	p.retryAt = p.now().Add(p.backoff)
}

// removal unlinks the files of one committed batch on a goroutine of its
// own. Their names stay in queued until it ends, and events and rescans
// wait for it. So a file that is still in new/ is not queued again, and a
// new file of the same name is not taken for the old one.
type removal struct {
	ids      []spool.FileID
	unlinked []spool.FileID // set by the goroutine before done closes
	done     chan struct{}
}

// startRemoval unlinks ids in the background. The caller has finished the
// previous removal.
func (p *Pickup) startRemoval(ids []spool.FileID) {
	if len(ids) == 0 {
		return
	}
	r := &removal{ids: ids, done: make(chan struct{})}
	p.removing = r
	go func() {
		defer close(r.done)
		r.unlinked = p.removeCommitted(ids)
	}()
}

// removalDone returns a channel that is closed when the running removal
// ends, or nil when none runs.
func (p *Pickup) removalDone() <-chan struct{} {
	if p.removing == nil {
		return nil
	}
	return p.removing.done
}

// finishRemoval waits for the running removal, if any, and queues the
// identities of the files it unlinked for the next commit to forget.
func (p *Pickup) finishRemoval() {
	r := p.removing
	if r == nil {
		return
	}
	<-r.done
	p.removing = nil
	for _, id := range r.ids {
		delete(p.queued, id.Name)
		p.unremoved[id.Name] = true
	}
	for _, id := range r.unlinked {
		delete(p.unremoved, id.Name)
	}
	if len(r.unlinked) == 0 {
		return
	}
	// The next batch's commit removes the identities, which saves a commit
	// per batch. flushForget stores them alone when no batch follows.
	if len(p.forget) == 0 {
		p.forgetBy = p.now().Add(forgetDelay)
	}
	p.forget = append(p.forget, r.unlinked...)
}

// removeCommitted unlinks committed files and syncs their directories,
// and returns the files whose removal is durable. A file that cannot be
// removed keeps its identity, so the next pickup of it unlinks it again
// instead of appending it twice. Directories are handled one at a time,
// and their files are removed relative to a descriptor of the directory,
// which spares the kernel a path walk per file. It runs on the removal's
// goroutine.
func (p *Pickup) removeCommitted(ids []spool.FileID) []spool.FileID {
	var unlinked []spool.FileID
	for _, group := range byDirectory(ids) {
		done, err := p.removeInDir(group)
		if err != nil {
			return nil
		}
		unlinked = append(unlinked, done...)
	}
	if len(unlinked) > 0 {
		crashpoint.Hit(crashpoint.IngestAfterSync)
	}
	return unlinked
}

// removeInDir unlinks files of one directory and syncs it. An error means
// the sync failed, so none of the removals may be taken as durable.
func (p *Pickup) removeInDir(ids []spool.FileID) ([]spool.FileID, error) {
	dir := path.Dir(ids[0].Name)
	fd, err := openDir(p.abs(dir))
	if err != nil {
		p.log.Error("open directory to remove ingested files", "path", p.abs(dir), "files", len(ids), "err", err)
		p.setError(err)
		return nil, nil
	}
	defer unix.Close(fd)

	var unlinked []spool.FileID
	for _, id := range ids {
		err := unlinkIfSame(fd, path.Base(id.Name), id)
		if errors.Is(err, errChangedSinceRead) {
			// Its stored identity no longer matches any file, so it goes
			// like that of a removed file.
			p.log.Warn("file in new/ changed after it was read; it is queued again as a new file, "+
				"so the messages read before may arrive twice", "path", p.abs(id.Name),
				"hint", "write files in tmp/ and rename them into new/ when complete")
			unlinked = append(unlinked, id)
			continue
		}
		if err != nil {
			err = &os.PathError{Op: "remove ingested file", Path: p.abs(id.Name), Err: err}
			p.log.Error("remove ingested file failed; its messages are stored, and the file is "+
				"removed at a later rescan without storing them again", "path", p.abs(id.Name), "err", err,
				"hint", "let the mqspool user delete files in its directory: write permission on the "+
					"directory, and ownership of the file where the directory has the sticky bit")
			p.setError(err)
			continue
		}
		unlinked = append(unlinked, id)
	}
	if len(unlinked) > 0 {
		crashpoint.Hit(crashpoint.IngestAfterUnlink)
	}
	if err := p.fsyncDir(fd); err != nil {
		err = &os.PathError{Op: "fsync", Path: p.abs(dir), Err: err}
		p.log.Error("sync directory after removing ingested files", "path", p.abs(dir), "err", err)
		p.setError(err)
		return nil, err
	}
	return unlinked, nil
}

// byDirectory groups ids by directory, in the order each directory first
// appears.
func byDirectory(ids []spool.FileID) [][]spool.FileID {
	index := make(map[string]int)
	var groups [][]spool.FileID
	for _, id := range ids {
		dir := path.Dir(id.Name)
		i, ok := index[dir]
		if !ok {
			i = len(groups)
			index[dir] = i
			groups = append(groups, nil)
		}
		groups[i] = append(groups[i], id)
	}
	return groups
}

func openDir(dir string) (int, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	return fd, nil
}

// forgetDelay is how long identities of unlinked files wait for the next
// batch to carry them before they are removed in a commit of their own.
const forgetDelay = 100 * time.Millisecond

// flushForget removes the waiting identities once forgetDelay has passed
// without a batch. A failure leaves them for the next try, after a wait
// that doubles up to maxBackoff, and is logged at most once a minute.
func (p *Pickup) flushForget(force bool) {
	if len(p.forget) == 0 || (!force && p.now().Before(p.forgetBy)) {
		return
	}
	if err := p.store.Forget(p.forget); err != nil {
		p.setError(err)
		p.forgetBackoff = min(max(2*p.forgetBackoff, forgetDelay), maxBackoff)
		p.forgetBy = p.now().Add(p.forgetBackoff)
		if p.forgetErrLog.allow(p.now(), time.Minute) {
			p.log.Error("forget identities of removed files", "files", len(p.forget), "err", err,
				"retry_ms", p.forgetBackoff.Milliseconds())
		}
		return
	}
	p.forget = nil
	p.forgetBackoff = 0
}

// forgetOrphans removes, at start, the stored identities that match no
// file in new/. A stop between a file's unlink and the removal of its
// identity leaves such a record, and so does a committed file that was
// deleted or replaced while the daemon was down. Nothing else would
// remove them. Identities whose file is still there stay, so the file is
// unlinked without being queued again.
func (p *Pickup) forgetOrphans() {
	ids, err := p.store.FileIDs()
	if err != nil {
		p.log.Error("list stored file identities", "err", err)
		p.setError(err)
		return
	}
	var orphans []spool.FileID
	for _, id := range ids {
		if !p.fileMatches(id) {
			orphans = append(orphans, id)
		}
	}
	if len(orphans) == 0 {
		return
	}
	if err := p.store.Forget(orphans); err != nil {
		p.log.Error("forget identities of files no longer in new/", "files", len(orphans), "err", err)
		p.setError(err)
		return
	}
	p.log.Info("forgot identities of files no longer in new/", "files", len(orphans))
}

// fileMatches reports whether the file at id's name has the identity id.
// It reports true when lstat fails for a reason other than a missing
// file, so a passing error keeps the record.
func (p *Pickup) fileMatches(id spool.FileID) bool {
	st, err := lstat(p.abs(id.Name))
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
		return false
	}
	if err != nil {
		return true
	}
	return st.Dev == id.Dev && st.Ino == id.Ino && st.Size == id.Size && st.Ctim.Nano() == id.Ctime
}

// sameContent reports whether two identities of a file at one name have
// the same content by what stat shows: the same inode, size and
// modification time. The change time may differ, since a chmod or a hard
// link moves it without touching the content.
func sameContent(a, b spool.FileID) bool {
	return a.Dev == b.Dev && a.Ino == b.Ino && a.Size == b.Size && a.Mtime == b.Mtime
}

// errChangedSinceRead reports a committed file that was written to in
// place after it was read. Removing it would lose what was added.
var errChangedSinceRead = errors.New("file changed after it was read")

// unlinkIfSame removes base from the directory dirfd unless another file
// has replaced it since it was read, or it changed in place, which
// returns errChangedSinceRead.
func unlinkIfSame(dirfd int, base string, id spool.FileID) error {
	var st unix.Stat_t
	err := unix.Fstatat(dirfd, base, &st, unix.AT_SYMLINK_NOFOLLOW)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("lstat before unlink: %w", err)
	}
	if st.Dev != id.Dev || st.Ino != id.Ino {
		return nil
	}
	// Size and modification time, not the change time: a hard link or a
	// chmod changes only the latter, and leaves the content as it was read.
	if st.Size != id.Size || (id.Mtime != 0 && st.Mtim.Nano() != id.Mtime) {
		return errChangedSinceRead
	}
	// TODO: a file renamed over this name between the lstat and the
	// unlink would be removed unread; producers that use unique names
	// are not affected.
	if err := unix.Unlinkat(dirfd, base, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unlink: %w", err)
	}
	return nil
}

func fileIDs(batch []spool.FileBatch) []spool.FileID {
	ids := make([]spool.FileID, len(batch))
	for i, fb := range batch {
		ids[i] = fb.ID
	}
	return ids
}

func batchSize(fb spool.FileBatch) int {
	n := 0
	for i := range fb.Messages {
		n += fb.Messages[i].Size()
	}
	return n
}
