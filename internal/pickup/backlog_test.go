package pickup

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/mqspool/mqspool/internal/spool"
	"github.com/mqspool/mqspool/test/harness"
	"golang.org/x/sys/unix"
	"pgregory.net/rapid"
)

// queueWatch wraps a Store and records the longest queue the pickup held
// at an append. AppendForget runs on the pickup's goroutine, so it may
// read the queue.
type queueWatch struct {
	Store
	p *Pickup

	mu      sync.Mutex
	longest int
}

func (q *queueWatch) AppendForget(files []spool.FileBatch, forget []spool.FileID) (int, error) {
	q.mu.Lock()
	q.longest = max(q.longest, len(q.p.queue))
	q.mu.Unlock()
	return q.Store.AppendForget(files, forget)
}

func (q *queueWatch) longestQueue() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.longest
}

// A backlog in new/ beyond QueueMax waits on disk rather than in memory,
// and still goes in by arrival order: the files found at start oldest
// first, then those renamed in while the spool was full.
func TestPickup_BacklogBeyondQueueMax(t *testing.T) {
	opts := testOptions(t)
	opts.BatchMax = 4
	opts.QueueMax = 8
	for _, dir := range []string{"tmp", "new"} {
		if err := os.MkdirAll(filepath.Join(opts.Dir, dir), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var want []string
	for i := range 30 {
		rel := fmt.Sprintf("old/f%03d.msg", i)
		dropFast(t, opts.Dir, rel, "Topic: t\n\nx")
		want = append(want, rel)
	}
	fake := newFakeStore()
	fake.setRoom(0)
	watch := &queueWatch{Store: fake}
	p := start(t, opts, watch, func(p *Pickup) { watch.p = p })
	waitFor(t, 5*time.Second, "spool full", func() bool { return p.Stats().SpoolFull })

	for i := range 10 {
		rel := fmt.Sprintf("late/f%03d.msg", i)
		dropFast(t, opts.Dir, rel, "Topic: t\n\nx")
		want = append(want, rel)
	}
	waitFor(t, 5*time.Second, "40 files waiting", func() bool { return p.Stats().Waiting == 40 })

	fake.setRoom(-1)
	p.RoomFreed()
	waitFor(t, 10*time.Second, "every file appended", func() bool { return fake.count() == len(want) })
	if got := fake.names(); !slices.Equal(got, want) {
		t.Errorf("appended in the order\n%v\nwant\n%v", got, want)
	}
	if n := watch.longestQueue(); n > opts.QueueMax {
		t.Errorf("queue held %d files, more than QueueMax %d", n, opts.QueueMax)
	}
}

// oldest keeps exactly the limit oldest candidates, sorted, and counts the
// others, whatever the order they are offered in.
func TestOldest_KeepsTheOldest(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		limit := rapid.IntRange(0, 20).Draw(t, "limit")
		n := rapid.IntRange(0, 60).Draw(t, "n")
		var all []candidate
		for i := range n {
			all = append(all, candidate{
				rel:   fmt.Sprintf("f%02d", i),
				ctime: int64(rapid.IntRange(0, 5).Draw(t, "ctime")),
			})
		}
		offered := rapid.Permutation(all).Draw(t, "offered")
		sel := &oldest{limit: limit}
		for _, c := range offered {
			sel.offer(c)
		}
		got := sel.sorted()

		slices.SortFunc(all, func(a, b candidate) int {
			if a.before(b) {
				return -1
			}
			return 1
		})
		want := all[:min(limit, n)]
		if !slices.EqualFunc(got, want, func(a, b candidate) bool { return a.rel == b.rel }) {
			t.Fatalf("kept %v, want %v", got, want)
		}
		if sel.left != n-len(want) {
			t.Fatalf("counted %d left out, want %d", sel.left, n-len(want))
		}
	})
}

// While files wait in new/ beyond the queue, a file announced by an event
// waits too, although the queue has room: it arrived after them.
func TestPickup_ArrivalWaitsBehindBacklog(t *testing.T) {
	p, err := New(testOptions(t), newFakeStore())
	if err != nil {
		t.Fatal(err)
	}
	ws := &watches{byWD: map[int32]string{1: ""}, byDir: map[string]int32{"": 1}}
	arrive := func(name string) {
		p.handleEvent(nil, ws, watchEvent{wd: 1, mask: unix.IN_MOVED_TO, name: name})
	}

	arrive("first")
	p.noteScan("", nil, 3)
	arrive("second")
	p.noteScan("", nil, 0)
	arrive("third")

	if want := []string{"first", "third"}; !slices.Equal(p.queue, want) {
		t.Errorf("queued %v, want %v", p.queue, want)
	}
}

// A directory of more files than QueueMax renamed into new/ is scanned
// with the same bound: its oldest files are queued, the others go in by
// rescans, in order.
func TestPickup_DirectoryBeyondQueueMax(t *testing.T) {
	opts := testOptions(t)
	opts.BatchMax = 4
	opts.QueueMax = 8
	fake := newFakeStore()
	watch := &queueWatch{Store: fake}
	start(t, opts, watch, func(p *Pickup) { watch.p = p })
	waitFor(t, 5*time.Second, "new/ created", func() bool { return exists(filepath.Join(opts.Dir, "new")) })

	staged := filepath.Join(opts.Dir, "tmp", "batch")
	if err := os.MkdirAll(staged, 0o755); err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := range 30 {
		name := fmt.Sprintf("f%03d.msg", i)
		if err := os.WriteFile(filepath.Join(staged, name), []byte("Topic: t\n\nx"), 0o644); err != nil {
			t.Fatal(err)
		}
		want = append(want, "batch/"+name)
	}
	if err := os.Rename(staged, filepath.Join(opts.Dir, "new", "batch")); err != nil {
		t.Fatal(err)
	}

	waitFor(t, 10*time.Second, "every file appended", func() bool { return fake.count() == len(want) })
	if got := fake.names(); !slices.Equal(got, want) {
		t.Errorf("appended in the order\n%v\nwant\n%v", got, want)
	}
	if n := watch.longestQueue(); n > opts.QueueMax {
		t.Errorf("queue held %d files, more than QueueMax %d", n, opts.QueueMax)
	}
}

// A file renamed in after a rescan's cutoff and announced during its sync
// waits behind the backlog, and the listing leaves it to its event, which
// has already been handled. When the rescan takes the rest of the backlog,
// the file must still be queued or a refill must come for it.
func TestPickup_ArrivalDuringSyncNotStranded(t *testing.T) {
	opts := testOptions(t)
	p, err := New(opts, newFakeStore())
	if err != nil {
		t.Fatal(err)
	}
	ws := &watches{byWD: map[int32]string{1: ""}, byDir: map[string]int32{"": 1}}
	dropFast(t, opts.Dir, "old", "Topic: t\n\nx")
	p.noteScan("", nil, 1)

	sync := func() {
		dropFast(t, opts.Dir, "late", "Topic: t\n\nx")
		p.handleEvent(nil, ws, watchEvent{wd: 1, mask: unix.IN_MOVED_TO, name: "late"})
	}
	p.scanTree(nil, ws, "", sync)

	if slices.Contains(p.queue, "late") {
		return
	}
	if !p.refillNeeded() {
		t.Errorf("queue is %v and no refill is due, so late waits for the next periodic rescan", p.queue)
	}
}

// Bad files that cannot be moved to failed/ stay in new/ and are the
// oldest there. The files behind them must still go in, instead of
// waiting until failed/ works again.
func TestPickup_HeldRejectsDoNotBlockBacklog(t *testing.T) {
	opts := backlogOptions(t)
	if err := os.MkdirAll(filepath.Join(opts.Dir, "new", "bad"), 0o755); err != nil {
		t.Fatal(err)
	}
	// A file in place of failed/ makes every move there fail.
	if err := os.WriteFile(filepath.Join(opts.Dir, "failed"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for i := range stuckCount(opts) {
		symlink(t, filepath.Join(opts.Dir, "new", "bad", fmt.Sprintf("l%03d", i)))
	}
	want := dropOpen(t, opts)
	fake := newFakeStore()
	start(t, opts, fake)

	checkAppended(t, fake, want)
}

// Unreadable files are retried at each rescan and left in new/. When they
// are the oldest files there, the refills must not take them each time,
// or the files behind them would never go in.
func TestPickup_UnreadableDoNotBlockBacklog(t *testing.T) {
	if !harness.RunUnprivileged(t) {
		return
	}
	opts := backlogOptions(t)
	for i := range stuckCount(opts) {
		rel := fmt.Sprintf("closed/f%03d", i)
		dropFast(t, opts.Dir, rel, "x")
		if err := os.Chmod(filepath.Join(opts.Dir, "new", rel), 0); err != nil {
			t.Fatal(err)
		}
	}
	want := dropOpen(t, opts)
	fake := newFakeStore()
	start(t, opts, fake)

	checkAppended(t, fake, want)
}

// Events that come faster than the loop's timer, here of a hidden file
// that is never taken, must not put off the refills of the queue.
func TestPickup_RefillUnderSteadyEvents(t *testing.T) {
	opts := testOptions(t)
	opts.BatchMax = 4
	opts.QueueMax = 8
	opts.RescanInterval = time.Hour // only a refill may queue the backlog
	if err := os.MkdirAll(filepath.Join(opts.Dir, "tmp"), 0o755); err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := range 60 {
		rel := fmt.Sprintf("f%03d.msg", i)
		dropFast(t, opts.Dir, rel, "Topic: t\n\nx")
		want = append(want, rel)
	}
	fake := newFakeStore()
	fake.setRoom(0)
	p := start(t, opts, fake)
	waitFor(t, 5*time.Second, "spool full", func() bool { return p.Stats().SpoolFull })

	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		busy := filepath.Join(opts.Dir, "new", ".busy")
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			_ = os.WriteFile(busy, []byte(strconv.Itoa(i)), 0o644)
		}
	}()
	defer func() { close(stop); <-done }()

	fake.setRoom(-1)
	p.RoomFreed()
	// Refills on every pass of the loop take them in well under a second.
	waitFor(t, 2*time.Second, "every file appended", func() bool { return fake.count() == len(want) })
	if got := fake.names(); !slices.Equal(got, want) {
		t.Errorf("appended in the order\n%v\nwant\n%v", got, want)
	}
}

// Files that are stored but cannot be removed, as in a directory the
// daemon may not write, stay in new/ and are the oldest there. The
// refills must not take them each time, or the files behind them would
// never go in.
func TestPickup_UnremovableDoNotBlockBacklog(t *testing.T) {
	if !harness.RunUnprivileged(t) {
		return
	}
	opts := backlogOptions(t)
	var want []string
	for i := range stuckCount(opts) {
		rel := fmt.Sprintf("locked/f%03d", i)
		dropFast(t, opts.Dir, rel, "x")
		want = append(want, rel)
	}
	locked := filepath.Join(opts.Dir, "new", "locked")
	if err := os.Chmod(locked, 0o555); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(locked, 0o755) })
	want = append(want, dropOpen(t, opts)...)
	fake := newFakeStore()
	start(t, opts, fake)

	checkAppended(t, fake, want)
}

// A file written in place takes its place in the order once it is
// complete. When it completes while older files of a directory moved in
// wait in new/ beyond the queue, it waits behind them, whether its close
// announces it or it settles.
func TestPickup_CompletedInPlaceWaitsBehindBacklog(t *testing.T) {
	for _, completion := range []string{"close", "settle"} {
		t.Run(completion, func(t *testing.T) {
			opts := testOptions(t)
			opts.BatchMax = 1
			opts.QueueMax = 2
			p, err := New(opts, newFakeStore())
			if err != nil {
				t.Fatal(err)
			}
			clock := time.Now()
			p.now = func() time.Time { return clock }
			ws := &watches{byWD: map[int32]string{1: ""}, byDir: map[string]int32{"": 1}}

			staged := filepath.Join(opts.Dir, "tmp", "dir")
			if err := os.MkdirAll(staged, 0o755); err != nil {
				t.Fatal(err)
			}
			for _, name := range []string{"f0", "f1", "f2"} {
				if err := os.WriteFile(filepath.Join(staged, name), []byte("Topic: t\n\nx"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			time.Sleep(20 * time.Millisecond) // a later change time than the directory's files
			if completion == "close" {
				writeDirect(t, opts.Dir, "inplace", "Topic: t\n\nx")
			} else {
				// A hard link gets no close event, so it settles.
				linkDirect(t, opts.Dir, "inplace", "Topic: t\n\nx")
			}
			p.handleEvent(nil, ws, watchEvent{wd: 1, mask: unix.IN_CREATE, name: "inplace"})
			_, settling := p.settling["inplace"]
			_, writing := p.writing["inplace"]
			if completion == "close" && !writing {
				t.Fatal("file created in place is not tracked as being written")
			}
			if completion == "settle" && !settling {
				t.Fatal("hard link is not tracked until it settles")
			}
			if err := os.Rename(staged, filepath.Join(opts.Dir, "new", "dir")); err != nil {
				t.Fatal(err)
			}
			p.handleEvent(nil, ws, watchEvent{wd: 1, mask: unix.IN_MOVED_TO | unix.IN_ISDIR, name: "dir"})
			if want := []string{"dir/f0"}; !slices.Equal(p.queue, want) {
				t.Fatalf("queue is %v after the directory moved in, want %v", p.queue, want)
			}

			if completion == "close" {
				p.handleEvent(nil, ws, watchEvent{wd: 1, mask: unix.IN_CLOSE_WRITE, name: "inplace"})
			} else {
				clock = clock.Add(2 * opts.Settle)
				p.checkSettling()
			}
			if want := []string{"dir/f0"}; !slices.Equal(p.queue, want) {
				t.Errorf("queue is %v after the file in place completed, want %v: it went ahead of "+
					"older files that waited in new/", p.queue, want)
			}
		})
	}
}

// Files in a directory the daemon may list but not search cannot be
// looked at, so they can never be queued. The refills must not keep
// choosing them, or the files behind them would never go in.
func TestPickup_UnsearchableDirDoesNotBlockBacklog(t *testing.T) {
	if !harness.RunUnprivileged(t) {
		return
	}
	opts := backlogOptions(t)
	want := dropOpen(t, opts)
	for i := range stuckCount(opts) {
		dropFast(t, opts.Dir, fmt.Sprintf("closed/f%03d", i), "x")
	}
	closed := filepath.Join(opts.Dir, "new", "closed")
	if err := os.Chmod(closed, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(closed, 0o755) })
	fake := newFakeStore()
	start(t, opts, fake)

	checkAppended(t, fake, want)
}

// backlogOptions returns options with a queue of 8 files, batches of 4, a
// default topic for raw files, and tmp/ created.
func backlogOptions(t *testing.T) Options {
	t.Helper()
	opts := testOptions(t)
	opts.BatchMax = 4
	opts.QueueMax = 8
	opts.DefaultTopic = "t"
	if err := os.MkdirAll(filepath.Join(opts.Dir, "tmp"), 0o755); err != nil {
		t.Fatal(err)
	}
	return opts
}

// stuckCount is more files than one listing takes into the queue and the
// reserve, so that stuck files fill every refill unless it skips them.
func stuckCount(opts Options) int { return (2 + reserveFactor) * opts.QueueMax }

// dropOpen drops 10 raw files into new/open/ and returns their names.
func dropOpen(t *testing.T, opts Options) []string {
	t.Helper()
	var names []string
	for i := range 10 {
		rel := fmt.Sprintf("open/f%03d", i)
		dropFast(t, opts.Dir, rel, "x")
		names = append(names, rel)
	}
	return names
}

// checkAppended waits until fake holds as many files as want and checks
// that they are want, in order.
func checkAppended(t *testing.T, fake *fakeStore, want []string) {
	t.Helper()
	waitFor(t, 5*time.Second, "every expected file appended", func() bool { return fake.count() == len(want) })
	if got := fake.names(); !slices.Equal(got, want) {
		t.Errorf("appended in the order\n%v\nwant\n%v", got, want)
	}
}

// A file removed while its writer still has it open gets no close event.
// It must stop taking a place in the queue once the pickup finds it gone,
// or enough such files leave no room, and files that wait beyond the
// queue are never queued.
func TestPickup_RemovedOpenFileFreesRoom(t *testing.T) {
	opts := testOptions(t)
	opts.BatchMax = 1
	opts.QueueMax = 4
	p, err := New(opts, newFakeStore())
	if err != nil {
		t.Fatal(err)
	}
	clock := time.Now()
	p.now = func() time.Time { return clock }
	ws := &watches{byWD: map[int32]string{1: ""}, byDir: map[string]int32{"": 1}}

	for i := range opts.QueueMax {
		name := fmt.Sprintf("removed%d", i)
		f, err := os.Create(filepath.Join(opts.Dir, "new", name))
		if err != nil {
			t.Fatal(err)
		}
		p.handleEvent(nil, ws, watchEvent{wd: 1, mask: unix.IN_CREATE, name: name})
		if err := os.Remove(f.Name()); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	clock = clock.Add(2 * opts.RescanInterval)
	p.checkSettling()
	if n := p.inPlace(); n != 0 {
		t.Errorf("%d removed files still counted as written in place", n)
	}

	staged := filepath.Join(opts.Dir, "tmp", "dir")
	if err := os.MkdirAll(staged, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(staged, "f0"), []byte("Topic: t\n\nx"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(staged, filepath.Join(opts.Dir, "new", "dir")); err != nil {
		t.Fatal(err)
	}
	p.handleEvent(nil, ws, watchEvent{wd: 1, mask: unix.IN_MOVED_TO | unix.IN_ISDIR, name: "dir"})
	if want := []string{"dir/f0"}; !slices.Equal(p.queue, want) {
		t.Errorf("queue is %v after a directory moved in, want %v", p.queue, want)
	}
}

// A file being written that a rescan finds takes one place in the queue,
// not two.
func TestPickup_OpenFileFoundCountedOnce(t *testing.T) {
	opts := testOptions(t)
	p, err := New(opts, newFakeStore())
	if err != nil {
		t.Fatal(err)
	}
	ws := &watches{byWD: map[int32]string{1: ""}, byDir: map[string]int32{"": 1}}
	f, err := os.Create(filepath.Join(opts.Dir, "new", "open"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p.handleEvent(nil, ws, watchEvent{wd: 1, mask: unix.IN_CREATE, name: "open"})
	info, err := os.Lstat(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	p.considerFound("open", info)
	if n := p.inPlace(); n != 1 {
		t.Errorf("one open file counted %d times", n)
	}
}
