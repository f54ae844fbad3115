package spool

import (
	"bytes"
	"fmt"
	"log/slog"
	"path/filepath"
	"reflect"
	"sync"
	"testing"

	"github.com/mqspool/mqspool/internal/message"
	"github.com/mqspool/mqspool/internal/state"
)

// quarantined records what Options.Quarantine received.
type quarantined struct {
	mu      sync.Mutex
	seqs    []uint64
	msgs    []*message.Message
	reasons []string
}

func (q *quarantined) fn(seq uint64, m *message.Message, _ []byte, reason string) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.seqs = append(q.seqs, seq)
	q.msgs = append(q.msgs, m)
	q.reasons = append(q.reasons, reason)
	return nil
}

func (q *quarantined) count() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.seqs)
}

// testOptions returns options for a database in a fresh temporary
// directory, logging through t.
func testOptions(t testing.TB) Options {
	t.Helper()
	return Options{
		Path:   filepath.Join(t.TempDir(), "spool.db"),
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

// openSpool opens a spool with opts and closes it at the end of the test
// unless the test closed it itself.
func openSpool(t testing.TB, opts Options) *Spool {
	t.Helper()
	s, err := Open(opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", opts.Path, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func testMessage(i int) message.Message {
	return message.Message{
		Topic:   fmt.Sprintf("site/%d", i%5),
		Payload: []byte(fmt.Sprintf("payload %d", i)),
		QoS:     byte(i % 3),
	}
}

// batch returns one file with n messages numbered from first.
func batch(name string, first, n int) FileBatch {
	f := FileBatch{ID: FileID{Dev: 1, Ino: uint64(first + 1), Size: int64(n), Name: name}}
	for i := range n {
		f.Messages = append(f.Messages, testMessage(first+i))
	}
	return f
}

func mustAppend(t testing.TB, s *Spool, files ...FileBatch) {
	t.Helper()
	n, err := s.Append(files)
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	if n != len(files) {
		t.Fatalf("Append accepted %d files, want %d", n, len(files))
	}
}

// drain reads the cursor until it has nothing ready.
func drain(t testing.TB, c *Cursor) []Record {
	t.Helper()
	var out []Record
	for {
		r, ok, err := c.Next()
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		if !ok {
			return out
		}
		out = append(out, r)
	}
}

func seqsOf(recs []Record) []uint64 {
	out := make([]uint64, len(recs))
	for i, r := range recs {
		out[i] = r.Seq
	}
	return out
}

func payloadsOf(recs []Record) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = string(r.Message.Payload)
	}
	return out
}

func equal(t testing.TB, what string, got, want any) {
	t.Helper()
	// States compare by their flows in send order, not by slice order.
	if g, ok := got.(*state.State); ok && g != nil {
		got = g.Sorted()
	}
	if w, ok := want.(*state.State); ok && w != nil {
		want = w.Sorted()
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s = %v, want %v", what, got, want)
	}
}

// syncBuffer is a log destination that a timer's goroutine may write to
// while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
