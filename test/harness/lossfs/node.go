package lossfs

import (
	"context"
	"os"
	"path/filepath"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// node is a loopback node whose open files log their changes, and whose
// removals drop the logs of files left without a link. In the
// volatile-entries mode it also logs the changes of its entries.
type node struct {
	*fs.LoopbackNode
	fs *FS
}

var (
	_ fs.NodeWrapChilder    = (*node)(nil)
	_ fs.NodeOpener         = (*node)(nil)
	_ fs.NodeCreater        = (*node)(nil)
	_ fs.NodeSetattrer      = (*node)(nil)
	_ fs.NodeUnlinker       = (*node)(nil)
	_ fs.NodeRmdirer        = (*node)(nil)
	_ fs.NodeRenamer        = (*node)(nil)
	_ fs.NodeMkdirer        = (*node)(nil)
	_ fs.NodeMknoder        = (*node)(nil)
	_ fs.NodeSymlinker      = (*node)(nil)
	_ fs.NodeLinker         = (*node)(nil)
	_ fs.NodeOpendirHandler = (*node)(nil)
	_ fs.NodeCopyFileRanger = (*node)(nil)
)

func (n *node) WrapChild(ctx context.Context, ops fs.InodeEmbedder) fs.InodeEmbedder {
	return &node{LoopbackNode: ops.(*fs.LoopbackNode), fs: n.fs}
}

func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&syscall.O_TRUNC != 0 {
		// The truncation and its record must not interleave with a write.
		n.fs.mu.Lock()
		defer n.fs.mu.Unlock()
		if errno := n.recordPathTruncate(n.backingPath(), 0); errno != 0 {
			return nil, 0, errno
		}
	}
	fh, fuseFlags, errno := n.LoopbackNode.Open(ctx, flags)
	if errno != 0 {
		return nil, 0, errno
	}
	return n.wrap(fh), fuseFlags, 0
}

func (n *node) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	path := filepath.Join(n.backingPath(), name)
	if flags&syscall.O_TRUNC != 0 {
		if errno := n.recordPathTruncate(path, 0); errno != 0 && errno != syscall.ENOENT {
			return nil, nil, 0, errno
		}
	}
	// The kernel sends CREATE for a name it has not looked up, which may
	// exist: then the open creates no entry.
	_, err := os.Lstat(path)
	existed := err == nil
	inode, fh, fuseFlags, errno := n.LoopbackNode.Create(ctx, name, flags, mode, out)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	if !existed {
		if errno := n.recordAdded(name); errno != 0 {
			fh.(fs.FileReleaser).Release(ctx)
			return nil, nil, 0, errno
		}
	}
	return inode, n.wrap(fh), fuseFlags, 0
}

func (n *node) Tmpfile(ctx context.Context, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	inode, fh, fuseFlags, errno := n.LoopbackNode.Tmpfile(ctx, flags, mode, out)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	return inode, n.wrap(fh), fuseFlags, 0
}

func (n *node) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	f, ours := fh.(*file)
	if ours {
		fh = f.inner
	}
	size, truncates := in.GetSize()
	if !truncates {
		return n.LoopbackNode.Setattr(ctx, fh, in, out)
	}
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	var errno syscall.Errno
	if ours {
		errno = f.withFd(func(fd int) error { return n.fs.recordTruncate(fd, int64(size)) })
	} else {
		errno = n.recordPathTruncate(n.backingPath(), int64(size))
	}
	if errno != 0 {
		return errno
	}
	return n.LoopbackNode.Setattr(ctx, fh, in, out)
}

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	inode, errno := n.LoopbackNode.Mkdir(ctx, name, mode, out)
	if errno != 0 {
		return nil, errno
	}
	return inode, n.recordAdded(name)
}

func (n *node) Mknod(ctx context.Context, name string, mode, rdev uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	inode, errno := n.LoopbackNode.Mknod(ctx, name, mode, rdev, out)
	if errno != 0 {
		return nil, errno
	}
	return inode, n.recordAdded(name)
}

func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	inode, errno := n.LoopbackNode.Symlink(ctx, target, name, out)
	if errno != 0 {
		return nil, errno
	}
	return inode, n.recordAdded(name)
}

func (n *node) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	inode, errno := n.LoopbackNode.Link(ctx, target, name, out)
	if errno != 0 {
		return nil, errno
	}
	return inode, n.recordAdded(name)
}

// recordAdded records the creation of name in the volatile-entries mode.
// The caller must hold n.fs.mu.
func (n *node) recordAdded(name string) syscall.Errno {
	if n.fs.entries == nil {
		return 0
	}
	return toErrno(n.fs.entries.recordAdded(n.backingPath(), name))
}

func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	if n.fs.entries != nil {
		return n.fs.entries.remove(n.backingPath(), name, false)
	}
	errno := n.LoopbackNode.Unlink(ctx, name)
	n.fs.dropUnlinked()
	return errno
}

func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	if n.fs.entries != nil {
		return n.fs.entries.remove(n.backingPath(), name, true)
	}
	return n.LoopbackNode.Rmdir(ctx, name)
}

func (n *node) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	if n.fs.entries != nil {
		to, ok := newParent.(*node)
		if !ok {
			return syscall.EXDEV
		}
		return n.fs.entries.rename(n.backingPath(), name, to.backingPath(), newName, flags)
	}
	errno := n.LoopbackNode.Rename(ctx, name, newParent, newName, flags)
	n.fs.dropUnlinked()
	return errno
}

// OpendirHandle wraps the loopback directory handle, so that an fsync of
// the directory reaches the entry log.
func (n *node) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	fh, fuseFlags, errno := n.LoopbackNode.OpendirHandle(ctx, flags)
	if errno != 0 {
		return nil, 0, errno
	}
	inner, ok := fh.(loopbackDir)
	if !ok {
		// The handle of go-fuse v2.12.1 has all the methods.
		if r, ok := fh.(fs.FileReleasedirer); ok {
			r.Releasedir(ctx, 0)
		}
		return nil, 0, syscall.EIO
	}
	var st syscall.Stat_t
	if err := syscall.Stat(n.backingPath(), &st); err != nil {
		inner.Releasedir(ctx, 0)
		return nil, 0, fs.ToErrno(err)
	}
	return &dirHandle{inner: inner, fs: n.fs, id: fileID{dev: st.Dev, ino: st.Ino}}, fuseFlags, 0
}

// CopyFileRange returns ENOSYS, so the kernel copies through READ and
// WRITE requests, which the undo log records.
func (n *node) CopyFileRange(ctx context.Context, fhIn fs.FileHandle, offIn uint64, out *fs.Inode, fhOut fs.FileHandle, offOut uint64, length uint64, flags uint64) (uint32, syscall.Errno) {
	return 0, syscall.ENOSYS
}

func (n *node) wrap(fh fs.FileHandle) fs.FileHandle {
	return &file{inner: fh.(*fs.LoopbackFile), fs: n.fs}
}

// backingPath returns the node's path in the backing directory.
func (n *node) backingPath() string {
	return filepath.Join(n.RootData.Path, n.Path(n.RootData.RootNode.EmbeddedInode()))
}

// recordPathTruncate records a change of the size of the file at path in
// the backing directory. The caller must hold n.fs.mu.
func (n *node) recordPathTruncate(path string, size int64) syscall.Errno {
	f, err := os.Open(path)
	if err != nil {
		return fs.ToErrno(err)
	}
	defer f.Close()
	return toErrno(n.fs.recordTruncate(int(f.Fd()), size))
}
