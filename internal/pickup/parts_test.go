package pickup

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mqspool/mqspool/internal/spool"
)

// recordingStore is the real spool, with the size of every append
// recorded and the appends numbered in failAt refused.
type recordingStore struct {
	*spool.Spool
	mu      sync.Mutex
	calls   int
	sizes   []int
	failAt  map[int]error
	refused int
}

func openRecording(t *testing.T) *recordingStore {
	t.Helper()
	s, err := spool.Open(spool.Options{Path: filepath.Join(t.TempDir(), "spool.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return &recordingStore{Spool: s, failAt: map[int]error{}}
}

func (s *recordingStore) AppendForget(files []spool.FileBatch, forget []spool.FileID) (int, error) {
	s.mu.Lock()
	s.calls++
	err := s.failAt[s.calls]
	if err != nil {
		s.refused++
	}
	s.mu.Unlock()
	if err != nil {
		return 0, err
	}
	n, err := s.Spool.AppendForget(files, forget)
	s.mu.Lock()
	for _, f := range files[:n] {
		s.sizes = append(s.sizes, len(f.Messages))
	}
	s.mu.Unlock()
	return n, err
}

func (s *recordingStore) appendSizes() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int(nil), s.sizes...)
}

// payloads reads every queued message's payload in order.
func payloads(t *testing.T, s *spool.Spool) []string {
	t.Helper()
	c := s.NewCursor()
	defer c.Close()
	var out []string
	for {
		r, ok, err := c.Next()
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			return out
		}
		out = append(out, string(r.Message.Payload))
	}
}

// longJSONL returns a .jsonl file of n lines with payloads p0, p1, ...,
// and a blank line now and then.
func longJSONL(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, `{"topic":"t/x","payload":"p%d"}`+"\n", i)
		if i%1000 == 999 {
			b.WriteString("\n")
		}
	}
	return b.String()
}

func wantPayloads(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("p%d", i)
	}
	return out
}

func checkPayloads(t *testing.T, got []string, n int) {
	t.Helper()
	want := wantPayloads(n)
	if len(got) != len(want) {
		t.Fatalf("%d messages queued, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("message %d is %q, want %q", i, got[i], want[i])
		}
	}
}

func TestPickup_LongJSONLAppendedInParts(t *testing.T) {
	opts := testOptions(t)
	store := openRecording(t)
	p := start(t, opts, store)

	const lines = 2*partMessages + 100
	drop(t, opts.Dir, "big.jsonl", longJSONL(lines))
	waitFor(t, 10*time.Second, "file ingested and removed", func() bool {
		return !exists(filepath.Join(opts.Dir, "new", "big.jsonl")) && p.Stats().FilesIngested == 1
	})

	sizes := store.appendSizes()
	if len(sizes) != 3 {
		t.Errorf("appended in %d commits of %v messages, want 3 parts", len(sizes), sizes)
	}
	for _, n := range sizes {
		if n > partMessages {
			t.Errorf("a part of %d messages, want at most %d", n, partMessages)
		}
	}
	checkPayloads(t, payloads(t, store.Spool), lines)
	if s := p.Stats(); s.MessagesIngested != lines {
		t.Errorf("MessagesIngested = %d, want %d", s.MessagesIngested, lines)
	}
	waitFor(t, 5*time.Second, "identity forgotten", func() bool {
		ids, _ := store.FileIDs()
		return len(ids) == 0
	})
}

// A bad line anywhere rejects the whole file before any part is stored.
func TestPickup_LongJSONLBadLastLineStoresNothing(t *testing.T) {
	opts := testOptions(t)
	store := openRecording(t)
	start(t, opts, store)

	good := longJSONL(2 * partMessages)
	badLine := strings.Count(good, "\n") + 1
	drop(t, opts.Dir, "big.jsonl", good+`{"topic":"t/x"}`+"\n")
	waitFor(t, 10*time.Second, "file moved to failed/", func() bool {
		return exists(filepath.Join(opts.Dir, "failed", "big.jsonl.reason"))
	})
	reason, _ := os.ReadFile(filepath.Join(opts.Dir, "failed", "big.jsonl.reason"))
	if !strings.HasPrefix(string(reason), fmt.Sprintf("line %d:", badLine)) {
		t.Errorf("reason %q does not name the bad line %d", reason, badLine)
	}
	if got := payloads(t, store.Spool); len(got) != 0 {
		t.Errorf("%d messages queued from a rejected file", len(got))
	}
}

// A part the spool has no room for waits; the file goes on from there,
// with every message once and in order.
func TestPickup_LongJSONLWaitsForRoom(t *testing.T) {
	opts := testOptions(t)
	store := openRecording(t)
	store.failAt[2] = fmt.Errorf("append: %w", spool.ErrFull)
	p := start(t, opts, store)

	const lines = 3 * partMessages
	drop(t, opts.Dir, "big.jsonl", longJSONL(lines))
	waitFor(t, 10*time.Second, "file ingested and removed", func() bool {
		return !exists(filepath.Join(opts.Dir, "new", "big.jsonl")) && p.Stats().FilesIngested == 1
	})
	if store.refused != 1 {
		t.Fatalf("%d appends refused, want 1", store.refused)
	}
	checkPayloads(t, payloads(t, store.Spool), lines)
}

// A pickup that stopped after some parts goes on, when it starts again,
// from the progress stored with the file's identity.
func TestPickup_LongJSONLResumesAfterRestart(t *testing.T) {
	opts := testOptions(t)
	store := openRecording(t)
	store.failAt[2] = errors.New("disk I/O error")
	for i := 3; i < 100; i++ {
		store.failAt[i] = errors.New("disk I/O error")
	}

	const lines = 3*partMessages + 7
	p, err := New(opts, store)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	drop(t, opts.Dir, "big.jsonl", longJSONL(lines))
	waitFor(t, 10*time.Second, "first part stored and the next refused", func() bool {
		store.mu.Lock()
		defer store.mu.Unlock()
		return store.refused > 0
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := len(payloads(t, store.Spool)); got != partMessages {
		t.Fatalf("%d messages stored before the restart, want the first part's %d", got, partMessages)
	}

	store.mu.Lock()
	store.failAt = map[int]error{}
	store.mu.Unlock()
	p2 := start(t, opts, store)
	waitFor(t, 10*time.Second, "file ingested and removed", func() bool {
		return !exists(filepath.Join(opts.Dir, "new", "big.jsonl")) && p2.Stats().FilesIngested == 1
	})
	checkPayloads(t, payloads(t, store.Spool), lines)
	if s := p2.Stats(); s.MessagesIngested != lines-partMessages {
		t.Errorf("the restarted pickup ingested %d messages, want the %d not stored before", s.MessagesIngested, lines-partMessages)
	}
}
