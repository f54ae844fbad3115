package inbox

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// ErrInUse reports an inbox directory that another process has locked.
var ErrInUse = errors.New("in use by another mqspool daemon")

// lockDir takes an exclusive lock on the inbox directory before the first
// count, since that count removes what is in tmp/: a second daemon on the
// same directory would remove the files the first is about to rename into
// new/. It locks the directory itself rather than a file in it, because
// that needs no write permission: only tmp/ and new/ must be writable,
// and the file system may be read-only. The lock is kept until Close; the
// kernel drops it when the process ends, however it ends.
func (in *Inbox) lockDir() error {
	if in.lock != nil {
		return nil
	}
	f, err := os.Open(in.opts.Dir)
	if err != nil {
		return fmt.Errorf("open inbox directory to lock it: %w: make it readable by the daemon's user", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return fmt.Errorf("inbox directory %s is %w: give each subscription of each daemon a dir of its own", in.opts.Dir, ErrInUse)
		}
		return fmt.Errorf("lock inbox directory %s: %w", in.opts.Dir, err)
	}
	in.lock = f
	return nil
}

// relockDir locks the inbox directory again when the one locked is no
// longer at its path, because the old lock guards a directory no one else
// can reach. That happens after a consumer removed the whole inbox and
// makeDirs, the consumer or another daemon created it anew. It also
// retries a relock that failed. Before the first count, recount takes the
// lock instead.
func (in *Inbox) relockDir() error {
	if in.lock == nil {
		if !in.ready {
			return nil
		}
		return in.lockDir()
	}
	var locked, current unix.Stat_t
	if unix.Fstat(int(in.lock.Fd()), &locked) == nil && unix.Stat(in.opts.Dir, &current) == nil &&
		locked.Dev == current.Dev && locked.Ino == current.Ino {
		return nil
	}
	in.lock.Close()
	in.lock = nil
	return in.lockDir()
}

// Close releases the inbox directory's lock. Call it after Run returned.
func (in *Inbox) Close() error {
	if in.lock == nil {
		return nil
	}
	err := in.lock.Close()
	in.lock = nil
	return err
}
