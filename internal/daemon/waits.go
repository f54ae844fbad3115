package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/mqspool/mqspool/internal/control"
	"github.com/mqspool/mqspool/internal/eventloop"
)

// Memory of the wait tracker. A file is forgotten once it has been
// committed this long ago, and outcomes beyond the newest maxOutcomes
// are forgotten oldest first, so a wait request that comes much later
// than the delivery times out instead of returning the outcome.
const (
	fileMemory  = 10 * time.Minute
	maxOutcomes = 1 << 16
)

// waitPoll is how often a waiting request looks for its file in failed/,
// where the pickup puts files it rejects at ingest.
const waitPoll = 100 * time.Millisecond

// committedFile is the range of sequence numbers one file's messages got.
type committedFile struct {
	first uint64
	count int
	at    time.Time
}

// waitTracker connects files dropped into new/ with the outcomes of their
// messages, for "mqspool publish --wait".
type waitTracker struct {
	failedDir string

	mu       sync.Mutex // guards the fields below
	files    map[string]committedFile
	outcomes map[uint64]eventloop.Outcome
	order    []uint64      // keys of outcomes, oldest first
	changed  chan struct{} // closed and replaced on every update
}

func newWaitTracker(spoolDir string) *waitTracker {
	return &waitTracker{
		failedDir: filepath.Join(spoolDir, "failed"),
		files:     make(map[string]committedFile),
		outcomes:  make(map[uint64]eventloop.Outcome),
		changed:   make(chan struct{}),
	}
}

// committed records that the file rel (relative to new/) got count
// messages from sequence number first on.
func (w *waitTracker) committed(rel string, first uint64, count int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := time.Now()
	for name, f := range w.files {
		if now.Sub(f.at) > fileMemory {
			delete(w.files, name)
		}
	}
	w.files[rel] = committedFile{first: first, count: count, at: now}
	w.wake()
}

// outcome records how one message ended.
func (w *waitTracker) outcome(o eventloop.Outcome) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.outcomes[o.Seq]; !ok {
		w.order = append(w.order, o.Seq)
	}
	w.outcomes[o.Seq] = o
	for len(w.order) > maxOutcomes {
		delete(w.outcomes, w.order[0])
		w.order = w.order[1:]
	}
	w.wake()
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
	f, ok := w.files[rel]
	if !ok {
		return control.WaitResult{}, false, w.changed
	}

	res := control.WaitResult{State: control.WaitDelivered, Messages: f.count}
	for seq := f.first; seq < f.first+uint64(f.count); seq++ {
		o, ok := w.outcomes[seq]
		if !ok {
			return control.WaitResult{}, false, w.changed
		}
		switch o.Kind {
		case eventloop.Failed:
			res.State, res.Reason = control.WaitRejected, o.Reason
		case eventloop.Expired, eventloop.Dropped:
			if res.State == control.WaitDelivered {
				res.State, res.Reason = control.WaitDropped, outcomeName(o.Kind)
			}
		}
	}
	return res, true, w.changed
}

// pending describes how far rel got, for a timed-out wait.
func (w *waitTracker) pending(rel string) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	f, ok := w.files[rel]
	if !ok {
		return "the file was not taken from new/ yet"
	}
	done := 0
	for seq := f.first; seq < f.first+uint64(f.count); seq++ {
		if _, ok := w.outcomes[seq]; ok {
			done++
		}
	}
	return fmt.Sprintf("queued; %d of %d messages done", done, f.count)
}

// rejectedAtIngest reports whether the pickup moved rel to failed/, with
// the reason it wrote beside it.
func (w *waitTracker) rejectedAtIngest(rel string) (string, bool) {
	path := filepath.Join(w.failedDir, filepath.FromSlash(rel))
	if _, err := os.Lstat(path); err != nil {
		return "", false
	}
	reason, err := os.ReadFile(path + ".reason")
	if err != nil {
		return "moved to failed/ at ingest", true
	}
	return strings.TrimSpace(string(reason)), true
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
