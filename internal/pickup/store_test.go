package pickup

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mqspool/mqspool/internal/spool"
)

// failingStore fails its first failures Append calls.
type failingStore struct {
	*fakeStore
	failures atomic.Int32
	calls    atomic.Int32
}

func (s *failingStore) AppendForget(files []spool.FileBatch, forget []spool.FileID) (int, error) {
	s.calls.Add(1)
	if s.failures.Add(-1) >= 0 {
		return 0, errors.New("disk I/O error")
	}
	return s.fakeStore.AppendForget(files, forget)
}

func TestPickup_StoreErrorBacksOff(t *testing.T) {
	opts := testOptions(t)
	store := &failingStore{fakeStore: newFakeStore()}
	store.failures.Store(3)
	p := start(t, opts, store)

	drop(t, opts.Dir, "s/f", "x")
	waitFor(t, 5*time.Second, "file appended after the errors", func() bool {
		return store.count() == 1
	})
	if calls := store.calls.Load(); calls != 4 {
		t.Errorf("Append called %d times, want 4 (3 failures, then success)", calls)
	}
	if s := p.Stats(); s.LastError != "disk I/O error" {
		t.Errorf("LastError = %q, want the store error", s.LastError)
	}
}

func TestPickup_DirectoryMovedWithinNew(t *testing.T) {
	opts := testOptions(t)
	opts.RescanInterval = time.Hour
	store := newFakeStore()
	start(t, opts, store)

	drop(t, opts.Dir, "a/f1", "x")
	waitFor(t, 5*time.Second, "first file appended", func() bool { return store.count() == 1 })

	// After the move, the old watch is stale; a file dropped into the
	// directory under its new name must still be found.
	newDir := filepath.Join(opts.Dir, "new")
	if err := os.Rename(filepath.Join(newDir, "a"), filepath.Join(newDir, "b")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	drop(t, opts.Dir, "b/f2", "y")
	waitFor(t, 5*time.Second, "file in moved directory appended", func() bool {
		return store.count() == 2
	})
	if got := store.files[1].Messages[0].Topic; got != "b" {
		t.Errorf("topic = %q, want b", got)
	}
}

func TestStatfsFree(t *testing.T) {
	free, err := statfsFree(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if free == 0 {
		t.Error("statfsFree returned 0 for a writable temporary directory")
	}
	if _, err := statfsFree(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("statfsFree of a missing path succeeded")
	}
}

// A producer that reuses one name writes the next file as soon as the
// last one is gone. Each must be taken from its own event, also while
// the removal of the last one is still syncing the directory.
func TestPickup_NameReusedAfterRemoval(t *testing.T) {
	opts := testOptions(t)
	opts.RescanInterval = time.Hour
	store := newFakeStore()
	start(t, opts, store)

	name := filepath.Join(opts.Dir, "new", "s", "same")
	const files = 100
	for i := range files {
		drop(t, opts.Dir, "s/same", fmt.Sprintf("payload %03d", i))
		waitFor(t, 5*time.Second, fmt.Sprintf("file %d removed", i), func() bool {
			_, err := os.Lstat(name)
			return errors.Is(err, os.ErrNotExist)
		})
	}
	waitFor(t, 5*time.Second, "every file appended", func() bool { return store.count() == files })

	store.mu.Lock()
	defer store.mu.Unlock()
	for i, fb := range store.files {
		if got, want := string(fb.Messages[0].Payload), fmt.Sprintf("payload %03d", i); got != want {
			t.Errorf("file %d payload = %q, want %q", i, got, want)
		}
	}
}

func TestByDirectory_GroupsInFirstSeenOrder(t *testing.T) {
	ids := []spool.FileID{{Name: "b/1"}, {Name: "top"}, {Name: "a/x/2"}, {Name: "b/3"}, {Name: "a/x/4"}}
	groups := byDirectory(ids)

	var got [][]string
	for _, g := range groups {
		var names []string
		for _, id := range g {
			names = append(names, id.Name)
		}
		got = append(got, names)
	}
	want := [][]string{{"b/1", "b/3"}, {"top"}, {"a/x/2", "a/x/4"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("byDirectory = %v, want %v", got, want)
	}
}

// Files of one batch spread over many directories are all removed, and
// their identities forgotten.
func TestPickup_BatchOverManyDirectories(t *testing.T) {
	opts := testOptions(t)
	store := newFakeStore()
	if err := os.MkdirAll(filepath.Join(opts.Dir, "tmp"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range 300 {
		dropFast(t, opts.Dir, fmt.Sprintf("d%03d/f", i), "x")
	}
	start(t, opts, store)

	waitFor(t, 10*time.Second, "300 files appended", func() bool { return store.count() == 300 })
	waitFor(t, 5*time.Second, "300 identities forgotten", func() bool { return store.forgottenCount() == 300 })
	for i := range 300 {
		name := filepath.Join(opts.Dir, "new", fmt.Sprintf("d%03d", i), "f")
		if _, err := os.Lstat(name); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s still exists after ingest: %v", name, err)
		}
	}
}

// forgetFailingStore fails every Forget call while failing is set.
type forgetFailingStore struct {
	*fakeStore
	failing atomic.Bool
	calls   atomic.Int32
}

func (s *forgetFailingStore) Forget(ids []spool.FileID) error {
	s.calls.Add(1)
	if s.failing.Load() {
		return errors.New("write spool.db: no space left on device")
	}
	return s.fakeStore.Forget(ids)
}

// A Forget that keeps failing, as on a full disk, is retried with a
// growing wait and logged once, not every 100 ms, and its identities are
// forgotten once it works again.
func TestPickup_ForgetErrorBacksOff(t *testing.T) {
	opts := testOptions(t)
	opts.RescanInterval = time.Hour
	logs := capture(&opts)
	store := &forgetFailingStore{fakeStore: newFakeStore()}
	store.failing.Store(true)
	start(t, opts, store)

	drop(t, opts.Dir, "s/f", "x")
	waitFor(t, 5*time.Second, "the first failed Forget", func() bool { return store.calls.Load() >= 1 })
	time.Sleep(2 * time.Second)

	if n := store.calls.Load(); n > 6 {
		t.Errorf("Forget called %d times in 2s of failures, want at most 6", n)
	}
	if n := strings.Count(logs.String(), "forget identities of removed files"); n != 1 {
		t.Errorf("%d log lines for the failing Forget, want 1", n)
	}
	store.failing.Store(false)
	waitFor(t, 10*time.Second, "the identity forgotten", func() bool { return store.forgottenCount() == 1 })
}
