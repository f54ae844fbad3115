package pickup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mqspool/mqspool/internal/spool"
)

// recordingStore is the real spool, with the size of every append
// recorded and the appends numbered in failAt failed with that error.
type recordingStore struct {
	*spool.Spool
	mu       sync.Mutex
	calls    int
	sizes    []int
	failAt   map[int]error
	injected int
	// after, when set, runs after each append with its number.
	after func(call int)
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
		s.injected++
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
	call, after := s.calls, s.after
	s.mu.Unlock()
	if after != nil {
		after(call)
	}
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
	var out []string
	for _, r := range records(t, s) {
		out = append(out, string(r.Message.Payload))
	}
	return out
}

// records reads every queued message in order.
func records(t *testing.T, s *spool.Spool) []spool.Record {
	t.Helper()
	c := s.NewCursor()
	defer c.Close()
	var out []spool.Record
	for {
		r, ok, err := c.Next()
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			return out
		}
		out = append(out, r)
	}
}

// logBuffer collects the pickup's log lines.
type logBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func capture(opts *Options) *logBuffer {
	b := &logBuffer{}
	opts.Logger = slog.New(slog.NewTextHandler(b, nil))
	return b
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

// A part the spool has no room for waits, and the file goes on from there,
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
	if store.injected != 1 {
		t.Fatalf("%d appends failed as injected, want 1", store.injected)
	}
	checkPayloads(t, payloads(t, store.Spool), lines)
}

// While a long file waits between parts, the stats name it with the count
// of its messages in the spool. Once it is stored, they name no file.
func TestPickup_LongJSONLProgressInStats(t *testing.T) {
	opts := testOptions(t)
	store := openRecording(t)
	for i := 2; i < 1000; i++ {
		store.failAt[i] = fmt.Errorf("append: %w", spool.ErrFull)
	}
	p := start(t, opts, store)

	const lines = 3*partMessages + 5
	drop(t, opts.Dir, "big.jsonl", longJSONL(lines))
	want := PartedProgress{Path: filepath.Join(opts.Dir, "new", "big.jsonl"), Stored: partMessages, Total: lines}
	waitFor(t, 10*time.Second, "the first part in the stats", func() bool { return p.Stats().Parted == want })

	store.mu.Lock()
	store.failAt = map[int]error{}
	store.mu.Unlock()
	waitFor(t, 20*time.Second, "file ingested and removed", func() bool {
		return !exists(filepath.Join(opts.Dir, "new", "big.jsonl")) && p.Stats().FilesIngested == 1
	})
	if got := p.Stats().Parted; got != (PartedProgress{}) {
		t.Errorf("stats after the last part = %+v, want no file", got)
	}
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
	waitFor(t, 10*time.Second, "first part stored and the next failed", func() bool {
		store.mu.Lock()
		defer store.mu.Unlock()
		return store.injected > 0
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

// A reload of the routes while a file waits between parts does not split
// it: every part takes the route matched when the file was checked.
func TestPickup_LongJSONLKeepsItsRoute(t *testing.T) {
	opts := testOptions(t)
	opts.Routes = []Route{{Match: "r/*.jsonl", Topic: "first/route"}}
	store := openRecording(t)
	store.failAt[2] = fmt.Errorf("append: %w", spool.ErrFull)
	var p *Pickup
	store.after = func(call int) {
		if call == 1 {
			if err := p.SetRoutes([]Route{{Match: "r/*.jsonl", Topic: "second/route"}}); err != nil {
				t.Error(err)
			}
		}
	}
	p = start(t, opts, store)

	const lines = 2 * partMessages
	var b strings.Builder
	for i := range lines {
		fmt.Fprintf(&b, `{"payload":"p%d"}`+"\n", i)
	}
	drop(t, opts.Dir, "r/big.jsonl", b.String())
	waitFor(t, 10*time.Second, "file ingested", func() bool { return p.Stats().FilesIngested == 1 })

	recs := records(t, store.Spool)
	if len(recs) != lines {
		t.Fatalf("%d messages queued, want %d", len(recs), lines)
	}
	for _, r := range recs {
		if r.Message.Topic != "first/route" {
			t.Fatalf("message %q has topic %q, want the route of the first part, first/route", r.Message.Payload, r.Message.Topic)
		}
	}
}

// A file written to in place after it was read is not removed: what was
// added would be lost. It is taken again as a new file.
func TestPickup_FileChangedAfterReadIsKept(t *testing.T) {
	opts := testOptions(t)
	logs := capture(&opts)
	store := openRecording(t)
	name := filepath.Join(opts.Dir, "new", "grow.jsonl")
	store.after = func(call int) {
		if call != 1 {
			return
		}
		f, err := os.OpenFile(name, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Error(err)
			return
		}
		defer f.Close()
		f.WriteString(`{"topic":"t/x","payload":"added"}` + "\n")
	}
	start(t, opts, store)

	drop(t, opts.Dir, "grow.jsonl", `{"topic":"t/x","payload":"first"}`+"\n")
	waitFor(t, 10*time.Second, "the added line queued", func() bool {
		return slices.Contains(payloads(t, store.Spool), "added")
	})
	if !strings.Contains(logs.String(), "changed after it was read") {
		t.Errorf("no warning about the changed file in the log:\n%s", logs)
	}
	waitFor(t, 10*time.Second, "the file removed after its second ingest", func() bool { return !exists(name) })
}

// A file that leaves new/ while it waits between parts is dropped with a
// warning that gives the count of its messages already queued.
func TestPickup_LongJSONLRemovedBetweenParts(t *testing.T) {
	opts := testOptions(t)
	logs := capture(&opts)
	store := openRecording(t)
	name := filepath.Join(opts.Dir, "new", "big.jsonl")
	for i := 2; i < 1000; i++ {
		store.failAt[i] = fmt.Errorf("append: %w", spool.ErrFull)
	}
	store.after = func(call int) {
		if call == 1 {
			os.Remove(name)
		}
	}
	start(t, opts, store)

	drop(t, opts.Dir, "big.jsonl", longJSONL(2*partMessages))
	waitFor(t, 10*time.Second, "warning about the removed file", func() bool {
		return strings.Contains(logs.String(), "left new/ before its last part")
	})
	if !strings.Contains(logs.String(), fmt.Sprintf("queued=%d", partMessages)) {
		t.Errorf("warning does not give the %d messages queued:\n%s", partMessages, logs)
	}
	waitFor(t, 5*time.Second, "identity forgotten", func() bool {
		ids, _ := store.FileIDs()
		return len(ids) == 0
	})
}

// A file whose change time alone moved after it was read, as a chmod or a
// hard link does, has the content that was read and is removed as usual.
func TestPickup_ChmodAfterReadStillRemoved(t *testing.T) {
	opts := testOptions(t)
	store := openRecording(t)
	name := filepath.Join(opts.Dir, "new", "mode.jsonl")
	store.after = func(call int) {
		if call == 1 {
			if err := os.Chmod(name, 0o600); err != nil {
				t.Error(err)
			}
		}
	}
	start(t, opts, store)

	drop(t, opts.Dir, "mode.jsonl", `{"topic":"t/x","payload":"once"}`+"\n")
	waitFor(t, 10*time.Second, "file removed", func() bool { return !exists(name) })
	time.Sleep(2 * opts.RescanInterval)
	if got := payloads(t, store.Spool); !slices.Equal(got, []string{"once"}) {
		t.Errorf("queued %q, want the message once", got)
	}
}

// A chmod while a long file waits between parts moves only its change
// time: the file goes on from where it was, every line once.
func TestPickup_LongJSONLChmodBetweenParts(t *testing.T) {
	opts := testOptions(t)
	store := openRecording(t)
	store.failAt[2] = fmt.Errorf("append: %w", spool.ErrFull)
	name := filepath.Join(opts.Dir, "new", "big.jsonl")
	store.after = func(call int) {
		if call == 1 {
			if err := os.Chmod(name, 0o600); err != nil {
				t.Error(err)
			}
		}
	}
	p := start(t, opts, store)

	const lines = 2*partMessages + 10
	drop(t, opts.Dir, "big.jsonl", longJSONL(lines))
	waitFor(t, 10*time.Second, "file ingested and removed", func() bool {
		return !exists(name) && p.Stats().FilesIngested == 1
	})
	checkPayloads(t, payloads(t, store.Spool), lines)
}

// A claim lost while a file waits between parts, as when a spool.dir
// link points at another daemon's directory for a while, keeps the
// file's stored parts. Once the claim succeeds again the file resumes
// after them instead of being queued again from its first message.
func TestPickup_LongJSONLResumesAfterLostClaim(t *testing.T) {
	opts := testOptions(t)
	gate := gateClaims(&opts)
	store := openRecording(t)
	for i := 2; i < 1000; i++ {
		store.failAt[i] = fmt.Errorf("append: %w", spool.ErrFull)
	}
	store.after = func(call int) {
		if call == 1 {
			gate.allowed.Store(false)
		}
	}
	p := start(t, opts, store)

	const lines = 2*partMessages + 100
	drop(t, opts.Dir, "big.jsonl", longJSONL(lines))
	waitFor(t, 10*time.Second, "the first part stored", func() bool {
		return len(store.appendSizes()) == 1
	})
	failed := gate.calls.Load()
	waitFor(t, 10*time.Second, "a failed claim after the first part", func() bool {
		return gate.calls.Load() > failed+1
	})

	store.mu.Lock()
	store.failAt = map[int]error{}
	store.mu.Unlock()
	gate.allowed.Store(true)
	waitFor(t, 10*time.Second, "file ingested and removed", func() bool {
		return !exists(filepath.Join(opts.Dir, "new", "big.jsonl")) && p.Stats().FilesIngested == 1
	})
	checkPayloads(t, payloads(t, store.Spool), lines)
}
