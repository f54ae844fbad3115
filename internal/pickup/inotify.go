package pickup

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// watchMask selects the events the pickup needs. fsnotify v1.10.1 has no
// exported operation for IN_CLOSE_WRITE, which separates a finished
// in-place write from one in progress, so the pickup reads inotify itself.
const watchMask = unix.IN_MOVED_TO | unix.IN_CLOSE_WRITE | unix.IN_CREATE |
	unix.IN_MOVE_SELF | unix.IN_DELETE_SELF |
	unix.IN_ONLYDIR | unix.IN_DONT_FOLLOW | unix.IN_EXCL_UNLINK

// watchEvent is one inotify event.
type watchEvent struct {
	wd   int32
	mask uint32
	name string
}

// watcher reads an inotify instance in its own goroutine and sends the
// events in kernel order on events.
type watcher struct {
	fd     int
	file   *os.File
	events chan []watchEvent
	done   chan struct{}
	wg     sync.WaitGroup

	// stopped is closed when the reader ends on a read error; err is the
	// error, set before the close.
	stopped chan struct{}
	err     error
}

func newWatcher() (*watcher, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("inotify init: %w", err)
	}

	// A non-blocking descriptor makes os.File use the runtime poller, so
	// Close wakes a pending Read.
	w := &watcher{
		fd:      fd,
		file:    os.NewFile(uintptr(fd), "inotify"),
		events:  make(chan []watchEvent, 64),
		done:    make(chan struct{}),
		stopped: make(chan struct{}),
	}
	w.wg.Add(1)
	go w.read()
	return w, nil
}

// add watches dir and returns the watch descriptor.
func (w *watcher) add(dir string) (int32, error) {
	return w.addMask(dir, watchMask)
}

// addMask watches dir for the events in mask and returns the watch
// descriptor.
func (w *watcher) addMask(dir string, mask uint32) (int32, error) {
	wd, err := unix.InotifyAddWatch(w.fd, dir, mask)
	if err != nil {
		return -1, fmt.Errorf("inotify watch %s: %w", dir, err)
	}
	return int32(wd), nil
}

// remove drops a watch. The kernel may already have dropped it.
func (w *watcher) remove(wd int32) {
	unix.InotifyRmWatch(w.fd, uint32(wd))
}

// close stops the reader and waits for it.
func (w *watcher) close() {
	close(w.done)
	w.file.Close()
	w.wg.Wait()
}

func (w *watcher) read() {
	defer w.wg.Done()
	buf := make([]byte, 64*1024)
	for {
		n, err := w.file.Read(buf)
		if err != nil {
			if !errors.Is(err, os.ErrClosed) {
				w.err = err
				close(w.stopped)
				w.send([]watchEvent{{wd: -1, mask: unix.IN_Q_OVERFLOW}})
			}
			return
		}
		if !w.send(parseEvents(buf[:n])) {
			return
		}
	}
}

// failed reports whether the reader ended on a read error.
func (w *watcher) failed() bool {
	select {
	case <-w.stopped:
		return true
	default:
		return false
	}
}

// send delivers a batch unless the watcher is closing.
func (w *watcher) send(evs []watchEvent) bool {
	select {
	case w.events <- evs:
		return true
	case <-w.done:
		return false
	}
}

// parseEvents decodes the inotify_event records in buf.
func parseEvents(buf []byte) []watchEvent {
	var evs []watchEvent
	for len(buf) >= unix.SizeofInotifyEvent {
		raw := (*unix.InotifyEvent)(unsafe.Pointer(&buf[0]))
		end := unix.SizeofInotifyEvent + int(raw.Len)
		if end > len(buf) {
			break
		}
		name := buf[unix.SizeofInotifyEvent:end]
		if i := bytes.IndexByte(name, 0); i >= 0 {
			name = name[:i]
		}
		evs = append(evs, watchEvent{wd: raw.Wd, mask: raw.Mask, name: string(name)})
		buf = buf[end:]
	}
	return evs
}
