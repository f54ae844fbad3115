package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"time"
	"unsafe"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// alwaysCheckBelow is the file size up to which Open checks the database
// even after a clean close, so that damage done while the daemon was
// stopped is found early. Larger files are checked only after an unclean
// stop, because a check reads every page.
// TODO: a large file damaged after a clean close is found only when a read
// hits the damaged page. The spool then returns ErrCorrupt, and the next
// Open checks the file.
var alwaysCheckBelow int64 = 64 << 20 // a variable so tests can lower it

// maxCheckErrors is how many check findings are kept for the error.
const maxCheckErrors = 5

// isDamage reports whether an Open error comes from the file's contents.
// Errors from the operating system (permissions, a missing directory, a
// lock held elsewhere, no memory for the mapping) are not damage, so the
// file is not renamed aside for them.
func isDamage(err error) bool {
	if errors.Is(err, ErrLocked) {
		return false
	}
	if errors.Is(err, ErrCorrupt) {
		return true
	}
	var pathErr *fs.PathError
	var errno syscall.Errno
	return !errors.As(err, &pathErr) && !errors.As(err, &errno)
}

// checkDB runs bbolt's consistency check over the whole file. It reads
// every page, so it costs about as much as reading the file. A 409 MiB
// file with 300 000 messages took 190 ms from the page cache (go test on
// a 2-core AMD EPYC VM).
// TODO: the check runs in a goroutine of bbolt's own, where a fault on a
// page id far past the mapping still crashes the process.
func checkDB(db *bolt.DB) error {
	var found []string
	err := db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			if len(found) < maxCheckErrors {
				found = append(found, err.Error())
			}
		}
		if len(found) == 0 {
			found = findOutOfRange(tx, maxCheckErrors)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if len(found) > 0 {
		return fmt.Errorf("consistency check failed: %s", strings.Join(found, "; "))
	}
	return nil
}

// findOutOfRange lists up to limit keys and values whose bytes do not lie
// within the pages in use. bbolt's Check does not compare the sizes in a
// leaf element with its page, so a damaged size passes it, and a later
// read of that value runs past the mapped file and faults. The walk
// compares addresses and reads no byte of a key or value.
// NOTE: buckets stored inline in their parent are not checked, because
// bbolt copies an unaligned inline bucket to the heap. bbolt (v1.5.0,
// bucket.go) inlines only buckets under a quarter page, such as meta.
func findOutOfRange(tx *bolt.Tx, limit int) []string {
	start := tx.DB().Info().Data
	end := start + uintptr(tx.Size())
	var found []string
	var walk func(b *bolt.Bucket, path string)
	walk = func(b *bolt.Bucket, path string) {
		inline := b.Root() == 0
		c := b.Cursor()
		i := 0
		for k, v := c.First(); k != nil && len(found) < limit; k, v = c.Next() {
			i++
			if !inline && (!withinMapping(k, start, end) || !withinMapping(v, start, end)) {
				found = append(found, fmt.Sprintf(
					"bucket %q: element %d has a key or value size that reaches past the %d bytes in use",
					path, i, end-start))
				continue
			}
			if v == nil {
				if child := b.Bucket(k); child != nil {
					walk(child, path+"/"+string(k))
				}
			}
		}
	}
	_ = tx.ForEach(func(name []byte, b *bolt.Bucket) error {
		walk(b, string(name))
		return nil
	})
	return found
}

// withinMapping reports whether b is empty or lies within [start, end).
func withinMapping(b []byte, start, end uintptr) bool {
	if len(b) == 0 {
		return true
	}
	first := uintptr(unsafe.Pointer(&b[0]))
	return first >= start && first < end && uintptr(len(b)) <= end-first
}

// renameAside moves a damaged database to PATH.corrupt-TIMESTAMP and
// fsyncs the directory, so the rename survives a power cut before the new
// database is created. It holds the file's lock while renaming, so a
// database that another process has open is never moved. lockHeld means
// that this process holds the lock already.
func renameAside(path string, lockTimeout time.Duration, lockHeld bool) (string, error) {
	if !lockHeld {
		unlock, err := lockFile(path, lockTimeout)
		if err != nil {
			return "", err
		}
		defer unlock()
	}

	aside := path + ".corrupt-" + time.Now().UTC().Format("20060102T150405.000000000Z")
	if err := os.Rename(path, aside); err != nil {
		return "", fmt.Errorf("rename %s to %s: %w", path, aside, err)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return aside, err
	}
	return aside, nil
}

// lockFile takes the same exclusive flock that bbolt takes on its file,
// retrying until timeout.
func lockFile(path string, timeout time.Duration) (unlock func(), err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open %s to lock it: %w", path, err)
	}
	deadline := time.Now().Add(timeout)
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) || time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("%w: %s: stop the running daemon or use another spool.db", ErrLocked, path)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open directory %s for fsync: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync directory %s: %w", dir, err)
	}
	return nil
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// view runs fn in a read transaction and turns a bbolt panic into
// ErrCorrupt. SetPanicOnFault makes a fault on a damaged mapped page a
// panic too, instead of a crash.
func (s *Spool) view(op string, fn func(tx *bolt.Tx) error) (err error) {
	if err := s.checkOpen(); err != nil {
		return err
	}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer s.recoverPanic(&err, op)
	return s.mapErr(s.db.View(fn))
}

// update runs fn in a write transaction; the caller holds writeMu.
func (s *Spool) update(op string, fn func(tx *bolt.Tx) error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer s.recoverPanic(&err, op)
	return s.mapErr(s.db.Update(fn))
}

// write runs fn in a write transaction of its own; see writeLocked.
func (s *Spool) write(op string, fn func(tx *bolt.Tx, t *totals) error) error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	return s.writeLocked(op, fn)
}

// writeLocked runs fn in one fsync'd write transaction with a copy of the
// totals, stores the totals in the meta bucket in the same transaction,
// and publishes them in memory once the commit succeeded. The caller
// holds writeMu.
func (s *Spool) writeLocked(op string, fn func(tx *bolt.Tx, t *totals) error) error {
	if err := s.checkWritable(); err != nil {
		return err
	}

	s.mu.Lock()
	t := s.totals
	s.mu.Unlock()
	// Only this transaction writes while writeMu is held, so the growth
	// of bbolt's total write time is this commit's.
	wrote := s.writeTime()
	err := s.update(op, func(tx *bolt.Tx) error {
		if err := fn(tx, &t); err != nil {
			return err
		}
		return putTotals(tx.Bucket(bucketMeta), &t)
	})
	if err != nil {
		return err
	}
	took := s.writeTime() - wrote
	s.mu.Lock()
	s.totals = t
	s.commitTimes.observe(took)
	s.mu.Unlock()
	return nil
}

// writeTime returns the time bbolt has spent writing and syncing the
// database file since Open.
func (s *Spool) writeTime() time.Duration {
	st := s.db.Stats()
	return st.TxStats.GetWriteTime()
}

func (s *Spool) recoverPanic(err *error, op string) {
	r := recover()
	if r == nil {
		return
	}
	s.mu.Lock()
	first := !s.corrupt
	if first {
		s.corrupt = true
		close(s.damaged)
	}
	s.mu.Unlock()
	s.log.Error("spool database is damaged; restart the daemon so it checks and renames the file aside",
		"path", s.opts.Path, "operation", op, "panic", r)
	if _, fault := r.(interface{ Addr() uintptr }); fault && first && !s.opts.ReadOnly {
		s.markDamaged(fmt.Sprintf("bbolt faulted during %s: %v", op, r))
	}
	*err = fmt.Errorf("%w: %s: bbolt panicked during %s: %v", ErrCorrupt, s.opts.Path, op, r)
}

// damageMarkSuffix ends the name of the file beside the database that
// records a memory fault on its mapped pages.
const damageMarkSuffix = ".damaged"

// markDamaged records cause and the database file's identity in a file
// beside the database, so the next Open renames that file aside even when
// its check passes. The check does not read every byte, so a damaged
// size field can pass it while every read of that value faults. Without
// the mark the daemon would start, fault and stop again for ever.
func (s *Spool) markDamaged(cause string) {
	path := s.opts.Path + damageMarkSuffix
	text := time.Now().UTC().Format(time.RFC3339) + " " + cause + "\n"
	if id := fileIdentity(s.opts.Path); id != "" {
		text += damageMarkFile + id + "\n"
	}
	if err := writeSynced(path, []byte(text)); err != nil {
		s.log.Error("recording the damage for the next start failed, so that start may not rename "+
			"the database aside", "path", path, "err", err, "hint", "stop mqspool, move "+
			s.opts.Path+" aside and salvage it with mqspool spool salvage")
	}
}

// writeSynced writes data to path and fsyncs the file and its directory.
func writeSynced(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if closeErr := f.Close(); err == nil {
		err = closeErr
	}
	if err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}

// damageMarkFile starts the line of a damage mark that names the file
// that faulted by its device and inode numbers.
const damageMarkFile = "file "

// fileIdentity returns the device and inode numbers of the file at path,
// as "DEV:INO", or "" when it cannot be read.
func fileIdentity(path string) string {
	info, err := os.Stat(path)
	if err != nil {
		return ""
	}
	st, ok := info.Sys().(*syscall.Stat_t)
	if !ok {
		return ""
	}
	return fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}

// damageMark returns the cause recorded by markDamaged for the database
// at path, or "" when there is none. stale is true when the mark names
// another file than the one now at path, as after an operator replaced
// the database that faulted with a copy from a backup.
// NOTE: a copy written over the damaged file in place (cp onto it) keeps
// its inode, so the mark still applies and the copy is renamed aside.
func damageMark(path string) (cause string, stale bool) {
	data, err := os.ReadFile(path + damageMarkSuffix)
	if err != nil {
		return "", false
	}
	var lines []string
	for line := range strings.Lines(string(data)) {
		line = strings.TrimSpace(line)
		if id, ok := strings.CutPrefix(line, damageMarkFile); ok {
			stale = id != fileIdentity(path)
		} else if line != "" {
			lines = append(lines, line)
		}
	}
	if cause = strings.Join(lines, " "); cause == "" {
		cause = "a fault on its mapped pages"
	}
	return cause, stale
}

// clearDamageMark removes the mark once the database it names was renamed
// aside or is gone.
func clearDamageMark(path string) error {
	err := os.Remove(path + damageMarkSuffix)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return syncDir(filepath.Dir(path))
}

func (s *Spool) mapErr(err error) error {
	if errors.Is(err, berrors.ErrDatabaseNotOpen) || errors.Is(err, berrors.ErrTxClosed) {
		return fmt.Errorf("%w: %w", ErrClosed, err)
	}
	return err
}

func putTotals(meta *bolt.Bucket, t *totals) error {
	for _, kv := range []struct {
		key []byte
		val uint64
	}{
		{keyLastSeq, t.lastSeq},
		{keyMessages, uint64(t.messages)},
		{keyBytes, uint64(t.bytes)},
		{keyDropped, t.dropped},
		{keyExpired, t.expired},
	} {
		if err := putU64(meta, kv.key, kv.val); err != nil {
			return err
		}
	}
	return nil
}

func getU64(b *bolt.Bucket, key []byte) uint64 {
	v := b.Get(key)
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

func putU64(b *bolt.Bucket, key []byte, v uint64) error {
	return b.Put(key, binary.BigEndian.AppendUint64(nil, v))
}

// bucketLen counts keys with a cursor, because Bucket.Stats reads only
// committed pages and misses changes made earlier in the same write
// transaction. Use it only on the small flows and incoming buckets.
func bucketLen(b *bolt.Bucket) int {
	if b == nil {
		return 0
	}
	n := 0
	c := b.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		n++
	}
	return n
}
