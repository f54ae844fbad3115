package spool

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
)

// compactTxSize bounds the bytes copied in one transaction of Compact, so
// copying a large database does not hold all of it in memory.
const compactTxSize = 64 << 20

// CompactResult describes a finished Compact.
type CompactResult struct {
	Path     string // the database file, symbolic links resolved
	Before   int64  // file size before, in bytes
	After    int64  // file size after, in bytes
	Messages int64  // messages queued, unchanged by Compact
	// Kept reports that the copy was not smaller, so the file stayed.
	KeptOriginal bool
}

// Compact copies the database at path into a new file that holds only the
// pages in use and puts it in place of the old one. bbolt reuses the pages
// that a drain frees but never returns them to the file system, so after
// a long outage the file keeps its peak size. Compact gives that space
// back.
//
// The database is checked first and a damaged one is left as it is. The
// old file stays locked until the new one is in place. So a daemon started
// meanwhile either gives up waiting for the lock, or gets it after the
// rename and then opens the new file (see openCurrent). The new file gets
// the old one's mode and owner, and is fsynced with its directory before
// and after the rename. On any error the old file is unchanged and the
// copy is removed.
func Compact(path string, lockTimeout time.Duration) (CompactResult, error) {
	resolved, err := filepath.EvalSymlinks(path)
	if err != nil {
		return CompactResult{}, fmt.Errorf("compact %s: %w: check spool.db", path, err)
	}
	info, err := os.Stat(resolved)
	if err != nil {
		return CompactResult{}, fmt.Errorf("compact %s: %w", resolved, err)
	}
	unlock, err := lockCompact(filepath.Dir(resolved))
	if err != nil {
		return CompactResult{}, err
	}
	defer unlock()
	src, err := Open(Options{Path: resolved, LockTimeout: lockTimeout, ReadOnly: true, FullCheck: true})
	if err != nil {
		return CompactResult{}, err
	}
	defer src.Close()

	res := CompactResult{Path: resolved, Before: info.Size(), Messages: src.Stats().Messages}
	tmp := resolved + ".compact"
	if err := copyCompacted(src.db, tmp, info); err != nil {
		os.Remove(tmp)
		return res, err
	}
	if copied, err := os.Stat(tmp); err == nil && copied.Size() >= info.Size() {
		// bbolt grows a new file in steps, so the copy of a file with
		// little free space can come out larger. Keep the original then.
		os.Remove(tmp)
		res.After, res.KeptOriginal = info.Size(), true
		return res, nil
	}
	if err := os.Rename(tmp, resolved); err != nil {
		os.Remove(tmp)
		return res, fmt.Errorf("put the compacted copy in place of %s: %w", resolved, err)
	}
	if err := syncDir(filepath.Dir(resolved)); err != nil {
		return res, err
	}
	after, err := os.Stat(resolved)
	if err != nil {
		return res, fmt.Errorf("compacted %s but cannot read its size: %w", resolved, err)
	}
	res.After = after.Size()
	return res, nil
}

// lockCompact takes an exclusive lock on dir, the database's directory,
// for the whole compact. The source is opened read-only, whose lock other
// readers share, so without it two compacts would write the same copy.
func lockCompact(dir string) (unlock func(), err error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("open %s to lock it for compact: %w", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("another compact is running in %s: wait for it to finish", dir)
		}
		return nil, fmt.Errorf("lock %s for compact: %w", dir, err)
	}
	return func() { f.Close() }, nil
}

// copyCompacted writes a compacted copy of src to tmp with the mode and
// owner of orig, the source file, and fsyncs it and its directory. bbolt
// panics on some damaged pages that the check before did not reach; such
// a panic is returned as an error wrapping ErrCorrupt.
func copyCompacted(src *bolt.DB, tmp string, orig os.FileInfo) (err error) {
	var dst *bolt.DB
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			if dst != nil {
				dst.Close()
			}
			err = fmt.Errorf("%w: bbolt panicked while copying into %s: %v", ErrCorrupt, tmp, r)
		}
	}()

	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove the copy %s left by an earlier compact: %w", tmp, err)
	}
	// The copy is synced once at the end instead of at each of its
	// commits: until the rename, nothing depends on it.
	dst, err = bolt.Open(tmp, orig.Mode().Perm(), &bolt.Options{NoSync: true, Timeout: time.Second})
	if err != nil {
		return noRoom(fmt.Errorf("create the compacted copy %s: %w", tmp, err))
	}
	dst.AllocSize = allocSize // grow in the daemon's steps, not bbolt's 16 MiB
	if err := bolt.Compact(dst, src, compactTxSize); err != nil {
		dst.Close()
		return noRoom(fmt.Errorf("copy into %s: %w", tmp, err))
	}
	if err := keepOwner(tmp, orig); err != nil {
		dst.Close()
		return err
	}
	// bbolt syncs with fdatasync, which may leave the mode and owner set
	// just now unsynced, so the file gets a full fsync.
	if err := dst.Sync(); err != nil {
		dst.Close()
		return noRoom(fmt.Errorf("fsync %s: %w", tmp, err))
	}
	if err := syncFile(tmp); err != nil {
		dst.Close()
		return err
	}
	if err := dst.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp, err)
	}
	return syncDir(filepath.Dir(tmp))
}

// syncFile fsyncs the file at path, its metadata included.
func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open %s for fsync: %w", path, err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", path, err)
	}
	return nil
}

// noRoom adds what to do to an error caused by a full file system.
func noRoom(err error) error {
	if errors.Is(err, syscall.ENOSPC) {
		return fmt.Errorf("%w: free room for a copy of the messages still queued", err)
	}
	return err
}

// keepOwner gives path the mode and owner of orig, so that a daemon
// running as an unprivileged user can still open a database that root
// compacted.
func keepOwner(path string, orig os.FileInfo) error {
	if err := os.Chmod(path, orig.Mode().Perm()); err != nil {
		return fmt.Errorf("set the mode of %s: %w", path, err)
	}
	st, ok := orig.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	if err := os.Chown(path, int(st.Uid), int(st.Gid)); err != nil {
		return fmt.Errorf("give %s the owner %d:%d of the database: %w: run compact as root or as that user", path, st.Uid, st.Gid, err)
	}
	return nil
}
