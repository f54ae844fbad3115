package eventloop

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/mqspool/mqspool/internal/message"
	"github.com/mqspool/mqspool/internal/state"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// memSource is a Source backed by a slice that tests append to.
type memSource struct {
	mu    sync.Mutex // guards reqs and next
	reqs  []Request
	next  int
	ready chan struct{}
}

func newMemSource() *memSource { return &memSource{ready: make(chan struct{}, 1)} }

// add appends messages with sequence numbers continuing from the last.
func (s *memSource) add(msgs ...message.Message) {
	s.mu.Lock()
	for _, m := range msgs {
		s.reqs = append(s.reqs, Request{Seq: uint64(len(s.reqs) + 1), Message: m, Enqueued: time.Now()})
	}
	s.mu.Unlock()
	notify(s.ready)
}

func (s *memSource) Next() (Request, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.next >= len(s.reqs) {
		return Request{}, false, nil
	}
	s.next++
	return s.reqs[s.next-1], true, nil
}

func (s *memSource) Ready() <-chan struct{} { return s.ready }

func (s *memSource) Load(seq uint64) (Request, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if seq == 0 || seq > uint64(len(s.reqs)) {
		return Request{}, fmt.Errorf("seq %d not found", seq)
	}
	return s.reqs[seq-1], nil
}

// msgs returns n messages on topic t with payloads "0".."n-1".
func msgs(topic string, qos byte, n int) []message.Message {
	out := make([]message.Message, n)
	for i := range out {
		out[i] = message.Message{Topic: topic, QoS: qos, Payload: fmt.Appendf(nil, "%d", i)}
	}
	return out
}

// testJournal records committed changes. With gate set, each Commit waits
// for a value on gate.
type testJournal struct {
	gate    chan struct{}
	fail    atomic.Bool
	mu      sync.Mutex // guards changes
	changes []state.Change
}

func (j *testJournal) Commit(changes []state.Change) error {
	if j.gate != nil {
		<-j.gate
	}
	if j.fail.Load() {
		return errors.New("disk full")
	}
	j.mu.Lock()
	j.changes = append(j.changes, changes...)
	j.mu.Unlock()
	return nil
}

func (j *testJournal) kinds() []state.ChangeKind {
	j.mu.Lock()
	defer j.mu.Unlock()
	var out []state.ChangeKind
	for _, c := range j.changes {
		out = append(out, c.Kind)
	}
	return out
}

func (j *testJournal) count(kind state.ChangeKind) int {
	n := 0
	for _, k := range j.kinds() {
		if k == kind {
			n++
		}
	}
	return n
}

// runner drives a loop's Poll on a goroutine and collects its events.
type runner struct {
	l        *Loop
	cancel   context.CancelFunc
	done     chan error
	stopOnce sync.Once

	mu     sync.Mutex // guards events
	events []Event
}

func testOptions(b *fakeBroker) Options {
	level := slog.LevelError + 4
	if os.Getenv("EVENTLOOP_TEST_LOG") != "" {
		level = slog.LevelDebug
	}
	return Options{
		URLs:           []string{b.url()},
		ClientID:       "mqspool-test",
		KeepAlive:      5 * time.Second,
		ConnectTimeout: 2 * time.Second,
		MinDelay:       20 * time.Millisecond,
		MaxDelay:       200 * time.Millisecond,
		AckTimeout:     5 * time.Second,
		Logger:         slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})),
	}
}

func start(t *testing.T, opts Options, src Source, j Journal, restored *state.State) *runner {
	t.Helper()
	return startReleasing(t, opts, src, j, restored, true)
}

// startReleasing starts the loop like start; with release false, incoming
// messages wait for the test to call their Release.
func startReleasing(t *testing.T, opts Options, src Source, j Journal, restored *state.State, release bool) *runner {
	t.Helper()
	l, err := New(opts, src, j, restored)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return run(t, l, release)
}

// run polls l until the test ends, like startReleasing, for a loop that
// the test changed between New and the first Poll.
func run(t *testing.T, l *Loop, release bool) *runner {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &runner{l: l, cancel: cancel, done: make(chan error, 1)}
	go func() {
		for {
			ev, err := l.Poll(ctx)
			if err != nil {
				r.done <- err
				return
			}
			if release && ev.Kind == EventIncoming && ev.Incoming.Release != nil {
				ev.Incoming.Release()
			}
			r.mu.Lock()
			r.events = append(r.events, ev)
			r.mu.Unlock()
		}
	}()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop ends the loop and waits for Poll to return.
func (r *runner) stop(t *testing.T) {
	r.stopOnce.Do(func() {
		r.l.Close()
		select {
		case <-r.done:
		case <-time.After(5 * time.Second):
			t.Errorf("Poll did not return within 5s of Close")
		}
		r.cancel()
	})
}

// outcomes returns the outcomes reported so far, by Seq.
func (r *runner) outcomes() map[uint64]Outcome {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[uint64]Outcome{}
	for _, ev := range r.events {
		if ev.Kind == EventAcknowledged {
			out[ev.Outcome.Seq] = ev.Outcome
		}
	}
	return out
}

func (r *runner) countEvents(kind EventKind) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, ev := range r.events {
		if ev.Kind == kind {
			n++
		}
	}
	return n
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// lockedBuffer is a log destination that the loop's goroutine and the
// test may use at once.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
