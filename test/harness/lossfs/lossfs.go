// Package lossfs mounts a FUSE file system that loses unsynced writes
// when a test cuts the power, so that a missing fsync or fdatasync shows
// up as lost or damaged data.
//
// The mount passes every operation through to a backing directory (the
// go-fuse loopback node). For each backing inode it keeps an undo log of
// every write, truncate and fallocate since that file's last fsync or
// fdatasync: before a change it saves the bytes the change overwrites and
// the old size. An fsync or fdatasync of any handle of the file drops the
// log, because the data is durable from then on. Cut unmounts, applies
// every log in reverse order to the backing files and mounts again,
// which also drops the kernel's page cache of the old contents.
//
// By default the model is optimistic about metadata, like a journaling
// file system that commits each metadata change at once: create, mkdir,
// rename, unlink, link, chmod and utimes are durable as soon as they
// return.
//
// SetVolatileEntries(true) takes the pessimistic POSIX reading instead:
// a change of a directory's entries is durable only once that directory
// is fsynced (fsync or fdatasync of any handle of it). Cut undoes the
// other changes, newest first:
//   - create, mknod, mkdir, symlink and link: the new entry goes, and a
//     directory goes with everything in it, synced or not;
//   - unlink and rmdir: the entry comes back with its inode as it was
//     (the same inode number, and the file data as at the file's last
//     fsync);
//   - rename of x in directory A to y in B: the new y (and the removal of
//     the y it replaced) is undone unless B was synced, and the removal of
//     x unless A was synced. So with only B synced a file has both names
//     afterwards, as after a crash between the two directory writes, and
//     with only A synced it has neither and is lost. A directory cannot
//     have two names: with only B synced it keeps the new name alone.
//
// The links that the mount makes and removes in its holding directory
// do not move the change time it shows, because programs identify files
// by inode and change time. An inode that an undo restored shows the
// change time from before the undone change, or from after it when one
// part of a rename stays. The program's next change of the inode shows
// its real change time again.
//
// An fsync of a file does not make its own entry durable. Neither mode
// models a rename or unlink that reaches the disk before the data
// written earlier. Nor does it model torn sectors. A cut undoes all of a
// file's unsynced writes, where a disk might keep some of them.
//
// SetSyncDelay makes each fsync take time, and a caller killed by
// SIGKILL during that time leaves its file unsynced, so a test can cut
// the power while a program waits for an fsync.
//
// Writes reach the server before write(2) returns: the mount requests no
// writeback cache and no FUSE passthrough, and opens without direct_io,
// so that read-only mmap (bbolt's) still works through the page cache.
// Shared writable mmap is not tracked, because its pages reach the server
// only when the kernel writes them back.
//
// The process that mounts serves the requests, so it must not map files
// of the mount itself. A page fault there can wait for a server goroutine
// that the Go runtime has stopped for garbage collection, and then the
// process hangs. Map them from a child process.
package lossfs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// FS is a mounted loss-simulating file system.
type FS struct {
	Backing    string // the directory that stores the data
	Mountpoint string // where the file system is mounted

	mu      sync.Mutex // guards pending, entries and ctimes, and serializes every logged change
	pending map[fileID]*undoLog
	ctimes  shownCtimes
	// entries is the log of directory entry changes, or nil unless the
	// entries are volatile.
	entries *entryLog
	server  *fuse.Server
	// syncing counts the fsyncs in their delay per calling process.
	syncing map[int]int
	// syncDelay is how long each fsync and fdatasync waits before it
	// makes its file or directory durable, in nanoseconds.
	syncDelay atomic.Int64
}

// CutStats describes what one Cut undid.
type CutStats struct {
	Files     int   // files with unsynced changes
	Bytes     int64 // bytes written back from the undo logs
	Truncated int64 // bytes cut off the ends of files that grew since their last fsync
	Entries   int   // directory entries put back as they were at their directory's last fsync
}

// Mount mounts backing at mountpoint. Both directories must exist, and
// the caller must be root, because the mount uses mount(2) directly
// instead of fusermount.
func Mount(backing, mountpoint string) (*FS, error) {
	f := &FS{
		Backing:    backing,
		Mountpoint: mountpoint,
		pending:    map[fileID]*undoLog{},
		ctimes:     shownCtimes{},
		syncing:    map[int]int{},
	}
	if err := f.mount(); err != nil {
		return nil, err
	}
	return f, nil
}

func (f *FS) mount() error {
	rootOps, err := fs.NewLoopbackRoot(f.Backing)
	if err != nil {
		return fmt.Errorf("open backing directory %s: %w", f.Backing, err)
	}
	loopback := rootOps.(*fs.LoopbackNode)
	root := &node{LoopbackNode: loopback, fs: f}
	loopback.RootData.RootNode = root
	opts := &fs.Options{MountOptions: fuse.MountOptions{
		DirectMountStrict:    true,
		FsName:               f.Backing,
		Name:                 "lossfs",
		DisabledCapabilities: fuse.CAP_PASSTHROUGH | fuse.CAP_WRITEBACK_CACHE,
	}}
	server, err := fs.Mount(f.Mountpoint, root, opts)
	if err != nil {
		return fmt.Errorf("mount lossfs on %s (needs root and /dev/fuse): %w", f.Mountpoint, err)
	}
	f.server = server
	return nil
}

// SetSyncDelay makes each later fsync and fdatasync of a file wait for
// delay before the file counts as durable, the way a disk takes time to
// flush. A longer delay makes a cut more likely to find writes that a
// program is waiting to sync.
func (f *FS) SetSyncDelay(delay time.Duration) { f.syncDelay.Store(int64(delay)) }

// SetVolatileEntries sets whether a Cut also undoes the directory entry
// changes made in each directory since its last fsync. Turning it off
// makes every pending entry change durable. Turning it on creates a
// holding directory next to Backing, which must be on the same file
// system.
func (f *FS) SetVolatileEntries(on bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if on == (f.entries != nil) {
		return nil
	}
	if !on {
		err := f.entries.close()
		f.entries = nil
		f.dropUnlinked()
		return err
	}
	l, err := newEntryLog(f.Backing, f.ctimes)
	if err != nil {
		return err
	}
	f.entries = l
	return nil
}

// WaitSync waits until process pid is inside an fsync or fdatasync of a
// file, so that a kill at once cuts it short. It returns false when that
// did not happen within timeout. It needs a sync delay long enough to
// notice, a millisecond or more.
func (f *FS) WaitSync(pid int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		f.mu.Lock()
		n := f.syncing[pid]
		f.mu.Unlock()
		if n > 0 {
			return true
		}
		time.Sleep(200 * time.Microsecond)
	}
	return false
}

// Unmount unmounts the file system and discards the undo logs and the
// entry log, which leaves every unsynced change in the backing
// directory. It retries for up to 5 s while the mount is busy.
func (f *FS) Unmount() error {
	if err := f.unmount(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for id, l := range f.pending {
		l.file.Close()
		delete(f.pending, id)
	}
	if f.entries == nil {
		return nil
	}
	err := f.entries.close()
	f.entries = nil
	return err
}

func (f *FS) unmount() error {
	if f.server == nil {
		return nil
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := f.server.Unmount()
		if err == nil {
			f.server.Wait()
			f.server = nil
			return nil
		}
		if !errors.Is(err, syscall.EBUSY) || time.Now().After(deadline) {
			return fmt.Errorf("unmount %s: %w (end every process that uses it first)", f.Mountpoint, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Cut simulates a power cut: it unmounts, rolls every file back to its
// contents at its last fsync, in the volatile-entries mode every
// directory to its entries at its last fsync, and mounts again. Every
// process that uses the mount must have ended before, or the unmount
// fails.
func (f *FS) Cut() (CutStats, error) {
	if err := f.unmount(); err != nil {
		return CutStats{}, err
	}
	stats, err := f.revert()
	if err != nil {
		return stats, err
	}
	return stats, f.mount()
}

// revert undoes the entry changes, then applies every undo log of a file
// that still has a link and drops them all. A file whose last link the
// entry undo removed is gone, so its log has nothing to restore.
func (f *FS) revert() (stats CutStats, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.entries != nil {
		defer func() {
			if kerr := f.entries.keepCtimes(); err == nil {
				err = kerr
			}
		}()
		n, err := f.entries.undoAll()
		stats.Entries = n
		if err != nil {
			return stats, err
		}
	}
	for id, l := range f.pending {
		var st syscall.Stat_t
		if err := syscall.Fstat(int(l.file.Fd()), &st); err == nil && st.Nlink == 0 {
			l.file.Close()
			delete(f.pending, id)
			continue
		}
		written, truncated, err := l.undo()
		l.file.Close()
		delete(f.pending, id)
		if err != nil {
			return stats, err
		}
		stats.Files++
		stats.Bytes += written
		stats.Truncated += truncated
	}
	return stats, nil
}

// Start mounts a new backing directory at a new mountpoint, both under
// t.TempDir, and unmounts it when the test ends. It skips the test
// unless it runs as root with a usable /dev/fuse and may mount, so a
// machine or container without FUSE skips rather than fails. When
// POWERLOSS_REQUIRED is set, it fails the test instead.
func Start(t testing.TB) *FS {
	t.Helper()
	requireFUSE(t)
	root := t.TempDir()
	backing := filepath.Join(root, "backing")
	mountpoint := filepath.Join(root, "mnt")
	for _, dir := range []string{backing, mountpoint} {
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	f, err := Mount(backing, mountpoint)
	if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) {
		skipWithoutFUSE(t, fmt.Sprintf("FUSE is not usable here: %v", err))
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := f.Unmount(); err != nil {
			t.Errorf("%v; detaching it instead", err)
			syscall.Unmount(mountpoint, syscall.MNT_DETACH)
		}
	})
	return f
}

func requireFUSE(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		skipWithoutFUSE(t, "lossfs mounts FUSE with mount(2), which needs root: run the test as root")
	}
	dev, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err != nil {
		skipWithoutFUSE(t, fmt.Sprintf("FUSE is not usable here: %v", err))
	}
	dev.Close()
}

// requiredEnv is the variable that turns a skip for want of FUSE into a
// failure. make test-powerloss sets it, because a run of that target
// that skipped every test would otherwise pass.
const requiredEnv = "POWERLOSS_REQUIRED"

func skipWithoutFUSE(t testing.TB, reason string) {
	t.Helper()
	if os.Getenv(requiredEnv) != "" {
		t.Fatalf("%s (%s is set, so the test fails instead of skipping)", reason, requiredEnv)
	}
	t.Skip(reason)
}
