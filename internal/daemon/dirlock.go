package daemon

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/mqspool/mqspool/internal/format"
)

// spoolDirLock is the lock file in the spool directory. Its name starts
// with a dot, and the pickup reads only new/, so it is never ingested.
const spoolDirLock = ".mqspool.lock"

// lockSpoolDir takes an exclusive lock on the spool directory, so a second
// daemon pointed at the same directory with another database fails at
// start instead of ingesting the same files and publishing them twice.
// It creates the directory when it is missing. The lock lives as long as
// the returned file is open; the kernel drops it when the process ends,
// however it ends.
func lockSpoolDir(dir string) (*os.File, error) {
	if err := format.MkdirAllSync(dir); errors.Is(err, format.ErrDanglingLink) {
		return nil, fmt.Errorf("create spool directory: %w", err)
	} else if err != nil {
		return nil, fmt.Errorf("create spool directory %s: %w: make its parent a directory that the daemon's user can write, or set spool.dir", dir, err)
	}
	path := filepath.Join(dir, spoolDirLock)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open spool directory lock: %w: make %s writable by the daemon's user", err, dir)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("spool directory %s is in use by another mqspool daemon (%w): give each daemon its own spool.dir", dir, err)
	}
	return f, nil
}

// dirIdentity distinguishes a directory from one made later at the same
// path. A new directory may get the inode number of a removed one, so the
// birth time is compared as well where the file system records it.
type dirIdentity struct {
	dev, ino uint64
	birth    unix.StatxTimestamp
}

func identifyDir(path string) (dirIdentity, error) {
	var stx unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, path, 0, unix.STATX_INO|unix.STATX_BTIME, &stx); err != nil {
		return dirIdentity{}, fmt.Errorf("statx %s: %w", path, err)
	}
	id := dirIdentity{dev: unix.Mkdev(stx.Dev_major, stx.Dev_minor), ino: stx.Ino}
	if stx.Mask&unix.STATX_BTIME != 0 {
		id.birth = stx.Btime
	}
	return id, nil
}
