package pickup

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestHandleEvent_OverflowRescans(t *testing.T) {
	p, err := New(testOptions(t), newFakeStore())
	if err != nil {
		t.Fatal(err)
	}
	ws := &watches{byWD: map[int32]string{1: ""}, byDir: map[string]int32{"": 1}}
	if !p.handleEvent(nil, ws, watchEvent{wd: -1, mask: unix.IN_Q_OVERFLOW}) {
		t.Error("overflow did not request a rescan")
	}
	if p.handleEvent(nil, ws, watchEvent{wd: 1, mask: unix.IN_MOVED_TO, name: "f"}) {
		t.Error("a renamed-in file requested a rescan")
	}
	if len(p.queue) != 1 || p.queue[0] != "f" {
		t.Errorf("queue = %v, want [f]", p.queue)
	}
	p.handleEvent(nil, ws, watchEvent{wd: 1, mask: unix.IN_MOVED_TO, name: ".tmp"})
	if len(p.queue) != 1 {
		t.Errorf("dot file queued: %v", p.queue)
	}
}

func TestParseEvents_Names(t *testing.T) {
	buf := make([]byte, 0, 64)
	for _, name := range []string{"a", "longer-name"} {
		padded := (len(name) + 1 + 15) / 16 * 16
		ev := make([]byte, unix.SizeofInotifyEvent+padded)
		ev[0] = 7                      // wd
		ev[4] = byte(unix.IN_MOVED_TO) // mask
		ev[12] = byte(padded)          // len
		copy(ev[unix.SizeofInotifyEvent:], name)
		buf = append(buf, ev...)
	}
	evs := parseEvents(buf)
	if len(evs) != 2 {
		t.Fatalf("got %d events, want 2", len(evs))
	}
	if evs[0].name != "a" || evs[1].name != "longer-name" {
		t.Errorf("names = %q, %q", evs[0].name, evs[1].name)
	}
	if evs[1].wd != 7 || evs[1].mask != unix.IN_MOVED_TO {
		t.Errorf("event = %+v", evs[1])
	}
}

// The files whose events an overflow lost are older than the events that
// follow it in the same batch, so they must be queued before those.
func TestHandleEvents_OverflowKeepsArrivalOrder(t *testing.T) {
	opts := testOptions(t)
	p, err := New(opts, newFakeStore())
	if err != nil {
		t.Fatal(err)
	}
	ws := &watches{byWD: map[int32]string{1: ""}, byDir: map[string]int32{"": 1}}

	// Each file is written elsewhere and renamed in, so its change time
	// is later than its modification time and it counts as complete.
	for _, name := range []string{"a1", "b2", "b3", "b4", "c5"} {
		tmp := filepath.Join(opts.Dir, "tmp", name)
		if err := os.WriteFile(tmp, []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(opts.Dir, "new", name)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	p.handleEvents(nil, ws, []watchEvent{
		{wd: 1, mask: unix.IN_MOVED_TO, name: "a1"},
		{wd: -1, mask: unix.IN_Q_OVERFLOW},
		{wd: 1, mask: unix.IN_MOVED_TO, name: "c5"},
	})

	want := []string{"a1", "b2", "b3", "b4", "c5"}
	if !slices.Equal(p.queue, want) {
		t.Errorf("queue = %v, want %v", p.queue, want)
	}
}

// During a sync, the events after an overflow wait for the rescan that
// finds the files whose events were lost, as in handleEvents.
func TestHandleUntilMarker_DefersAfterOverflow(t *testing.T) {
	p, err := New(testOptions(t), newFakeStore())
	if err != nil {
		t.Fatal(err)
	}
	ws := &watches{byWD: map[int32]string{1: ""}, byDir: map[string]int32{"": 1}}
	const syncWD = 2
	evs := []watchEvent{
		{wd: 1, mask: unix.IN_MOVED_TO, name: "f1"},
		{wd: -1, mask: unix.IN_Q_OVERFLOW},
		{wd: 1, mask: unix.IN_MOVED_TO, name: "f2"},
		{wd: syncWD, mask: unix.IN_ATTRIB, name: syncMarkerName},
	}
	if !p.handleUntilMarker(nil, ws, evs, syncWD) {
		t.Error("the sync goes on after an overflow")
	}
	if !slices.Equal(p.queue, []string{"f1"}) {
		t.Errorf("queue = %v, want [f1]", p.queue)
	}
	if !p.rescanAgain {
		t.Error("no rescan requested after the overflow")
	}
	if len(p.deferred) != 2 || p.deferred[0].name != "f2" {
		t.Errorf("deferred = %v, want f2 and the marker", p.deferred)
	}

	p.queue, p.queued = nil, map[string]bool{}
	if !p.handleUntilMarker(nil, ws, evs[2:], syncWD) {
		t.Error("the marker's event did not end the sync")
	}
	if !slices.Equal(p.queue, []string{"f2"}) {
		t.Errorf("queue = %v, want [f2]", p.queue)
	}
}

// A spool directory given as a symbolic link, as after moving the spool
// to another disk, gets the same sync before each periodic rescan.
func TestPickup_SyncThroughSymlinkedDir(t *testing.T) {
	opts := testOptions(t)
	link := filepath.Join(t.TempDir(), "spool")
	if err := os.Symlink(opts.Dir, link); err != nil {
		t.Fatal(err)
	}
	opts.Dir = link
	opts.RescanInterval = 20 * time.Millisecond
	logs := capture(&opts)
	start(t, opts, newFakeStore())

	waitFor(t, 5*time.Second, "the sync marker", func() bool {
		return exists(filepath.Join(link, syncMarkerName))
	})
	if strings.Contains(logs.String(), "rescans cannot tell") {
		t.Errorf("log warns that rescans run without a cutoff:\n%s", logs.String())
	}
}

// A spool directory that cannot be watched costs only the sync. Its
// warning names that cost, and a later cutoff failure is still logged.
func TestWatchSpoolDir_FailureLog(t *testing.T) {
	opts := testOptions(t)
	logs := capture(&opts)
	p, err := New(opts, newFakeStore())
	if err != nil {
		t.Fatal(err)
	}
	w, err := newWatcher()
	if err != nil {
		t.Fatal(err)
	}
	w.close() // a closed descriptor makes inotify_add_watch fail

	if wd := p.watchSpoolDir(w); wd >= 0 {
		t.Errorf("watchSpoolDir on a closed watcher = %d, want a negative descriptor", wd)
	}
	if !strings.Contains(logs.String(), "arrival order") {
		t.Errorf("log does not say that arrival order may break:\n%s", logs.String())
	}
	if strings.Contains(logs.String(), "rescans cannot tell") {
		t.Errorf("log claims rescans run without a cutoff:\n%s", logs.String())
	}
	p.logCutoffError(errors.New("cutoff failed"))
	if !strings.Contains(logs.String(), "rescans cannot tell") {
		t.Errorf("a cutoff failure after the watch failure was not logged:\n%s", logs.String())
	}
}

// syncSetup returns a pickup and a watcher whose sync watch is on another
// directory, so the marker's event never reaches the sync.
func syncSetup(t *testing.T) (*Pickup, *watcher, *watches, int32) {
	t.Helper()
	p, err := New(testOptions(t), newFakeStore())
	if err != nil {
		t.Fatal(err)
	}
	w, err := newWatcher()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.close)
	wd, err := w.addMask(t.TempDir(), syncMask)
	if err != nil {
		t.Fatal(err)
	}
	ws := &watches{byWD: map[int32]string{}, byDir: map[string]int32{}}
	return p, w, ws, wd
}

// A marker event that arrives after its sync timed out belongs to that
// sync, so it must not end the next one early. An overflow may have lost
// it, so the count starts again there.
func TestSyncEvents_LateMarkerSkipped(t *testing.T) {
	p, w, ws, wd := syncSetup(t)
	p.syncEvents(context.Background(), w, ws, wd)
	if p.lateMarkers != 1 {
		t.Fatalf("lateMarkers after a timed-out sync = %d, want 1", p.lateMarkers)
	}

	marker := []watchEvent{{wd: wd, mask: unix.IN_ATTRIB, name: syncMarkerName}}
	if p.handleUntilMarker(nil, ws, marker, wd) {
		t.Error("the late event of the earlier marker ended the sync")
	}
	if !p.handleUntilMarker(nil, ws, marker, wd) {
		t.Error("the sync's own marker event did not end it")
	}

	p.lateMarkers = 2
	p.handleUntilMarker(nil, ws, []watchEvent{{wd: -1, mask: unix.IN_Q_OVERFLOW}}, wd)
	if p.lateMarkers != 0 {
		t.Errorf("lateMarkers after an overflow = %d, want 0", p.lateMarkers)
	}
}

// A stop ends a sync at once instead of after the marker wait.
func TestSyncEvents_EndsOnStop(t *testing.T) {
	p, w, ws, wd := syncSetup(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()

	done := make(chan struct{})
	go func() {
		p.syncEvents(ctx, w, ws, wd)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(maxStampWait / 2):
		t.Fatal("the sync went on after the stop")
	}
}

// With the reader gone no marker event can come, so a sync does not
// touch the marker and wait for it.
func TestSyncEvents_SkippedAfterReaderFailure(t *testing.T) {
	p, w, ws, wd := syncSetup(t)
	w.err = errors.New("read failed")
	close(w.stopped)

	p.syncEvents(context.Background(), w, ws, wd)
	if exists(filepath.Join(p.opts.Dir, syncMarkerName)) {
		t.Error("the sync touched its marker with no reader to see the event")
	}
	if p.lateMarkers != 0 {
		t.Errorf("lateMarkers = %d, want 0", p.lateMarkers)
	}
}

// The late event of a timed-out sync's marker often comes between rescans,
// where handleEvents takes it. The count must drop there too, or every
// later sync skips its own marker and waits maxStampWait for nothing.
func TestHandleEvents_LateMarkerCounted(t *testing.T) {
	p, err := New(testOptions(t), newFakeStore())
	if err != nil {
		t.Fatal(err)
	}
	w, err := newWatcher()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.close)
	wd := p.watchSpoolDir(w)
	if wd < 0 {
		t.Fatal("watchSpoolDir failed")
	}
	ws := &watches{byWD: map[int32]string{}, byDir: map[string]int32{}}

	p.lateMarkers = 1
	p.handleEvents(w, ws, []watchEvent{{wd: wd, mask: unix.IN_ATTRIB, name: syncMarkerName}})
	if p.lateMarkers != 0 {
		t.Fatalf("lateMarkers after handleEvents took the late event = %d, want 0", p.lateMarkers)
	}

	p.syncEvents(context.Background(), w, ws, wd)
	if p.lateMarkers != 0 {
		t.Errorf("lateMarkers after a sync = %d, want 0: the sync missed its own marker", p.lateMarkers)
	}

	p.lateMarkers = 1
	p.handleEvents(w, ws, []watchEvent{{wd: -1, mask: unix.IN_Q_OVERFLOW}})
	if p.lateMarkers != 0 {
		t.Errorf("lateMarkers after an overflow in handleEvents = %d, want 0", p.lateMarkers)
	}
}

// A spool directory removed while the pickup runs is created again at
// once, with a watch on the new new/, so producers can go on, and the
// daemon hears of it to take the directory's lock again.
func TestPickup_RemovedSpoolDirRestored(t *testing.T) {
	// The daemon keeps its lock file open in the spool directory, and
	// then the kernel does not end the directory's watch at the removal.
	for _, openFile := range []bool{false, true} {
		t.Run(fmt.Sprintf("open file %t", openFile), func(t *testing.T) {
			opts := testOptions(t)
			opts.RescanInterval = time.Hour // only the event may restore it
			logs := capture(&opts)
			var restored atomic.Int32
			opts.Claim = func() bool { restored.Add(1); return true }
			if openFile {
				lock, err := os.Create(filepath.Join(opts.Dir, ".mqspool.lock"))
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { lock.Close() })
			}
			store := newFakeStore()
			start(t, opts, store)
			drop(t, opts.Dir, "a/1", "before")
			waitFor(t, 5*time.Second, "the first file", func() bool { return store.count() == 1 })
			before := restored.Load()

			if err := os.RemoveAll(opts.Dir); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 5*time.Second, "new/ created again", func() bool {
				return exists(filepath.Join(opts.Dir, "new")) && restored.Load() > before
			})
			drop(t, opts.Dir, "a/2", "after")
			waitFor(t, 5*time.Second, "the file dropped after the removal", func() bool { return store.count() == 2 })
			if !strings.Contains(logs.String(), "was removed while the daemon ran") {
				t.Errorf("log does not report the removal:\n%s", logs.String())
			}
		})
	}
}

// The spool directory's watch ends with the directory. The next rescan
// watches the directory now at the path, so syncs do not wait for marker
// events from a watch that is gone.
func TestRescan_WatchesNewSpoolDir(t *testing.T) {
	p, err := New(testOptions(t), newFakeStore())
	if err != nil {
		t.Fatal(err)
	}
	w, err := newWatcher()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.close)
	ws := &watches{byWD: map[int32]string{}, byDir: map[string]int32{}}
	old := p.watchSpoolDir(w)
	p.lateMarkers = 2

	p.handleEvent(w, ws, watchEvent{wd: old, mask: unix.IN_IGNORED})
	if p.syncWD != -1 || !p.syncLost {
		t.Fatalf("after the watch ended: syncWD %d, syncLost %t, want -1 and true", p.syncWD, p.syncLost)
	}
	p.rescan(w, ws, nil)
	if p.syncWD < 0 || p.syncLost || p.lateMarkers != 0 {
		t.Errorf("after the rescan: syncWD %d, syncLost %t, lateMarkers %d, want a watch, false and 0",
			p.syncWD, p.syncLost, p.lateMarkers)
	}
}

// An operator may remove the spool directory and create it again with
// tmp/, new/ and failed/ before the pickup notices. The lock file went
// with the old directory, so the daemon must hear of it all the same.
func TestPickup_RecreatedSpoolDirReported(t *testing.T) {
	opts := testOptions(t)
	opts.RescanInterval = time.Hour // only the events may report it
	var reported atomic.Int32
	opts.Claim = func() bool { reported.Add(1); return true }
	store := newFakeStore()
	start(t, opts, store)
	drop(t, opts.Dir, "a/1", "before")
	waitFor(t, 5*time.Second, "the first file", func() bool { return store.count() == 1 })
	before := reported.Load()

	if err := os.RemoveAll(opts.Dir); err != nil {
		t.Fatal(err)
	}
	for _, sub := range []string{"tmp", "new", "failed"} {
		if err := os.MkdirAll(filepath.Join(opts.Dir, sub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 5*time.Second, "Claim called after the replacement", func() bool {
		return reported.Load() > before
	})
	drop(t, opts.Dir, "a/2", "after")
	waitFor(t, 5*time.Second, "the file dropped after the removal", func() bool { return store.count() == 2 })
}

// While another daemon holds the spool directory at the path, as after a
// replacement it locked first, the pickup takes no file from it, also
// none announced by a watch, and goes on once the claim succeeds.
func TestPickup_FailedClaimTakesNothing(t *testing.T) {
	opts := testOptions(t)
	opts.RescanInterval = time.Second
	gate := gateClaims(&opts)
	store := newFakeStore()
	start(t, opts, store)
	drop(t, opts.Dir, "a/1", "before")
	waitFor(t, 5*time.Second, "the first file", func() bool { return store.count() == 1 })

	gate.allowed.Store(false)
	failed := gate.calls.Load()
	waitFor(t, 5*time.Second, "a failed claim", func() bool { return gate.calls.Load() > failed })
	drop(t, opts.Dir, "a/2", "while the claim fails")
	failed = gate.calls.Load()
	waitFor(t, 5*time.Second, "two more failed claims", func() bool { return gate.calls.Load() > failed+1 })
	if n := store.count(); n != 1 {
		t.Fatalf("%d files taken, want 1: the pickup took a file while its claim failed", n)
	}

	gate.allowed.Store(true)
	waitFor(t, 5*time.Second, "the file dropped while the claim failed", func() bool { return store.count() == 2 })
}

// rm -rf of a large spool directory removes new/ long before the spool
// directory itself. The pickup must not create new/ in the directory
// being removed, or the removal fails with "Directory not empty".
func TestPickup_SlowRemovalNotHindered(t *testing.T) {
	opts := testOptions(t)
	opts.RescanInterval = time.Hour // only the events may restore it
	store := newFakeStore()
	start(t, opts, store)
	drop(t, opts.Dir, "a/1", "before")
	waitFor(t, 5*time.Second, "the first file", func() bool { return store.count() == 1 })
	// rm reads the entries once, as fts does, and removes new/ first.
	entries, err := os.ReadDir(opts.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(opts.Dir, "new")); err != nil {
		t.Fatal(err)
	}
	emptySlowly(t, filepath.Join(opts.Dir, "failed"), 3*restoreDelay)

	for _, e := range entries {
		if e.Name() != "new" {
			if err := os.RemoveAll(filepath.Join(opts.Dir, e.Name())); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := os.Remove(opts.Dir); err != nil {
		t.Fatalf("removing the emptied spool directory: %v", err)
	}
	waitFor(t, 5*time.Second, "new/ created after the removal", func() bool {
		return exists(filepath.Join(opts.Dir, "new"))
	})
}

// A periodic rescan may come while rm -rf is emptying a large failed/,
// after it removed new/, the markers or the daemon's lock file. The
// rescan must not create them again, or the removal fails with
// "Directory not empty".
func TestRescan_WaitsForSlowRemoval(t *testing.T) {
	opts := testOptions(t)
	opts.RescanInterval = time.Second
	const lockName = ".mqspool.lock"
	opts.OwnFiles = []string{lockName}
	if err := os.WriteFile(filepath.Join(opts.Dir, lockName), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	var rescans atomic.Int32
	opts.Claim = func() bool { rescans.Add(1); return true }
	store := newFakeStore()
	start(t, opts, store)
	drop(t, opts.Dir, "a/1", "before")
	waitFor(t, 5*time.Second, "the first file", func() bool { return store.count() == 1 })
	waitFor(t, 5*time.Second, "a periodic rescan", func() bool { return rescans.Load() > 1 })

	// rm reads the entries once and removes them in directory order,
	// which may put everything but failed/ first.
	entries, err := os.ReadDir(opts.Dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() != "failed" {
			if err := os.RemoveAll(filepath.Join(opts.Dir, e.Name())); err != nil {
				t.Fatal(err)
			}
		}
	}
	emptySlowly(t, filepath.Join(opts.Dir, "failed"), 3*opts.RescanInterval)
	if err := os.Remove(filepath.Join(opts.Dir, "failed")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(opts.Dir); err != nil {
		t.Fatalf("removing the emptied spool directory: %v", err)
	}
	waitFor(t, 5*time.Second, "new/ created after the removal", func() bool {
		return exists(filepath.Join(opts.Dir, "new"))
	})
}

// A new/ removed alone, with the rest of the spool directory left as it
// is, is created again although the rescans wait for removals.
func TestRescan_RestoresNewRemovedAlone(t *testing.T) {
	opts := testOptions(t)
	opts.RescanInterval = time.Hour // only the events may restore it
	store := newFakeStore()
	start(t, opts, store)
	drop(t, opts.Dir, "a/1", "before")
	waitFor(t, 5*time.Second, "the first file", func() bool { return store.count() == 1 })

	if err := os.RemoveAll(filepath.Join(opts.Dir, "new")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "new/ created again", func() bool {
		return exists(filepath.Join(opts.Dir, "new"))
	})
	drop(t, opts.Dir, "a/2", "after")
	waitFor(t, 5*time.Second, "the file dropped after the restore", func() bool { return store.count() == 2 })
}

// emptySlowly fills dir with files and removes them one by one over about
// d, as rm -rf does with a large directory.
func emptySlowly(t *testing.T, dir string, d time.Duration) {
	t.Helper()
	const files = 200
	for i := range files {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%d", i)), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for i := range files {
		time.Sleep(d / files)
		if err := os.Remove(filepath.Join(dir, fmt.Sprintf("f%d", i))); err != nil {
			t.Fatal(err)
		}
	}
}

// A spool directory given as a symbolic link cannot be created again
// while its target is gone. Once the target is back, a later rescan
// watches the spool directory again, or syncs stay off for good.
func TestRescan_RetriesSpoolDirWatch(t *testing.T) {
	target := filepath.Join(t.TempDir(), "spool")
	if err := os.Mkdir(target, 0o755); err != nil {
		t.Fatal(err)
	}
	opts := testOptions(t)
	opts.Dir = filepath.Join(opts.Dir, "link")
	if err := os.Symlink(target, opts.Dir); err != nil {
		t.Fatal(err)
	}
	p, err := New(opts, newFakeStore())
	if err != nil {
		t.Fatal(err)
	}
	w, err := newWatcher()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.close)
	ws := &watches{byWD: map[int32]string{}, byDir: map[string]int32{}}
	old := p.watchSpoolDir(w)

	if err := os.RemoveAll(target); err != nil {
		t.Fatal(err)
	}
	p.handleEvent(w, ws, watchEvent{wd: old, mask: unix.IN_IGNORED})
	p.rescan(w, ws, nil)
	if p.syncWD >= 0 {
		t.Fatalf("syncWD %d with the link's target gone, want -1", p.syncWD)
	}

	if err := os.Mkdir(target, 0o755); err != nil {
		t.Fatal(err)
	}
	p.rescan(w, ws, nil)
	if p.syncWD < 0 {
		t.Errorf("syncWD %d after the target came back, want a watch", p.syncWD)
	}
	if !exists(filepath.Join(opts.Dir, "new")) {
		t.Error("new/ not created again in the target that came back")
	}
}

// mv of the spool directory moves the watched new/ along, and no event
// says so to its watch. The pickup must watch the new/ now at the path,
// or files there wait for the periodic rescan for good.
func TestPickup_MovedSpoolDirWatchedAgain(t *testing.T) {
	opts := testOptions(t)
	opts.RescanInterval = time.Hour // only the events may report it
	store := newFakeStore()
	start(t, opts, store)
	drop(t, opts.Dir, "a/1", "before")
	waitFor(t, 5*time.Second, "the first file", func() bool { return store.count() == 1 })

	if err := os.Rename(opts.Dir, opts.Dir+".old"); err != nil {
		t.Fatal(err)
	}
	for _, sub := range []string{"tmp", "new", "failed"} {
		if err := os.MkdirAll(filepath.Join(opts.Dir, sub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(3 * restoreDelay)
	drop(t, opts.Dir, "a/2", "after")
	waitFor(t, 5*time.Second, "the file dropped into the new directory", func() bool { return store.count() == 2 })
}

// A spool directory given as a symbolic link may be pointed at another
// directory while the pickup runs, and no watch reports that. The next
// rescan must watch the new/ of the new target, or files there wait for
// the periodic rescan for good.
func TestRescan_FollowsRepointedLink(t *testing.T) {
	base := t.TempDir()
	targets := spoolTargets(t, base)
	opts := testOptions(t)
	opts.Dir = filepath.Join(base, "spool")
	if err := os.Symlink(targets[0], opts.Dir); err != nil {
		t.Fatal(err)
	}
	p, err := New(opts, newFakeStore())
	if err != nil {
		t.Fatal(err)
	}
	w, err := newWatcher()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.close)
	ws := &watches{byWD: map[int32]string{}, byDir: map[string]int32{}}
	p.watchSpoolDir(w)
	p.rescan(w, ws, nil)

	repointLink(t, opts.Dir, targets[1])
	p.rescan(w, ws, nil)
	if err := os.WriteFile(filepath.Join(targets[1], "new", "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	timeout := time.After(5 * time.Second)
	for {
		select {
		case evs := <-w.events:
			for _, ev := range evs {
				if dir, ok := ws.byWD[ev.wd]; ok && dir == "" && ev.name == "f" {
					return
				}
			}
		case <-timeout:
			t.Fatal("no event from the new/ of the link's new target")
		}
	}
}

// A link pointed elsewhere is noticed within about a second, not at the
// periodic rescan, so files written through it do not wait.
func TestPickup_RepointedLinkFollowedSoon(t *testing.T) {
	base := t.TempDir()
	targets := spoolTargets(t, base)
	opts := testOptions(t)
	opts.Dir = filepath.Join(base, "spool")
	opts.RescanInterval = time.Hour // only the link check may notice it
	if err := os.Symlink(targets[0], opts.Dir); err != nil {
		t.Fatal(err)
	}
	logs := capture(&opts)
	store := newFakeStore()
	start(t, opts, store)
	drop(t, opts.Dir, "a/1", "before")
	waitFor(t, 5*time.Second, "the first file", func() bool { return store.count() == 1 })

	repointLink(t, opts.Dir, targets[1])
	drop(t, opts.Dir, "a/2", "after")
	waitFor(t, 5*time.Second, "the file written through the repointed link", func() bool {
		return store.count() == 2
	})
	if !strings.Contains(logs.String(), "symbolic link was changed") {
		t.Errorf("log does not report the changed link:\n%s", logs.String())
	}
}

// Events from the old target keep arriving after a link is pointed
// elsewhere, more often than once a second. The link check must still
// come within about a second, not only once the events pause.
func TestPickup_RepointedLinkFollowedUnderSteadyEvents(t *testing.T) {
	base := t.TempDir()
	targets := spoolTargets(t, base)
	opts := testOptions(t)
	opts.Dir = filepath.Join(base, "spool")
	opts.RescanInterval = time.Hour // only the link check may notice it
	if err := os.Symlink(targets[0], opts.Dir); err != nil {
		t.Fatal(err)
	}
	store := newFakeStore()
	start(t, opts, store)
	drop(t, opts.Dir, "a/1", "before")
	waitFor(t, 5*time.Second, "the first file", func() bool { return store.count() == 1 })
	// Any other deadline, such as forgetting the first file, would run
	// the link check as well.
	waitFor(t, 5*time.Second, "the first file forgotten", func() bool { return store.forgottenCount() == 1 })

	repointLink(t, opts.Dir, targets[1])
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		// A hidden name is never taken, so its events find nothing
		// that would lead the pickup to the new target by chance.
		busy := filepath.Join(targets[0], "new", ".busy")
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			// Each write is an event in the old target's new/.
			_ = os.WriteFile(busy, []byte(strconv.Itoa(i)), 0o644)
		}
	}()
	defer func() { close(stop); <-done }()

	drop(t, opts.Dir, "a/2", "after")
	waitFor(t, 5*time.Second, "the file written through the repointed link", func() bool {
		return slices.Contains(store.names(), "a/2")
	})
}

// A spool directory replaced by a symbolic link while the pickup runs
// gets the same once-a-second check as one that was a link at start.
func TestPickup_LinkInPlaceOfDirFollowedSoon(t *testing.T) {
	base := t.TempDir()
	targets := spoolTargets(t, base)
	opts := testOptions(t)
	opts.RescanInterval = time.Hour // only the link check may notice it
	store := newFakeStore()
	start(t, opts, store)
	drop(t, opts.Dir, "a/1", "in the directory")
	waitFor(t, 5*time.Second, "the first file", func() bool { return store.count() == 1 })

	if err := os.Rename(opts.Dir, opts.Dir+".old"); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(targets[0], opts.Dir); err != nil {
		t.Fatal(err)
	}
	drop(t, opts.Dir, "a/2", "through the link")
	waitFor(t, 5*time.Second, "the file written through the new link", func() bool { return store.count() == 2 })

	repointLink(t, opts.Dir, targets[1])
	drop(t, opts.Dir, "a/3", "through the repointed link")
	waitFor(t, 5*time.Second, "the file written through the repointed link", func() bool {
		return store.count() == 3
	})
}

// The shipped layout makes the spool directory and its subdirectories
// setgid and group-writable, so files that producers drop stay readable
// by the daemon. Directories created again after a removal keep those
// modes.
func TestPickup_RestoredDirsKeepModes(t *testing.T) {
	opts := testOptions(t)
	opts.RescanInterval = time.Hour // only the events may restore it
	const mode = 0o770 | fs.ModeSetgid
	for _, dir := range []string{opts.Dir, filepath.Join(opts.Dir, "tmp"), filepath.Join(opts.Dir, "new"),
		filepath.Join(opts.Dir, "failed")} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, mode); err != nil {
			t.Fatal(err)
		}
	}
	logs := capture(&opts)
	store := newFakeStore()
	start(t, opts, store)
	drop(t, opts.Dir, "a/1", "before")
	waitFor(t, 5*time.Second, "the first file", func() bool { return store.count() == 1 })

	if err := os.RemoveAll(opts.Dir); err != nil {
		t.Fatal(err)
	}
	// The log line comes after the modes are set.
	waitFor(t, 5*time.Second, "the directories created again", func() bool {
		return strings.Contains(logs.String(), "was removed while the daemon ran")
	})
	for _, dir := range []string{opts.Dir, filepath.Join(opts.Dir, "tmp"), filepath.Join(opts.Dir, "new"),
		filepath.Join(opts.Dir, "failed")} {
		info, err := os.Stat(dir)
		if err != nil {
			t.Fatal(err)
		}
		if got := info.Mode() & (fs.ModePerm | fs.ModeSetgid); got != mode {
			t.Errorf("mode of %s created again = %v, want %v", dir, got, mode)
		}
	}
}

// An rm -rf of the spool directory is reported once, by the restore. The
// same directory must not also be reported as a symbolic link pointed
// elsewhere.
func TestPickup_RemovedSpoolDirNotReportedAsLink(t *testing.T) {
	opts := testOptions(t)
	opts.RescanInterval = time.Hour // only the events may restore it
	logs := capture(&opts)
	// The daemon's open lock file keeps the directory's watch alive
	// until the restore.
	lock, err := os.Create(filepath.Join(opts.Dir, ".mqspool.lock"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lock.Close() })
	store := newFakeStore()
	start(t, opts, store)
	drop(t, opts.Dir, "a/1", "before")
	waitFor(t, 5*time.Second, "the first file", func() bool { return store.count() == 1 })

	if err := os.RemoveAll(opts.Dir); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the restore logged", func() bool {
		return strings.Contains(logs.String(), "was removed while the daemon ran")
	})
	drop(t, opts.Dir, "a/2", "after")
	waitFor(t, 5*time.Second, "the file dropped after the removal", func() bool { return store.count() == 2 })
	if strings.Contains(logs.String(), "symbolic link") {
		t.Errorf("log reports a removed directory as a changed link:\n%s", logs.String())
	}
}

// Removing the lock file lets a second daemon lock the directory while
// this one's watches still report files. The claim before each batch
// keeps the two from taking the same files in the meantime.
func TestPickup_ClaimCheckedBeforeBatch(t *testing.T) {
	opts := testOptions(t)
	opts.RescanInterval = time.Hour // only the watches report files
	gate := gateClaims(&opts)
	store := newFakeStore()
	start(t, opts, store)
	drop(t, opts.Dir, "a/1", "before")
	waitFor(t, 5*time.Second, "the first file", func() bool { return store.count() == 1 })

	gate.allowed.Store(false)
	before := gate.calls.Load()
	drop(t, opts.Dir, "a/2", "while the claim fails")
	waitFor(t, 5*time.Second, "a claim after the file was reported", func() bool {
		return gate.calls.Load() > before
	})
	time.Sleep(200 * time.Millisecond)
	if n := store.count(); n != 1 {
		t.Fatalf("%d files taken, want 1: a watch reported a file that the pickup took without its claim", n)
	}
}

// A failed claim is tried again once a second, so the pickup takes the
// directory back soon after the other daemon stops or a symbolic link
// leads back, not at the next periodic rescan.
func TestPickup_FailedClaimRetriedSoon(t *testing.T) {
	opts := testOptions(t)
	opts.RescanInterval = time.Hour
	gate := gateClaims(&opts)
	store := newFakeStore()
	start(t, opts, store)
	drop(t, opts.Dir, "a/1", "before")
	waitFor(t, 5*time.Second, "the first file", func() bool { return store.count() == 1 })

	gate.allowed.Store(false)
	drop(t, opts.Dir, "a/2", "while the claim fails")
	time.Sleep(500 * time.Millisecond)
	gate.allowed.Store(true)
	waitFor(t, 5*time.Second, "the file dropped while the claim failed", func() bool { return store.count() == 2 })
}

// During an rm -rf of the spool directory the lock file may be gone while
// watches still report files. The claim before a batch must then wait for
// the rescan that waits out the removal, since taking the lock would
// create the lock file again and make the removal fail.
func TestPickup_BatchClaimWaitsForMissingLock(t *testing.T) {
	opts := testOptions(t)
	opts.RescanInterval = time.Hour // only the watches report files
	const lockName = ".mqspool.lock"
	opts.OwnFiles = []string{lockName}
	lock := filepath.Join(opts.Dir, lockName)
	if err := os.WriteFile(lock, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	var claims atomic.Int32
	opts.Claim = func() bool { claims.Add(1); return true }
	store := newFakeStore()
	start(t, opts, store)
	drop(t, opts.Dir, "a/1", "before")
	waitFor(t, 5*time.Second, "the first file", func() bool { return store.count() == 1 })

	if err := os.Remove(lock); err != nil {
		t.Fatal(err)
	}
	before := claims.Load()
	drop(t, opts.Dir, "a/2", "while the lock file is missing")
	waitFor(t, 5*time.Second, "the file dropped while the lock file is missing", func() bool {
		return store.count() == 2
	})
	if n := claims.Load(); n != before {
		t.Errorf("%d claims while the lock file was missing, want none before the rescan", n-before)
	}
}

// mkdirDeep creates directories named name below dir, through
// descriptors, until the path is at least length bytes long, which
// os.MkdirAll cannot do past PATH_MAX. It returns a descriptor of the
// deepest one and the path's length.
func mkdirDeep(t *testing.T, dir, name string, length int) (int, int) {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_DIRECTORY|unix.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	n := len(dir)
	for n < length {
		if err := unix.Mkdirat(fd, name, 0o755); err != nil {
			t.Fatal(err)
		}
		next, err := unix.Openat(fd, name, unix.O_DIRECTORY|unix.O_RDONLY, 0)
		unix.Close(fd)
		if err != nil {
			t.Fatal(err)
		}
		fd, n = next, n+1+len(name)
	}
	return fd, n
}

// A path under new/ longer than the kernel opens cannot be read by any
// rescan. Each one is logged once with its length and the fix, and the
// files beside it are still taken.
func TestPickup_PathTooLongLoggedOnce(t *testing.T) {
	opts := testOptions(t)
	opts.RescanInterval = time.Second
	logs := capture(&opts)
	newDir := filepath.Join(opts.Dir, "new")
	if err := os.MkdirAll(newDir, 0o755); err != nil {
		t.Fatal(err)
	}
	// The directory's path is too long, and so is the path of a file
	// whose name alone takes a shorter one past the limit.
	deep, dirBytes := mkdirDeep(t, newDir, strings.Repeat("d", 200), 4200)
	t.Cleanup(func() { unix.Close(deep) })
	fd, n := mkdirDeep(t, newDir, strings.Repeat("e", 100), 3950)
	t.Cleanup(func() { unix.Close(fd) })
	name := strings.Repeat("f", 200) + ".msg"
	file, err := unix.Openat(fd, name, unix.O_CREAT|unix.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(file)
	fileBytes := n + 1 + len(name)

	store := newFakeStore()
	start(t, opts, store)
	drop(t, opts.Dir, "a/1", "beside the long path")
	waitFor(t, 5*time.Second, "the file beside the long path", func() bool { return store.count() == 1 })
	time.Sleep(2500 * time.Millisecond) // two more rescans

	if got := strings.Count(logs.String(), "path too long to open"); got != 2 {
		t.Errorf("long paths logged %d times, want once each of 2:\n%s", got, logs.String())
	}
	for _, n := range []int{dirBytes, fileBytes} {
		if !strings.Contains(logs.String(), fmt.Sprintf("path_bytes=%d", n)) {
			t.Errorf("log does not give a path's length %d:\n%s", n, logs.String())
		}
	}
	// PATH_MAX counts the terminating NUL, so a path of 4096 bytes
	// fails as well.
	if !strings.Contains(logs.String(), "at most 4095 bytes") {
		t.Errorf("log does not name the longest path Linux opens, 4095 bytes:\n%s", logs.String())
	}
	if strings.Contains(logs.String(), "picked up at rescans") {
		t.Errorf("log says rescans take files they cannot open:\n%s", logs.String())
	}
}

// spoolTargets creates two spool directories, base/one and base/two, with
// their subdirectories, for a symbolic link to point at.
func spoolTargets(t *testing.T, base string) []string {
	t.Helper()
	targets := []string{filepath.Join(base, "one"), filepath.Join(base, "two")}
	for _, target := range targets {
		for _, sub := range []string{"tmp", "new", "failed"} {
			if err := os.MkdirAll(filepath.Join(target, sub), 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	return targets
}

// repointLink points the symbolic link at link to target in one rename,
// as ln -sfn does.
func repointLink(t *testing.T, link, target string) {
	t.Helper()
	next := link + ".next"
	if err := os.Symlink(target, next); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(next, link); err != nil {
		t.Fatal(err)
	}
}
