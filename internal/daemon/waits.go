package daemon

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/mqspool/mqspool/internal/control"
	"github.com/mqspool/mqspool/internal/eventloop"
)

// Memory of the wait tracker. A file is forgotten once it was committed
// fileMemory ago or maxFiles newer files were committed, so a wait request
// that comes much later than the delivery times out instead of returning
// the outcome. Outcomes are counted per file, so memory does not grow with
// the number of messages.
const (
	fileMemory = 10 * time.Minute
	maxFiles   = 1 << 14
	// maxEarly bounds the outcomes kept for sequence numbers of no known
	// file: messages queued before this run, and messages delivered in
	// the moment between their commit and the committed call.
	maxEarly = 1 << 12
)

// waitPoll is how often a waiting request looks for its file in failed/,
// where the pickup puts files it rejects at ingest.
const waitPoll = 100 * time.Millisecond

// trackedFile is one committed file: the range of sequence numbers its
// messages got and how many of them ended, and how.
type trackedFile struct {
	rel   string
	first uint64
	count int
	at    time.Time

	done    int
	state   string // control.WaitDelivered until a message fails or is dropped
	reason  string
	partial bool // more parts of the file are still to be appended
}

// waitTracker connects files dropped into new/ with the outcomes of their
// messages, for "mqspool publish --wait".
type waitTracker struct {
	failedDir string

	mu      sync.Mutex     // guards the fields below
	files   []*trackedFile // by first sequence number; files[:head] are forgotten
	head    int
	byName  map[string]*trackedFile
	early   map[uint64]eventloop.Outcome
	order   []uint64      // keys of early, oldest first
	changed chan struct{} // closed and replaced on every update
}

func newWaitTracker(spoolDir string) *waitTracker {
	return &waitTracker{
		failedDir: filepath.Join(spoolDir, "failed"),
		byName:    make(map[string]*trackedFile),
		early:     make(map[uint64]eventloop.Outcome),
		changed:   make(chan struct{}),
	}
}

// committed records that the file rel (relative to new/) got count
// messages from sequence number first on. more reports a file appended in
// parts with parts still to come, whose next part extends the same record.
func (w *waitTracker) committed(rel string, first uint64, count int, more bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := time.Now()
	w.forget(now)

	f := w.byName[rel]
	switch {
	case f != nil && f.partial && (count == 0 || f.first+uint64(f.count) == first):
		f.count += count
		f.partial = more
	case count > 0:
		f = &trackedFile{rel: rel, first: first, count: count, at: now, state: control.WaitDelivered, partial: more}
		w.insert(f)
	default:
		return
	}

	for seq := first; len(w.early) > 0 && seq < first+uint64(count); seq++ {
		if o, ok := w.early[seq]; ok {
			delete(w.early, seq)
			f.add(o)
		}
	}
	w.wake()
}

// insert adds f in the order of first sequence numbers. w.mu must be
// held.
func (w *waitTracker) insert(f *trackedFile) {
	live := w.files[w.head:]
	i, _ := slices.BinarySearchFunc(live, f.first, func(f *trackedFile, seq uint64) int {
		return cmp.Compare(f.first, seq)
	})
	if i == len(live) {
		w.files = append(w.files, f) // the usual case: sequence numbers grow
	} else {
		w.files = slices.Insert(w.files, w.head+i, f)
	}
	w.byName[f.rel] = f
}

// forget drops the files committed more than fileMemory ago and those
// beyond the newest maxFiles. w.mu must be held.
func (w *waitTracker) forget(now time.Time) {
	for w.head < len(w.files) {
		f := w.files[w.head]
		if len(w.files)-w.head < maxFiles && now.Sub(f.at) <= fileMemory {
			break
		}
		if w.byName[f.rel] == f {
			delete(w.byName, f.rel)
		}
		w.files[w.head] = nil
		w.head++
	}
	if w.head > len(w.files)/2 {
		w.files = slices.Delete(w.files, 0, w.head)
		w.head = 0
	}
}

// outcome records how one message ended.
func (w *waitTracker) outcome(o eventloop.Outcome) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if f := w.fileOf(o.Seq); f != nil {
		f.add(o)
		w.wake()
		return
	}
	if _, ok := w.early[o.Seq]; !ok {
		w.order = append(w.order, o.Seq)
	}
	w.early[o.Seq] = o
	for len(w.order) > maxEarly {
		delete(w.early, w.order[0])
		w.order = w.order[1:]
	}
}

// source returns the file under new/ that message seq came from, while
// the tracker still remembers that file.
func (w *waitTracker) source(seq uint64) (string, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if f := w.fileOf(seq); f != nil {
		return f.rel, true
	}
	return "", false
}

// fileOf returns the known file whose messages include seq, or nil.
// w.mu must be held.
func (w *waitTracker) fileOf(seq uint64) *trackedFile {
	live := w.files[w.head:]
	i := sort.Search(len(live), func(i int) bool { return live[i].first > seq })
	if i == 0 {
		return nil
	}
	f := live[i-1]
	if seq >= f.first+uint64(f.count) {
		return nil
	}
	return f
}

// add counts one outcome of the file's messages. A failure outranks a
// drop, which outranks a delivery.
func (f *trackedFile) add(o eventloop.Outcome) {
	f.done++
	switch o.Kind {
	case eventloop.Failed:
		f.state, f.reason = control.WaitRejected, o.Reason
	case eventloop.Expired, eventloop.Dropped:
		if f.state == control.WaitDelivered {
			f.state, f.reason = control.WaitDropped, o.Reason
			if o.Reason == "" {
				f.reason = outcomeName(o.Kind)
			}
		}
	}
}

// wake makes waiting requests check again. w.mu must be held.
func (w *waitTracker) wake() {
	close(w.changed)
	w.changed = make(chan struct{})
}

// wait blocks until every message of rel has an outcome, the pickup has
// moved rel to failed/, or ctx ends.
func (w *waitTracker) wait(ctx context.Context, rel string) control.WaitResult {
	t := time.NewTicker(waitPoll)
	defer t.Stop()
	for {
		res, done, changed := w.check(rel)
		if done {
			return res
		}
		if reason, ok := w.rejectedAtIngest(rel); ok {
			return control.WaitResult{State: control.WaitRejected, Reason: reason}
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return control.WaitResult{State: control.WaitTimedOut, Reason: w.pending(rel)}
			}
			return control.WaitResult{State: control.WaitStopped, Reason: "the daemon is stopping"}
		case <-changed:
		case <-t.C:
		}
	}
}

// check returns the result for rel once every message has an outcome, and
// the channel that the next update closes.
func (w *waitTracker) check(rel string) (control.WaitResult, bool, <-chan struct{}) {
	w.mu.Lock()
	defer w.mu.Unlock()
	f, ok := w.byName[rel]
	if !ok || f.partial || f.done < f.count {
		return control.WaitResult{}, false, w.changed
	}
	return control.WaitResult{State: f.state, Reason: f.reason, Messages: f.count}, true, w.changed
}

// pending describes how far rel got, for a timed-out wait.
func (w *waitTracker) pending(rel string) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	f, ok := w.byName[rel]
	if !ok {
		return "the file was not taken from new/ yet"
	}
	if f.partial {
		return fmt.Sprintf("partly queued; %d of the %d messages queued so far are done", f.done, f.count)
	}
	return fmt.Sprintf("queued; %d of %d messages done", f.done, f.count)
}

// rejectedAtIngest reports whether the pickup moved rel to failed/, with
// the first paragraph of the reason it wrote beside it.
func (w *waitTracker) rejectedAtIngest(rel string) (string, bool) {
	path := filepath.Join(w.failedDir, filepath.FromSlash(rel))
	if _, err := os.Lstat(path); err != nil {
		return "", false
	}
	reason, err := os.ReadFile(path + ".reason")
	if err != nil {
		return "moved to failed/ at ingest", true
	}
	// The first paragraph is the reason. The rest explains how to retry the
	// file by hand, and publish --wait writes its own text for that.
	first, _, _ := strings.Cut(string(reason), "\n\n")
	return strings.TrimSpace(first), true
}

func outcomeName(k eventloop.OutcomeKind) string {
	switch k {
	case eventloop.Expired:
		return "message expiry interval passed before it was sent"
	case eventloop.Dropped:
		return "qos 0 message dropped while offline"
	default:
		return "unknown outcome"
	}
}
