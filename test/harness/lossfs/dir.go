package lossfs

import (
	"context"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// loopbackDir is the set of methods of go-fuse's loopback directory
// handle that the bridge calls.
type loopbackDir interface {
	fs.FileReaddirenter
	fs.FileSeekdirer
	fs.FileReleasedirer
	fs.FileFsyncdirer
}

// dirHandle is an open loopback directory whose fsync makes its entry
// changes durable in the volatile-entries mode. go-fuse sends FSYNCDIR
// to the handle's Fsyncdir in preference to the node's Fsync.
type dirHandle struct {
	inner loopbackDir
	fs    *FS
	id    fileID // the backing directory, which a rename or rmdir does not change
}

var _ loopbackDir = (*dirHandle)(nil)

func (d *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	return d.inner.Readdirent(ctx)
}

func (d *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	return d.inner.Seekdir(ctx, off)
}

func (d *dirHandle) Releasedir(ctx context.Context, flags uint32) {
	d.inner.Releasedir(ctx, flags)
}

// Fsyncdir forwards to the loopback handle unless the entries are
// volatile. Then it waits for the sync delay, as a file's fsync does,
// and makes the directory's entry changes durable. The kernel sends
// fdatasync(2) of a directory here too.
func (d *dirHandle) Fsyncdir(ctx context.Context, flags uint32) syscall.Errno {
	f := d.fs
	f.mu.Lock()
	volatile := f.entries != nil
	f.mu.Unlock()
	if !volatile {
		return d.inner.Fsyncdir(ctx, flags)
	}
	if errno := f.waitSync(ctx); errno != 0 {
		return errno
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.entries == nil {
		return 0
	}
	if err := f.entries.synced(d.id); err != nil {
		return toErrno(err)
	}
	f.dropUnlinked()
	return 0
}
