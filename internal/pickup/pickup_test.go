package pickup

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mqspool/mqspool/internal/spool"
)

func TestPickup_RawFileTopicFromPath(t *testing.T) {
	opts := testOptions(t)
	store := newFakeStore()
	start(t, opts, store)

	drop(t, opts.Dir, "site1/temp/0001.json", `{"t":21}`)
	waitFor(t, 5*time.Second, "one file appended", func() bool { return store.count() == 1 })

	m := store.files[0].Messages[0]
	if m.Topic != "site1/temp" {
		t.Errorf("topic = %q, want site1/temp", m.Topic)
	}
	if string(m.Payload) != `{"t":21}` {
		t.Errorf("payload = %q", m.Payload)
	}
	if m.QoS != 1 {
		t.Errorf("qos = %d, want the default 1", m.QoS)
	}
	waitFor(t, 5*time.Second, "identity forgotten", func() bool { return store.forgottenCount() == 1 })
	if exists(filepath.Join(opts.Dir, "new", "site1", "temp", "0001.json")) {
		t.Error("ingested file is still in new/")
	}
}

func TestPickup_DirectoriesCreatedAfterStart(t *testing.T) {
	opts := testOptions(t)
	store := newFakeStore()
	start(t, opts, store)

	// The directories and the file appear at once, before a watch on the
	// new directories can exist.
	for i := range 5 {
		drop(t, opts.Dir, fmt.Sprintf("d%d/a/b/c/f", i), "x")
	}
	waitFor(t, 5*time.Second, "five files appended", func() bool { return store.count() == 5 })

	// Files that arrive later in a watched subdirectory are taken at once.
	drop(t, opts.Dir, "d0/a/b/c/g", "y")
	waitFor(t, opts.RescanInterval/2, "file in watched subdirectory", func() bool {
		return store.count() == 6
	})
}

func TestPickup_OrderKept(t *testing.T) {
	opts := testOptions(t)
	store := newFakeStore()
	start(t, opts, store)

	var want []string
	for i := range 300 {
		rel := fmt.Sprintf("topic/%c/f%04d", 'a'+i%3, 300-i)
		want = append(want, rel)
		drop(t, opts.Dir, rel, "x")
	}
	waitFor(t, 10*time.Second, "all files appended", func() bool { return store.count() == 300 })
	if got := store.names(); !slices.Equal(got, want) {
		t.Errorf("append order differs from drop order:\ngot  %v\nwant %v", got[:10], want[:10])
	}
}

func TestPickup_RenamedDuringRescan(t *testing.T) {
	opts := testOptions(t)
	opts.RescanInterval = 5 * time.Millisecond
	store := newFakeStore()
	start(t, opts, store)

	for i := range 200 {
		drop(t, opts.Dir, fmt.Sprintf("r/%d/f%d", i%7, i), "x")
	}
	waitFor(t, 10*time.Second, "all files appended", func() bool { return store.count() >= 200 })
	time.Sleep(50 * time.Millisecond)

	names := store.names()
	if len(names) != 200 {
		t.Errorf("appended %d files, want 200", len(names))
	}
	seen := make(map[string]bool)
	for _, n := range names {
		if seen[n] {
			t.Errorf("file %s appended twice", n)
		}
		seen[n] = true
	}
}

func TestPickup_SlowWriteNeverHalfSent(t *testing.T) {
	opts := testOptions(t)
	opts.Settle = 400 * time.Millisecond
	opts.RescanInterval = 20 * time.Millisecond
	store := newFakeStore()
	start(t, opts, store)

	if err := os.MkdirAll(filepath.Join(opts.Dir, "new", "slow"), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(opts.Dir, "new", "slow", "file"))
	if err != nil {
		t.Fatal(err)
	}

	// Each write comes well within the settle time, and the whole write
	// takes longer than one settle time.
	for range 12 {
		if _, err := f.WriteString("chunk "); err != nil {
			t.Fatal(err)
		}
		time.Sleep(opts.Settle / 8)
		if n := store.count(); n != 0 {
			t.Fatalf("file appended while still being written: %q", store.files[0].Messages[0].Payload)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "file appended after close", func() bool { return store.count() == 1 })
	if got := string(store.files[0].Messages[0].Payload); len(got) != 12*len("chunk ") {
		t.Errorf("payload has %d bytes, want %d", len(got), 12*len("chunk "))
	}
}

// A writer that pauses for longer than the settle time, with its file
// open, must not have the part written so far sent: the file is created
// by an open, so its close announces it.
func TestPickup_OpenFileWaitsForClosePastSettle(t *testing.T) {
	opts := testOptions(t)
	opts.Settle = 50 * time.Millisecond
	opts.RescanInterval = 5 * time.Second
	store := newFakeStore()
	start(t, opts, store)
	watchedDir(t, opts, store, "paused")

	f, err := os.Create(filepath.Join(opts.Dir, "new", "paused", "reading"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("first "); err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * opts.Settle)
	if n := store.count(); n != 1 {
		f.Close()
		t.Fatalf("file appended during the writer's pause: %q", store.files[1].Messages[0].Payload)
	}
	if _, err := f.WriteString("second"); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	waitFor(t, 5*time.Second, "file appended after close", func() bool { return store.count() == 2 })
	if got := string(store.files[1].Messages[0].Payload); got != "first second" {
		t.Errorf("payload %q, want the whole file", got)
	}
}

// A file that its writer never closes is still taken, once it has kept
// its size and modification time for a rescan interval.
func TestPickup_OpenFileTakenAfterRescanInterval(t *testing.T) {
	opts := testOptions(t)
	opts.Settle = 20 * time.Millisecond
	opts.RescanInterval = 400 * time.Millisecond
	store := newFakeStore()
	start(t, opts, store)
	watchedDir(t, opts, store, "held")

	f, err := os.Create(filepath.Join(opts.Dir, "new", "held", "open"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString("kept open"); err != nil {
		t.Fatal(err)
	}
	began := time.Now()

	waitFor(t, 5*time.Second, "open file appended", func() bool { return store.count() == 2 })
	// The modification time comes from a coarse kernel clock, so the
	// bound leaves room below the rescan interval, far above the settle
	// time.
	if waited := time.Since(began); waited < opts.RescanInterval/2 {
		t.Errorf("open file appended after %v, want about the rescan interval %v", waited, opts.RescanInterval)
	}
}

// watchedDir makes dir under new/ and waits until the pickup watches it,
// shown by the ingest of a file renamed into it.
func watchedDir(t *testing.T, opts Options, store *fakeStore, dir string) {
	t.Helper()
	drop(t, opts.Dir, dir+"/probe", "probe")
	waitFor(t, 5*time.Second, "probe file appended", func() bool { return store.count() == 1 })
}

func TestPickup_InPlaceFileSettlesAtRescan(t *testing.T) {
	opts := testOptions(t)
	opts.RescanInterval = 50 * time.Millisecond
	store := newFakeStore()

	// A hard link creates a complete file with no close-write event.
	src := filepath.Join(t.TempDir(), "src")
	if err := os.WriteFile(src, []byte("linked"), 0o644); err != nil {
		t.Fatal(err)
	}
	start(t, opts, store)
	if err := os.MkdirAll(filepath.Join(opts.Dir, "new", "l"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(src, filepath.Join(opts.Dir, "new", "l", "f")); err != nil {
		t.Skipf("hard link across temporary directories: %v", err)
	}
	waitFor(t, 5*time.Second, "linked file appended", func() bool { return store.count() == 1 })
}

func TestPickup_SeenFileUnlinkedNotAppended(t *testing.T) {
	opts := testOptions(t)
	// No rescan wakes the pickup: the identity must be forgotten soon
	// after the removal ends, not at the next event.
	opts.RescanInterval = time.Hour
	store := newFakeStore()
	p, err := New(opts, store)
	if err != nil {
		t.Fatal(err)
	}

	// Simulate a crash after Append and before the unlink: the store
	// committed the file's identity but the file is still in new/.
	drop(t, opts.Dir, "crash/f", "payload")
	id, _, err := p.readFile("crash/f")
	if err != nil {
		t.Fatal(err)
	}
	store.seen[id] = true

	start(t, opts, store)
	name := filepath.Join(opts.Dir, "new", "crash", "f")
	waitFor(t, 5*time.Second, "committed file removed", func() bool { return !exists(name) })
	if n := store.count(); n != 0 {
		t.Errorf("committed file appended again: %d appends", n)
	}
	waitFor(t, time.Second, "identity forgotten", func() bool { return store.forgottenCount() == 1 })
}

func TestPickup_StartForgetsOrphanIdentities(t *testing.T) {
	opts := testOptions(t)
	store := newFakeStore()
	p, err := New(opts, store)
	if err != nil {
		t.Fatal(err)
	}

	// A committed file still in new/ keeps its identity.
	drop(t, opts.Dir, "o/kept", "payload")
	keptID, _, err := p.readFile("o/kept")
	if err != nil {
		t.Fatal(err)
	}
	// A file unlinked before a crash took the removal of its identity
	// with it, and a file replaced under its name while the daemon was
	// down.
	goneID := spool.FileID{Dev: keptID.Dev, Ino: keptID.Ino + 1000, Size: 3, Ctime: 1, Name: "o/gone"}
	replacedID := keptID
	replacedID.Ctime--
	for _, id := range []spool.FileID{keptID, goneID, replacedID} {
		store.seen[id] = true
	}

	start(t, opts, store)

	// The start removes the two orphan identities first. The kept file
	// is then unlinked without being appended again, and its identity
	// removed last.
	waitFor(t, 5*time.Second, "three identities forgotten", func() bool { return len(store.forgottenIDs()) == 3 })
	forgotten := store.forgottenIDs()
	if !slices.Contains(forgotten[:2], goneID) || !slices.Contains(forgotten[:2], replacedID) {
		t.Errorf("forgotten %v, want the identities of o/gone and the replaced o/kept first", forgotten)
	}
	if forgotten[2] != keptID {
		t.Errorf("last forgotten %v, want the kept file's %v", forgotten[2], keptID)
	}
	if n := store.count(); n != 0 {
		t.Errorf("kept file appended again: %d appends", n)
	}
}

func TestPickup_FullSpoolKeepsOrder(t *testing.T) {
	opts := testOptions(t)
	store := newFakeStore()
	store.setRoom(3)
	p := start(t, opts, store)

	var want []string
	for i := range 10 {
		rel := fmt.Sprintf("q/f%02d", i)
		want = append(want, rel)
		drop(t, opts.Dir, rel, "x")
	}
	waitFor(t, 5*time.Second, "spool full", func() bool { return p.Stats().Waiting == 7 })
	if !p.Stats().SpoolFull {
		t.Error("Stats().SpoolFull is false while the spool limits hold files back")
	}
	for _, rel := range want[3:] {
		if !exists(filepath.Join(opts.Dir, "new", filepath.FromSlash(rel))) {
			t.Errorf("%s left new/ while the spool was full", rel)
		}
	}

	// A newer file must wait behind the older ones.
	drop(t, opts.Dir, "q/later", "x")
	want = append(want, "q/later")
	time.Sleep(100 * time.Millisecond)
	if n := store.count(); n != 3 {
		t.Errorf("%d files appended while full, want 3", n)
	}

	store.setRoom(-1)
	waitFor(t, 10*time.Second, "all files appended", func() bool { return store.count() == 11 })
	if got := store.names(); !slices.Equal(got, want) {
		t.Errorf("order = %v, want %v", got, want)
	}
	waitFor(t, time.Second, "nothing waiting", func() bool { return p.Stats().Waiting == 0 })
	if p.Stats().SpoolFull {
		t.Error("Stats().SpoolFull is still true after every file was appended")
	}
}

func TestPickup_ManyFilesBatched(t *testing.T) {
	count := 10000
	if testing.Short() {
		count = 2000
	}
	opts := testOptions(t)
	opts.BatchMax = 128
	store := newFakeStore()
	if _, err := New(opts, store); err != nil {
		t.Fatal(err)
	}
	for i := range count {
		dropFast(t, opts.Dir, fmt.Sprintf("bulk/%d/f%05d", i%10, i), "payload")
	}

	p := start(t, opts, store)
	waitFor(t, 60*time.Second, "all files appended", func() bool { return store.count() == count })
	if store.maxBatch > opts.BatchMax {
		t.Errorf("largest Append had %d files, want at most %d", store.maxBatch, opts.BatchMax)
	}
	if s := p.Stats(); s.FilesIngested != uint64(count) {
		t.Errorf("FilesIngested = %d, want %d", s.FilesIngested, count)
	}
}

func TestPickup_DiskPressurePausesIngest(t *testing.T) {
	opts := testOptions(t)
	opts.MinFreeBytes = 1000
	opts.FreeSpacePath = opts.Dir
	store := newFakeStore()
	var free atomic.Uint64
	free.Store(10)
	p := start(t, opts, store, func(p *Pickup) {
		p.freeBytes = func(string) (uint64, error) { return free.Load(), nil }
	})

	drop(t, opts.Dir, "d/f", "x")
	waitFor(t, 5*time.Second, "disk pressure", func() bool { return p.Stats().DiskPressure })
	time.Sleep(50 * time.Millisecond)
	if n := store.count(); n != 0 {
		t.Errorf("%d files appended under disk pressure, want 0", n)
	}
	if w := p.Stats().Waiting; w != 1 {
		t.Errorf("Waiting = %d, want 1", w)
	}

	free.Store(5000)
	waitFor(t, 5*time.Second, "file appended after space returned", func() bool {
		return store.count() == 1
	})
	if p.Stats().DiskPressure {
		t.Error("DiskPressure still set after space returned")
	}
}

// Low free space shows in the stats at a rescan even while no file
// waits, and clears the same way.
func TestPickup_DiskPressureShownWhenIdle(t *testing.T) {
	opts := testOptions(t)
	opts.MinFreeBytes = 1000
	opts.FreeSpacePath = opts.Dir
	opts.RescanInterval = 100 * time.Millisecond
	var free atomic.Uint64
	free.Store(10)
	p := start(t, opts, newFakeStore(), func(p *Pickup) {
		p.freeBytes = func(string) (uint64, error) { return free.Load(), nil }
	})

	waitFor(t, 5*time.Second, "disk pressure with nothing waiting", func() bool { return p.Stats().DiskPressure })
	free.Store(5000)
	waitFor(t, 5*time.Second, "disk pressure cleared with nothing waiting", func() bool { return !p.Stats().DiskPressure })
}

// A full spool that gets room back through acknowledgements is tried
// again at once, not at the end of a backoff that has grown meanwhile.
func TestPickup_RoomFreedRetriesSoon(t *testing.T) {
	p, store, _ := startFull(t)
	// The retries back off 0.1, 0.2, 0.4, 0.8, 1.6 and 3.2 s, so after
	// 3.3 s the next one is about 3 s away.
	time.Sleep(3300 * time.Millisecond)

	// Without the wakeup the next try is about 3 s away, so 2 s leaves
	// room for a loaded machine and still tells the two apart.
	store.setRoom(2)
	p.RoomFreed()
	waitFor(t, 2*time.Second, "full/b appended soon after room was freed", func() bool { return store.count() == 2 })
	waitFor(t, 5*time.Second, "spool no longer full", func() bool { return !p.Stats().SpoolFull })
}

// The drain acknowledges thousands of messages a second, and each calls
// RoomFreed. One wakeup per failed try is enough, so the pickup does not
// wake for every acknowledgement while the spool stays full.
func TestPickup_RoomFreedWakesOncePerTry(t *testing.T) {
	p, err := New(testOptions(t), newFakeStore())
	if err != nil {
		t.Fatal(err)
	}
	p.waitFull()

	p.RoomFreed()
	if len(p.room) != 1 {
		t.Fatal("no wakeup after room was freed in a full spool")
	}
	<-p.room
	p.RoomFreed()
	if len(p.room) != 0 {
		t.Error("a second wakeup before the pickup tried again")
	}

	p.waitFull() // the next try did not fit either
	p.RoomFreed()
	if len(p.room) != 1 {
		t.Error("no wakeup after a failed try")
	}
}

func TestPickup_DotNamesIgnored(t *testing.T) {
	opts := testOptions(t)
	store := newFakeStore()
	start(t, opts, store)

	writeDirect(t, opts.Dir, ".hidden", "x")
	writeDirect(t, opts.Dir, ".dir/f", "x")
	drop(t, opts.Dir, "v/f", "x")
	waitFor(t, 5*time.Second, "visible file appended", func() bool { return store.count() == 1 })
	time.Sleep(opts.Settle * 2)
	if names := store.names(); !slices.Equal(names, []string{"v/f"}) {
		t.Errorf("appended %v, want only v/f", names)
	}
}

func TestPickup_ExistingFilesOrderedByCtime(t *testing.T) {
	opts := testOptions(t)
	store := newFakeStore()
	if err := os.MkdirAll(filepath.Join(opts.Dir, "tmp"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(opts.Dir, "new"), 0o755); err != nil {
		t.Fatal(err)
	}
	want := []string{"o/z", "o/a", "o/m"}
	for _, rel := range want {
		drop(t, opts.Dir, rel, "x")
		time.Sleep(20 * time.Millisecond)
	}
	start(t, opts, store)
	waitFor(t, 5*time.Second, "three files appended", func() bool { return store.count() == 3 })
	if got := store.names(); !slices.Equal(got, want) {
		t.Errorf("order = %v, want %v (by change time)", got, want)
	}
}

func TestPickup_SlowWriteInNewDirectory(t *testing.T) {
	opts := testOptions(t)
	opts.Settle = 400 * time.Millisecond
	opts.RescanInterval = 30 * time.Millisecond
	store := newFakeStore()
	start(t, opts, store)

	// The file exists before the directory's watch does, so only a scan
	// finds it, while it is still being written.
	dir := filepath.Join(opts.Dir, "new", "fresh")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(dir, "file"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 16 {
		if _, err := f.WriteString("chunk "); err != nil {
			t.Fatal(err)
		}
		if i == 2 {
			// Without fsync, so the writer does not pause for a settle time.
			dropFast(t, opts.Dir, "other/f", "x")
		}
		time.Sleep(opts.Settle / 8)
		for _, name := range store.names() {
			if name == "fresh/file" {
				t.Fatal("file appended while still being written")
			}
		}
	}

	// The file being written holds back the queue for one settle time
	// at most.
	if names := store.names(); !slices.Contains(names, "other/f") {
		t.Errorf("other file not appended while the slow file was written: %v", names)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "file appended after close", func() bool { return store.count() == 2 })
	if got := len(store.files[1].Messages[0].Payload); got != 16*len("chunk ") {
		t.Errorf("payload has %d bytes, want %d", got, 16*len("chunk "))
	}
}

func TestPickup_EmptyRawFileIsEmptyPayload(t *testing.T) {
	opts := testOptions(t)
	store := newFakeStore()
	start(t, opts, store)

	drop(t, opts.Dir, "empty/f", "")
	drop(t, opts.Dir, "empty/crlf.msg", "Topic: t\r\nRetain: true\r\n\r\n")
	waitFor(t, 5*time.Second, "two files appended", func() bool { return store.count() == 2 })
	if got := store.files[0].Messages[0]; got.Topic != "empty" || len(got.Payload) != 0 {
		t.Errorf("empty raw file = topic %q payload %q, want topic empty and no payload",
			got.Topic, got.Payload)
	}
	if got := store.files[1].Messages[0]; got.Topic != "t" || !got.Retain || len(got.Payload) != 0 {
		t.Errorf("CRLF .msg = %+v", got)
	}
}

// slowStore delays every Append, so that files pile up in new/ and the
// rescans list a large directory while renames go on.
type slowStore struct {
	*fakeStore
	delay time.Duration
}

func (s slowStore) AppendForget(files []spool.FileBatch, forget []spool.FileID) (int, error) {
	time.Sleep(s.delay)
	return s.fakeStore.AppendForget(files, forget)
}

// A listing of a large directory returns entries in hash order, so while
// renames go on it can hold a file renamed late and miss an earlier one.
// Rescans must not queue the later file ahead of the earlier one.
func TestPickup_OrderKeptWhileRescansRaceRenames(t *testing.T) {
	opts := testOptions(t)
	opts.RescanInterval = 20 * time.Millisecond
	opts.BatchMax = 16
	store := newFakeStore()
	start(t, opts, slowStore{fakeStore: store, delay: 10 * time.Millisecond})

	const total = 10000
	for i := range total {
		dropFast(t, opts.Dir, fmt.Sprintf("m-%05d.msg", i), "Topic: t\n\nx")
	}
	waitFor(t, 60*time.Second, "all files appended", func() bool { return store.count() == total })

	names := store.names()
	late := 0
	for i := 1; i < len(names); i++ {
		if names[i] < names[i-1] {
			late++
			if late <= 5 {
				t.Errorf("appended %s after %s", names[i], names[i-1])
			}
		}
	}
	if late > 0 {
		t.Errorf("%d of %d files appended out of arrival order", late, total)
	}
}

// Files renamed into different directories within one clock tick share a
// change time, and a listing orders them by name. A rescan that runs
// while their events wait must leave them to those events, which keep
// arrival order. Here name order is the reverse of arrival order in each
// pair.
func TestPickup_OrderKeptAcrossDirectories(t *testing.T) {
	opts := testOptions(t)
	opts.RescanInterval = 20 * time.Millisecond
	opts.BatchMax = 2
	for _, dir := range []string{"a", "b"} {
		if err := os.MkdirAll(filepath.Join(opts.Dir, "new", dir), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	store := newFakeStore()
	start(t, opts, slowStore{fakeStore: store, delay: 30 * time.Millisecond})
	// Files that arrive before the watches exist have no events, so only
	// the listing can order them. The test starts once a file was taken.
	dropFast(t, opts.Dir, "a/first", "x")
	waitFor(t, 5*time.Second, "the first file appended", func() bool { return store.count() == 1 })

	const total = 200
	want := []string{"a/first"}
	for i := range total {
		rel := fmt.Sprintf("b/%03d", i)
		if i%2 == 1 {
			rel = fmt.Sprintf("a/%03d", i)
		}
		dropFast(t, opts.Dir, rel, "x")
		want = append(want, rel)
	}
	waitFor(t, 60*time.Second, "all files appended", func() bool { return store.count() == len(want) })

	got := store.names()
	late := 0
	for i := range got {
		if got[i] != want[i] {
			late++
			if late <= 5 {
				t.Errorf("file %d appended is %s, want %s", i, got[i], want[i])
			}
		}
	}
	if late > 0 {
		t.Errorf("%d of %d files appended out of arrival order", late, total)
	}
}

func TestLeaveToEvents(t *testing.T) {
	p := &Pickup{opts: Options{Dir: t.TempDir()}, log: slog.New(slog.DiscardHandler), now: time.Now}
	cutoff, ok := p.scanCutoff()
	if !ok {
		t.Fatal("no cutoff")
	}
	found := []candidate{
		{rel: "old", ctime: cutoff - 1, watched: true},
		{rel: "during", ctime: cutoff, watched: true},
		{rel: "unwatched", ctime: cutoff, watched: false},
		{rel: "clock-set-back", ctime: cutoff + int64(time.Hour), watched: true},
	}
	var remaining []string
	for _, c := range p.leaveToEvents(found, cutoff) {
		remaining = append(remaining, c.rel)
	}
	if want := []string{"old", "unwatched", "clock-set-back"}; !slices.Equal(remaining, want) {
		t.Errorf("kept %v, want %v", remaining, want)
	}
}

// Identities of unlinked files ride on the next batch's commit, so a
// backlog costs one commit per batch, and the last ones are removed alone
// once no batch follows.
func TestPickup_ForgetRidesOnNextBatch(t *testing.T) {
	opts := testOptions(t)
	opts.BatchMax = 100
	for _, dir := range []string{"tmp", "new"} {
		if err := os.MkdirAll(filepath.Join(opts.Dir, dir), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// Files a minute old have settled, so no batch stops early to wait
	// for one.
	old := time.Now().Add(-time.Minute)
	for i := range 600 {
		rel := fmt.Sprintf("f%04d.msg", i)
		dropFast(t, opts.Dir, rel, "Topic: t\n\nx")
		if err := os.Chtimes(filepath.Join(opts.Dir, "new", rel), old, old); err != nil {
			t.Fatal(err)
		}
	}
	store := newFakeStore()
	start(t, opts, store)

	waitFor(t, 10*time.Second, "every identity forgotten", func() bool { return store.forgottenCount() == 600 })
	store.mu.Lock()
	appends, forgets := store.appendCalls, store.forgetCalls
	store.mu.Unlock()
	if appends != 6 {
		t.Errorf("%d append calls for 600 files in batches of 100, want 6", appends)
	}
	if forgets != 1 {
		t.Errorf("%d commits of their own for identities, want 1 after the last batch", forgets)
	}
}

func TestPickup_FullSpoolWarningLimited(t *testing.T) {
	opts := testOptions(t)
	logs := capture(&opts)
	store := newFakeStore()
	store.setRoom(0)
	p := start(t, opts, store)

	// Each round fills the spool with one file and then makes room for
	// it, as a producer a little faster than the broker does.
	for i := range 4 {
		drop(t, opts.Dir, fmt.Sprintf("q/f%d", i), "x")
		waitFor(t, 5*time.Second, "spool full", func() bool { return p.Stats().SpoolFull })
		store.setRoom(1)
		p.RoomFreed()
		waitFor(t, 5*time.Second, "room again", func() bool { return !p.Stats().SpoolFull })
		waitFor(t, 5*time.Second, "file appended", func() bool { return store.count() == i+1 })
		store.setRoom(0)
	}

	text := logs.String()
	if n := strings.Count(text, "spool is full"); n != 1 {
		t.Errorf("%d full warnings for 4 full spells within a minute, want 1:\n%s", n, text)
	}
	if n := strings.Count(text, "spool has room again"); n != 1 {
		t.Errorf("%d room messages, want 1 for the spell that was warned of:\n%s", n, text)
	}
	if !strings.Contains(text, "times_full=1") {
		t.Errorf("full warning lacks times_full=1:\n%s", text)
	}
}
