package pickup

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"syscall"

	"github.com/mqspool/mqspool/internal/format"
	"github.com/mqspool/mqspool/internal/spool"
	"golang.org/x/sys/unix"
)

// outcome is the result of preparing one queued file.
type outcome int

const (
	outcomeDone     outcome = iota // gone, rejected, already committed or left for later
	outcomeReady                   // parsed and ready to append
	outcomeParts                   // checked; p.parted appends it in parts
	outcomeStoreErr                // the store failed; keep the file queued
)

// rejection is bad input: the file moves to failed/ with this reason.
type rejection struct{ reason string }

func (r *rejection) Error() string { return r.reason }

func reject(format string, args ...any) error {
	return &rejection{reason: fmt.Sprintf(format, args...)}
}

// errRetry reports a file that changed while it was read. The pickup
// tries it again once it settles.
var errRetry = errors.New("file changed while it was read")

// prepare reads and parses one queued file. A file that an earlier run
// committed but could not unlink before it stopped is not looked up here:
// the store's AppendForget finds its identity and skips it, and the
// pickup then unlinks it like any committed file. For a file to append
// in parts it returns the file's content, and p.parted describes it.
func (p *Pickup) prepare(rel string) (spool.FileBatch, []byte, outcome) {
	id, data, err := p.readFile(rel)
	if f := p.parted; f != nil && f.id.Name == rel && (err == nil && !sameContent(id, f.id) || errors.Is(err, fs.ErrNotExist)) {
		p.partedGone(id, err)
	}
	if err == nil {
		delete(p.unreadable, rel)
		if p.parted != nil && p.parted.id.Name == rel {
			// Checked on an earlier try. The parts keep the identity
			// they were stored under, also when a chmod or a hard link
			// moved the change time since.
			return spool.FileBatch{ID: p.parted.id}, data, outcomeParts
		}
		r := p.matchRoute(rel)
		msgs, total, parted, perr := p.collect(id, data, r)
		if perr == nil && parted {
			p.parted = &partedFile{id: id, route: r, total: total}
			return spool.FileBatch{ID: id}, data, outcomeParts
		}
		if perr == nil {
			return spool.FileBatch{ID: id, Messages: msgs}, nil, outcomeReady
		}
		err = &rejection{reason: perr.Error()}
	}
	p.handleReadError(rel, err)
	return spool.FileBatch{}, nil, outcomeDone
}

// handleReadError sorts a failure to read or parse a file into rejection,
// retry or nothing to do.
func (p *Pickup) handleReadError(rel string, err error) {
	var rej *rejection
	switch {
	case errors.As(err, &rej):
		p.rejectFile(rel, rej.reason)
	case errors.Is(err, errRetry):
		// The settle timer looks at it again, so a file that keeps
		// changing is not read in a loop.
		if info, lerr := os.Lstat(p.abs(rel)); lerr == nil {
			p.settling[rel] = settleRef{size: info.Size(), mtime: info.ModTime(), since: p.now()}
		}
	case errors.Is(err, fs.ErrNotExist):
		// Gone before it was read: taken by an earlier event or removed.
	case errors.Is(err, fs.ErrPermission):
		p.logUnreadable(rel, err)
	default:
		p.log.Error("read spool file", "path", p.abs(rel), "err", err)
		p.setError(err)
	}
}

// readFile checks, opens and reads a file and returns its identity and
// contents. Non-regular files are rejected before they are opened,
// because opening a FIFO can block.
func (p *Pickup) readFile(rel string) (spool.FileID, []byte, error) {
	if err := format.CheckName(rel); err != nil {
		return spool.FileID{}, nil, reject("%v", err)
	}
	name := p.abs(rel)
	before, err := lstat(name)
	if err != nil {
		return spool.FileID{}, nil, err
	}
	if err := checkType(before.Mode); err != nil {
		return spool.FileID{}, nil, err
	}
	limit := p.sizeLimit(format.KindOf(rel))
	if before.Size > limit {
		return spool.FileID{}, nil, reject("file is %d bytes, over the limit of %d bytes for "+
			"this format (publish.max_message_bytes is %d): split it or raise the limit",
			before.Size, limit, p.opts.MaxMessageBytes)
	}

	fd, err := unix.Open(name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ELOOP) {
		return spool.FileID{}, nil, reject("file became a symbolic link while it was opened: " +
			"mqspool reads only regular files")
	}
	if err != nil {
		return spool.FileID{}, nil, &os.PathError{Op: "open", Path: name, Err: err}
	}
	defer unix.Close(fd)
	return readOpen(fd, rel, before, limit)
}

// readOpen reads an open file and checks that it is the file lstat saw
// and that it did not change while it was read.
func readOpen(fd int, rel string, before *unix.Stat_t, limit int64) (spool.FileID, []byte, error) {
	var opened unix.Stat_t
	if err := unix.Fstat(fd, &opened); err != nil {
		return spool.FileID{}, nil, fmt.Errorf("fstat %s: %w", rel, err)
	}
	if opened.Dev != before.Dev || opened.Ino != before.Ino || opened.Size != before.Size ||
		opened.Mode&unix.S_IFMT != unix.S_IFREG {
		return spool.FileID{}, nil, errRetry
	}
	data, err := readAll(fd, opened.Size, limit)
	if err != nil {
		return spool.FileID{}, nil, fmt.Errorf("read %s: %w", rel, err)
	}
	var after unix.Stat_t
	if err := unix.Fstat(fd, &after); err != nil {
		return spool.FileID{}, nil, fmt.Errorf("fstat %s: %w", rel, err)
	}
	if int64(len(data)) != after.Size || after.Size != opened.Size ||
		after.Mtim != opened.Mtim || after.Ctim != opened.Ctim {
		return spool.FileID{}, nil, errRetry
	}
	id := spool.FileID{
		Dev:   after.Dev,
		Ino:   after.Ino,
		Size:  after.Size,
		Ctime: after.Ctim.Nano(),
		Mtime: after.Mtim.Nano(),
		Name:  rel,
	}
	return id, data, nil
}

// readAll reads the file at fd to its end, at most limit+1 bytes, into a
// buffer one byte larger than the file's size. A read that returns fewer
// bytes than requested has reached the end of a regular file, so a file
// that did not grow takes one read call. readOpen's fstat afterwards
// catches a file that changed meanwhile.
func readAll(fd int, size, limit int64) ([]byte, error) {
	buf := make([]byte, 0, min(size, limit)+1)
	for int64(len(buf)) <= limit {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, min(cap(buf), int(limit+1)-len(buf)))
		}
		want := cap(buf) - len(buf)
		n, err := unix.Read(fd, buf[len(buf):cap(buf)])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		buf = buf[:len(buf)+n]
		if n < want {
			return buf, nil
		}
	}
	return buf, nil
}

func lstat(name string) (*unix.Stat_t, error) {
	var st unix.Stat_t
	if err := unix.Lstat(name, &st); err != nil {
		return nil, &os.PathError{Op: "lstat", Path: name, Err: err}
	}
	return &st, nil
}

// checkType rejects everything but regular files.
func checkType(mode uint32) error {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return nil
	case unix.S_IFLNK:
		return reject("file is a symbolic link: mqspool reads only regular files, " +
			"so copy or rename the target into new/ instead")
	case unix.S_IFIFO:
		return reject("file is a FIFO (named pipe): mqspool reads only regular files, " +
			"so write the data to a file in tmp/ and rename it into new/")
	case unix.S_IFSOCK:
		return reject("file is a socket: mqspool reads only regular files")
	case unix.S_IFCHR, unix.S_IFBLK:
		return reject("file is a device: mqspool reads only regular files")
	case unix.S_IFDIR:
		return &os.PathError{Op: "read", Err: syscall.EISDIR}
	}
	return reject("file type %#o is not supported: mqspool reads only regular files", mode&unix.S_IFMT)
}

// logPathTooLong logs, once an hour per path, a file or directory under
// new/ whose path is longer than the kernel opens: PATH_MAX on Linux is
// 4096 bytes with the terminating NUL, so 4095 bytes of path. It stays
// where it is, because no rescan can open it either.
func (p *Pickup) logPathTooLong(rel string, err error) {
	now := p.now()
	if last, ok := p.unreadable[rel]; ok && now.Sub(last) < unreadableLogInterval {
		return
	}
	p.unreadable[rel] = now
	p.log.Error("file or directory under new/ has a path too long to open, so it stays there",
		"path_bytes", len(p.abs(rel)), "path", p.abs(rel), "err", err,
		"hint", "move the files to a shorter path under new/; Linux opens paths of at most 4095 bytes")
	p.setError(err)
}

// logUnreadable logs a permission error at most once an hour per file. The
// file leaves the queue, so only a rescan or a new event retries it.
func (p *Pickup) logUnreadable(rel string, err error) {
	now := p.now()
	if last, ok := p.unreadable[rel]; ok && now.Sub(last) < unreadableLogInterval {
		return
	}
	p.unreadable[rel] = now
	p.log.Error("spool file or directory is not readable; retrying at each rescan",
		"path", p.abs(rel), "err", err, "hint", "let the mqspool user read it")
	p.setError(err)
}
