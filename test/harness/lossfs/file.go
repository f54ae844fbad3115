package lossfs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// file is an open loopback file whose writes are logged. It forwards
// each call to the loopback file by name instead of embedding it: an
// embedded LoopbackFile would offer the kernel a passthrough descriptor,
// and the kernel would then write to the backing file without asking
// the server.
type file struct {
	inner *fs.LoopbackFile
	fs    *FS
}

var (
	_ fs.FileReader    = (*file)(nil)
	_ fs.FileWriter    = (*file)(nil)
	_ fs.FileWritever  = (*file)(nil)
	_ fs.FileFsyncer   = (*file)(nil)
	_ fs.FileFlusher   = (*file)(nil)
	_ fs.FileReleaser  = (*file)(nil)
	_ fs.FileGetattrer = (*file)(nil)
	_ fs.FileLseeker   = (*file)(nil)
	_ fs.FileAllocater = (*file)(nil)
)

func (f *file) Read(ctx context.Context, buf []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	return f.inner.Read(ctx, buf, off)
}

func (f *file) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if errno := f.withFd(func(fd int) error { return f.fs.record(fd, off, off+int64(len(data))) }); errno != 0 {
		return 0, errno
	}
	return f.inner.Write(ctx, data, off)
}

func (f *file) Writev(ctx context.Context, data [][]byte, off int64) (uint32, syscall.Errno) {
	var n int64
	for _, b := range data {
		n += int64(len(b))
	}
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if errno := f.withFd(func(fd int) error { return f.fs.record(fd, off, off+n) }); errno != 0 {
		return 0, errno
	}
	return f.inner.Writev(ctx, data, off)
}

// Fsync waits for the sync delay and then drops the file's undo log. It
// does not sync the backing file: the backing directory never loses
// power, so its own durability does not matter to the model.
func (f *file) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	if errno := f.fs.waitSync(ctx); errno != 0 {
		return errno
	}
	return f.withFd(f.fs.synced)
}

// waitSync waits for the sync delay, and counts the caller as syncing
// meanwhile for WaitSync.
//
// A caller killed by SIGKILL during the delay gets EINTR, and then the
// sync must not count, as if the power failed before the disk finished.
// So a test that kills its program and then cuts the power hits fsyncs
// in flight.
func (f *FS) waitSync(ctx context.Context) syscall.Errno {
	pid := callerProcess(ctx)
	f.mu.Lock()
	f.syncing[pid]++
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.syncing[pid]--
		f.mu.Unlock()
	}()
	timer := time.NewTimer(time.Duration(f.syncDelay.Load()))
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-ctx.Done():
		// The kernel also interrupts requests for signals that Go sends
		// to preempt goroutines. Only a kill leaves the sync unfinished.
		if callerKilled(ctx) {
			return syscall.EINTR
		}
		<-timer.C
	}
	return 0
}

// Allocate logs the old size and forwards mode 0 and FALLOC_FL_KEEP_SIZE.
// It rejects the modes that change data inside the file, such as
// punching holes, with EOPNOTSUPP, because the log does not save what
// they discard.
func (f *file) Allocate(ctx context.Context, off, size uint64, mode uint32) syscall.Errno {
	if mode&^unix.FALLOC_FL_KEEP_SIZE != 0 {
		return syscall.EOPNOTSUPP
	}
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if errno := f.withFd(func(fd int) error { return f.fs.record(fd, int64(off), int64(off)) }); errno != 0 {
		return errno
	}
	return f.inner.Allocate(ctx, off, size, mode)
}

func (f *file) Flush(ctx context.Context) syscall.Errno { return f.inner.Flush(ctx) }

func (f *file) Release(ctx context.Context) syscall.Errno { return f.inner.Release(ctx) }

func (f *file) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	return f.inner.Getattr(ctx, out)
}

func (f *file) Lseek(ctx context.Context, off uint64, whence uint32) (uint64, syscall.Errno) {
	return f.inner.Lseek(ctx, off, whence)
}

// callerKilled reports whether the thread that sent the request has a
// SIGKILL pending or is gone.
func callerKilled(ctx context.Context) bool {
	status, ok := callerStatus(ctx)
	if !ok {
		return true
	}
	const sigkillBit = 1 << (syscall.SIGKILL - 1)
	for _, name := range []string{"SigPnd", "ShdPnd"} {
		mask, err := strconv.ParseUint(status[name], 16, 64)
		if err == nil && mask&sigkillBit != 0 {
			return true
		}
	}
	return false
}

// callerProcess returns the process id of the thread that sent the
// request (FUSE passes the thread id), or 0 when it is gone.
func callerProcess(ctx context.Context) int {
	status, ok := callerStatus(ctx)
	if !ok {
		return 0
	}
	pid, _ := strconv.Atoi(status["Tgid"])
	return pid
}

// callerStatus returns the fields of /proc/TID/status of the thread that
// sent the request, and false when it is gone.
func callerStatus(ctx context.Context) (map[string]string, bool) {
	caller, ok := fuse.FromContext(ctx)
	if !ok {
		return nil, false
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", caller.Pid))
	if err != nil {
		return nil, false
	}
	fields := map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		name, value, _ := strings.Cut(line, ":")
		fields[name] = strings.TrimSpace(value)
	}
	return fields, true
}

// withFd calls fn with the backing descriptor of the file.
func (f *file) withFd(fn func(fd int) error) syscall.Errno {
	// PassthroughFd only returns the descriptor here: the mount disables
	// FUSE passthrough, and file does not offer one to the kernel.
	fd, ok := f.inner.PassthroughFd()
	if !ok {
		return syscall.EBADF
	}
	return toErrno(fn(fd))
}

// toErrno returns the errno inside err, EIO when there is none, or 0 for
// nil.
func toErrno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno
	}
	return syscall.EIO
}
