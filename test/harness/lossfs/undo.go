package lossfs

import (
	"fmt"
	"os"
	"syscall"
)

// fileID is a backing inode.
type fileID struct {
	dev, ino uint64
}

// undoLog contains what undoes each change made to one file since its
// last fsync, oldest first.
type undoLog struct {
	// file is a descriptor of the backing inode opened for reading and
	// writing, so that the log follows the inode through renames.
	file    *os.File
	entries []undoEntry
}

// undoEntry restores one change: it writes data back at off and then
// sets the size to size.
type undoEntry struct {
	off  int64
	data []byte
	size int64
}

// undo applies the entries newest first. It returns the bytes written
// back and the bytes cut off the end. A file that only grew since its
// last fsync is undone by truncation alone, with nothing written back.
func (l *undoLog) undo() (written, truncated int64, err error) {
	before, err := l.file.Stat()
	if err != nil {
		return 0, 0, fmt.Errorf("stat %s: %w", l.file.Name(), err)
	}
	for i := len(l.entries) - 1; i >= 0; i-- {
		e := l.entries[i]
		if len(e.data) > 0 {
			if _, err := l.file.WriteAt(e.data, e.off); err != nil {
				return written, 0, fmt.Errorf("write back %d bytes at %d of %s: %w", len(e.data), e.off, l.file.Name(), err)
			}
			written += int64(len(e.data))
		}
		if err := l.file.Truncate(e.size); err != nil {
			return written, 0, fmt.Errorf("restore size %d of %s: %w", e.size, l.file.Name(), err)
		}
	}
	if len(l.entries) > 0 {
		truncated = max(0, before.Size()-l.entries[0].size)
	}
	return written, truncated, nil
}

// record saves the bytes in [off, end) that a change is about to
// overwrite, and the current size, in the undo log of the file open at
// fd. The caller must hold f.mu.
func (f *FS) record(fd int, off, end int64) error {
	l, err := f.logFor(fd)
	if err != nil {
		return err
	}
	st, err := l.file.Stat()
	if err != nil {
		return fmt.Errorf("stat %s: %w", l.file.Name(), err)
	}
	size := st.Size()
	e := undoEntry{off: off, size: size}
	if off < size {
		e.data = make([]byte, min(end, size)-off)
		if _, err := l.file.ReadAt(e.data, off); err != nil {
			return fmt.Errorf("save %d bytes at %d of %s: %w", len(e.data), off, l.file.Name(), err)
		}
	}
	l.entries = append(l.entries, e)
	return nil
}

// recordTruncate saves what a change of the size to newSize loses.
func (f *FS) recordTruncate(fd int, newSize int64) error {
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return fmt.Errorf("stat fd %d: %w", fd, err)
	}
	return f.record(fd, newSize, max(st.Size, newSize))
}

// logFor returns the undo log of the inode open at fd, and starts one if
// there is none. The caller must hold f.mu.
func (f *FS) logFor(fd int) (*undoLog, error) {
	id, err := idOf(fd)
	if err != nil {
		return nil, err
	}
	if l, ok := f.pending[id]; ok {
		return l, nil
	}
	// Opening /proc/self/fd/N gives a descriptor of its own that can
	// read and write, whatever access mode fd was opened with.
	file, err := os.OpenFile(fmt.Sprintf("/proc/self/fd/%d", fd), os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("open backing file of fd %d for its undo log: %w", fd, err)
	}
	l := &undoLog{file: file}
	f.pending[id] = l
	return l, nil
}

// synced drops the undo log of the inode open at fd.
func (f *FS) synced(fd int) error {
	id, err := idOf(fd)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if l, ok := f.pending[id]; ok {
		l.file.Close()
		delete(f.pending, id)
	}
	return nil
}

// dropUnlinked drops the undo logs of files whose last link is gone,
// because a removal is durable at once in this model. The caller must
// hold f.mu.
func (f *FS) dropUnlinked() {
	for id, l := range f.pending {
		var st syscall.Stat_t
		if err := syscall.Fstat(int(l.file.Fd()), &st); err == nil && st.Nlink > 0 {
			continue
		}
		l.file.Close()
		delete(f.pending, id)
	}
}

// Pending returns how many files have changes that a Cut would undo.
func (f *FS) Pending() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.pending)
}

func idOf(fd int) (fileID, error) {
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return fileID{}, fmt.Errorf("stat fd %d: %w", fd, err)
	}
	return fileID{dev: st.Dev, ino: st.Ino}, nil
}
