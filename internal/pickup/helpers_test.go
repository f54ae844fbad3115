package pickup

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mqspool/mqspool/internal/format"
	"github.com/mqspool/mqspool/internal/spool"
)

// tooLargePayload makes fakeStore.Append report spool.ErrTooLarge.
const tooLargePayload = "too large for the spool"

// fakeStore is an in-memory Store. room limits how many more files
// Append accepts before it returns spool.ErrFull; negative is unlimited.
type fakeStore struct {
	mu        sync.Mutex
	files     []spool.FileBatch
	seen      map[spool.FileID]bool
	forgotten []spool.FileID
	room      int
	maxBatch  int
	fullCalls int
	// appendCalls and forgetCalls count AppendForget and Forget calls.
	appendCalls int
	forgetCalls int
}

func newFakeStore() *fakeStore {
	return &fakeStore{seen: make(map[spool.FileID]bool), room: -1}
}

func (s *fakeStore) AppendForget(files []spool.FileBatch, forget []spool.FileID) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.appendCalls++
	s.forgetLocked(forget)
	s.maxBatch = max(s.maxBatch, len(files))
	for i, f := range files {
		if len(f.Messages) > 0 && string(f.Messages[0].Payload) == tooLargePayload {
			s.files = append(s.files, files[:i]...)
			return i, fmt.Errorf("append %s: %w", f.ID.Name, spool.ErrTooLarge)
		}
	}
	n := len(files)
	if s.room >= 0 && n > s.room {
		n = s.room
	}
	for _, f := range files[:n] {
		// Like the spool, take a file whose identity is stored without
		// storing it again.
		if !s.seen[f.ID] {
			s.files = append(s.files, f)
			s.seen[f.ID] = !f.More
		}
	}
	if s.room >= 0 {
		s.room -= n
	}
	if n < len(files) {
		s.fullCalls++
		return n, spool.ErrFull
	}
	return n, nil
}

func (s *fakeStore) forgottenIDs() []spool.FileID {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.forgotten)
}

func (s *fakeStore) FileIDs() ([]spool.FileID, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []spool.FileID
	for id := range s.seen {
		ids = append(ids, id)
	}
	return ids, nil
}

// FileProgress reports whole files only: the fake stores every part of a
// file until its last one.
func (s *fakeStore) FileProgress(id spool.FileID) (int, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return 0, s.seen[id], nil
}

func (s *fakeStore) Forget(ids []spool.FileID) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.forgetCalls++
	s.forgetLocked(ids)
	return nil
}

// forgetLocked removes identities; s.mu must be held.
func (s *fakeStore) forgetLocked(ids []spool.FileID) {
	for _, id := range ids {
		delete(s.seen, id)
	}
	s.forgotten = append(s.forgotten, ids...)
}

func (s *fakeStore) setRoom(n int) {
	s.mu.Lock()
	s.room = n
	s.mu.Unlock()
}

// names returns the names of the appended files in order.
func (s *fakeStore) names() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, len(s.files))
	for i, f := range s.files {
		out[i] = f.ID.Name
	}
	return out
}

func (s *fakeStore) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.files)
}

func (s *fakeStore) forgottenCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.forgotten)
}

// testOptions returns options with short timings for a spool in a
// temporary directory.
func testOptions(t testing.TB) Options {
	t.Helper()
	return Options{
		Dir:            t.TempDir(),
		Settle:         150 * time.Millisecond,
		RescanInterval: time.Second,
		DefaultQoS:     1,
	}
}

// start creates a Pickup and runs it until the test ends.
func start(t testing.TB, opts Options, store Store, setup ...func(*Pickup)) *Pickup {
	t.Helper()
	p, err := New(opts, store)
	if err != nil {
		t.Fatal(err)
	}
	for _, fn := range setup {
		fn(p)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run returned %v", err)
		}
	})
	return p
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// drop writes a file the way producers should: tmp/ then rename.
func drop(t testing.TB, dir, rel, data string) {
	t.Helper()
	if err := format.WriteFileAtomic(dir, rel, []byte(data)); err != nil {
		t.Fatal(err)
	}
}

// dropFast renames a file into new/ like drop but without syncing, for
// tests that need many files quickly.
func dropFast(t testing.TB, dir, rel, data string) {
	t.Helper()
	tmp := filepath.Join(dir, "tmp", "fast")
	if err := os.WriteFile(tmp, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	name := filepath.Join(dir, "new", filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, name); err != nil {
		t.Fatal(err)
	}
}

// writeDirect writes a file straight into new/, creating directories.
func writeDirect(t testing.TB, dir, rel, data string) {
	t.Helper()
	name := filepath.Join(dir, "new", filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(name, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// linkDirect makes rel in new/ a hard link to a file written elsewhere,
// so it arrives complete with an IN_CREATE and no close event.
func linkDirect(t testing.TB, dir, rel, data string) {
	t.Helper()
	src := filepath.Join(t.TempDir(), "link-source")
	if err := os.WriteFile(src, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	name := filepath.Join(dir, "new", filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(src, name); err != nil {
		t.Skipf("hard link across temporary directories: %v", err)
	}
}

func exists(name string) bool {
	_, err := os.Lstat(name)
	return err == nil
}

// startFull starts a pickup on a store with room for one file, drops two
// files into new/ and waits until the pickup reports the spool full.
func startFull(t *testing.T) (*Pickup, *fakeStore, Options) {
	t.Helper()
	opts := testOptions(t)
	store := newFakeStore()
	store.setRoom(1)
	p := start(t, opts, store)

	drop(t, opts.Dir, "full/a", "x")
	drop(t, opts.Dir, "full/b", "x")
	waitFor(t, 5*time.Second, "spool full", func() bool { return p.Stats().SpoolFull })
	return p, store, opts
}

// claimGate replaces the daemon's spool directory lock in tests: Options.Claim
// reports allowed and counts its calls.
type claimGate struct {
	allowed atomic.Bool
	calls   atomic.Int32
}

// gateClaims sets opts.Claim to a new gate that allows the claim.
func gateClaims(opts *Options) *claimGate {
	g := &claimGate{}
	g.allowed.Store(true)
	opts.Claim = func() bool {
		g.calls.Add(1)
		return g.allowed.Load()
	}
	return g
}
