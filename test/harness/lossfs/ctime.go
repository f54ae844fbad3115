package lossfs

import (
	"context"
	"fmt"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// ctimeOverride is the change time that the mount reports for a
// backing inode while the inode's own change time still equals backing.
// The program's next change of the inode moves its own change time and
// so ends the override.
type ctimeOverride struct {
	backing, shown unix.Timespec
}

// shownCtimes maps backing inode numbers to overrides of their change
// time. The links, unlinks and renames of the holding directory and of
// an undo move the change time of inodes that the program did not
// change, such as a file whose unlink a Cut undid. The program
// under test identifies files by inode and change time, so the mount
// shows the change time from before those moves.
//
// The key is the inode number alone, because FUSE attributes carry no
// device. Every inode in the map passed through the holding directory,
// which is on the backing directory's file system.
type shownCtimes map[uint64]ctimeOverride

// shown returns the change time that the mount shows for st.
func (m shownCtimes) shown(st *unix.Stat_t) unix.Timespec {
	if o, ok := m[st.Ino]; ok && o.backing == st.Ctim {
		return o.shown
	}
	return st.Ctim
}

// keep makes the mount show shown for the inode open at fd, as long as
// its own change time stays as it is now.
func (m shownCtimes) keep(fd int, shown unix.Timespec) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("stat fd %d to keep its change time: %w", fd, err)
	}
	if st.Nlink == 0 || st.Ctim == shown {
		delete(m, st.Ino)
		return nil
	}
	m[st.Ino] = ctimeOverride{backing: st.Ctim, shown: shown}
	return nil
}

// patch replaces the change time in attr, which FromStat filled from a
// backing inode, by the one the mount shows.
func (m shownCtimes) patch(attr *fuse.Attr) {
	o, ok := m[attr.Ino]
	if !ok || attr.Ctime != uint64(o.backing.Sec) || attr.Ctimensec != uint32(o.backing.Nsec) {
		return
	}
	attr.Ctime, attr.Ctimensec = uint64(o.shown.Sec), uint32(o.shown.Nsec)
}

// patchCtime applies the change time overrides to attr.
func (f *FS) patchCtime(attr *fuse.Attr) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ctimes.patch(attr)
}

func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	inode, errno := n.LoopbackNode.Lookup(ctx, name, out)
	if errno == 0 {
		n.fs.patchCtime(&out.Attr)
	}
	return inode, errno
}

func (n *node) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	errno := n.LoopbackNode.Getattr(ctx, fh, out)
	if errno == 0 {
		n.fs.patchCtime(&out.Attr)
	}
	return errno
}
