package spool

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/mqspool/mqspool/internal/state"
)

// drainedSpool fills a database with 4000 messages of 1 KiB, delivers
// all but the last keep of them, leaves one flow open and closes it. It
// returns the records still queued.
func drainedSpool(t *testing.T, opts Options, keep int) []Record {
	t.Helper()
	const n = 4000
	fillAndClose(t, opts, n, 1024)
	s := openSpool(t, opts)
	var changes []state.Change
	for seq := uint64(1); seq <= n-uint64(keep); seq++ {
		changes = append(changes, state.Change{Kind: state.ChangeDelivered, Seq: seq})
	}
	last := uint64(n)
	changes = append(changes, state.Change{Kind: state.ChangeSent, PacketID: 7, Seq: last, QoS: 2, Order: 1})
	mustCommit(t, s, changes...)
	if _, err := s.ClientID(func() (string, error) { return "gateway-7", nil }); err != nil {
		t.Fatal(err)
	}
	left := drain(t, s.NewCursor())
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return left
}

func TestCompact_ShrinksAndKeepsEverything(t *testing.T) {
	opts := testOptions(t)
	want := drainedSpool(t, opts, 10)

	res, err := Compact(opts.Path, time.Second)
	if err != nil {
		t.Fatalf("Compact: %v", err)
	}
	if res.After*4 > res.Before {
		t.Errorf("file went from %d to %d bytes, want at most a quarter", res.Before, res.After)
	}
	if res.Messages != 10 {
		t.Errorf("result has %d messages, want 10", res.Messages)
	}
	if _, err := os.Stat(opts.Path + ".compact"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the copy is still there: %v", err)
	}

	s := openSpool(t, opts)
	got := drain(t, s.NewCursor())
	equal(t, "seqs", seqsOf(got), seqsOf(want))
	equal(t, "payloads", payloadsOf(got), payloadsOf(want))
	st := mustLoadState(t, s)
	equal(t, "flows", st.Outgoing, []state.Flow{{PacketID: 7, Seq: 4000, QoS: 2, Stage: state.StagePublish, Order: 1}})
	id, err := s.ClientID(func() (string, error) { return "changed", nil })
	if err != nil || id != "gateway-7" {
		t.Errorf("client id = %q, %v; want gateway-7", id, err)
	}
	equal(t, "stats messages", s.Stats().Messages, int64(10))

	// New messages continue the sequence.
	mustAppend(t, s, batch("after", 9000, 1))
	recs := drain(t, s.NewCursor())
	if last := recs[len(recs)-1].Seq; last != 4001 {
		t.Errorf("next message got seq %d, want 4001", last)
	}
}

// A file with little free space can come out of the copy larger, because
// bbolt grows a new file in steps. Compact then keeps the original.
func TestCompact_NeverGrowsTheFile(t *testing.T) {
	opts := testOptions(t)
	fillAndClose(t, opts, 5000, 1024) // a full file that a copy made 23 % larger
	before, err := os.Stat(opts.Path)
	if err != nil {
		t.Fatal(err)
	}

	res, err := Compact(opts.Path, time.Second)
	if err != nil {
		t.Fatalf("Compact: %v", err)
	}
	after, err := os.Stat(opts.Path)
	if err != nil {
		t.Fatal(err)
	}
	if !res.KeptOriginal {
		t.Error("result does not report the original as kept")
	}
	if after.Size() > before.Size() || res.After > res.Before {
		t.Errorf("file went from %d to %d bytes (result %d to %d), want no growth", before.Size(), after.Size(), res.Before, res.After)
	}
	s := openSpool(t, opts)
	equal(t, "messages", s.Stats().Messages, int64(5000))
}

func TestCompact_KeepsModeAndOwner(t *testing.T) {
	opts := testOptions(t)
	drainedSpool(t, opts, 1)
	if err := os.Chmod(opts.Path, 0o640); err != nil {
		t.Fatal(err)
	}
	uid, gid := os.Getuid(), os.Getgid()
	if uid == 0 {
		// Only root can give the file away. The copy must then belong
		// to the daemon's user, not to root.
		uid, gid = 4321, 4322
		if err := os.Chown(opts.Path, uid, gid); err != nil {
			t.Fatal(err)
		}
	}

	if _, err := Compact(opts.Path, time.Second); err != nil {
		t.Fatalf("Compact: %v", err)
	}
	info, err := os.Stat(opts.Path)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o640 {
		t.Errorf("mode %v, want 0640", info.Mode().Perm())
	}
	st := info.Sys().(*syscall.Stat_t)
	if int(st.Uid) != uid || int(st.Gid) != gid {
		t.Errorf("owner %d:%d, want %d:%d", st.Uid, st.Gid, uid, gid)
	}
}

func TestCompact_LockedDatabaseIsLeftAlone(t *testing.T) {
	opts := testOptions(t)
	drainedSpool(t, opts, 1)
	before, err := os.ReadFile(opts.Path)
	if err != nil {
		t.Fatal(err)
	}
	openSpool(t, opts) // a running daemon

	_, err = Compact(opts.Path, 100*time.Millisecond)
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("Compact error = %v, want ErrLocked", err)
	}
	after, err := os.ReadFile(opts.Path)
	if err != nil {
		t.Fatal(err)
	}
	// The open above cleared the clean marker in place, so compare the
	// length only, and check that no copy was made.
	if len(after) != len(before) {
		t.Errorf("file length changed from %d to %d", len(before), len(after))
	}
	if _, err := os.Stat(opts.Path + ".compact"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a copy was left: %v", err)
	}
}

func TestCompact_DamagedDatabaseIsLeftAlone(t *testing.T) {
	opts := testOptions(t)
	drainedSpool(t, opts, 4000)
	zeroMiddlePage(t, opts.Path)
	before, err := os.ReadFile(opts.Path)
	if err != nil {
		t.Fatal(err)
	}

	_, err = Compact(opts.Path, time.Second)
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Compact error = %v, want ErrCorrupt", err)
	}
	after, err := os.ReadFile(opts.Path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Error("the damaged file was changed")
	}
	matches, _ := filepath.Glob(opts.Path + "*")
	if len(matches) != 1 {
		t.Errorf("files next to the database: %v, want only the database", matches)
	}
}

func TestCompact_SecondRunIsRejected(t *testing.T) {
	opts := testOptions(t)
	drainedSpool(t, opts, 5)
	unlock, err := lockCompact(filepath.Dir(opts.Path))
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()

	_, err = Compact(opts.Path, time.Second)
	if err == nil || !strings.Contains(err.Error(), "another compact is running") {
		t.Fatalf("Compact while another runs: %v, want an error naming the other compact", err)
	}
	if _, err := os.Stat(opts.Path + ".compact"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the running compact's copy was touched: %v", err)
	}
}

// A large file closed cleanly is trusted at open, so damage in it is found
// only by a full check, which Compact requests.
func TestCompact_DamagedLargeFileIsLeftAlone(t *testing.T) {
	if testing.Short() {
		t.Skip("writes a database larger than the size Open checks on its own")
	}
	opts := testOptions(t)
	fillAndClose(t, opts, int(alwaysCheckBelow/1024)+2000, 1024)
	zeroMiddlePage(t, opts.Path)

	ro := opts
	ro.ReadOnly = true
	s, err := Open(ro)
	if err != nil {
		t.Fatalf("Open without a full check: %v, want the damage unnoticed", err)
	}
	s.Close()
	ro.FullCheck = true
	if _, err := Open(ro); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Open with a full check: %v, want ErrCorrupt", err)
	}

	if _, err := Compact(opts.Path, time.Second); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Compact error = %v, want ErrCorrupt", err)
	}
	if _, err := os.Stat(opts.Path + ".compact"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a copy was left: %v", err)
	}
}

func TestCompact_FollowsSymlink(t *testing.T) {
	opts := testOptions(t)
	drainedSpool(t, opts, 5)
	link := filepath.Join(t.TempDir(), "link.db")
	if err := os.Symlink(opts.Path, link); err != nil {
		t.Fatal(err)
	}

	res, err := Compact(link, time.Second)
	if err != nil {
		t.Fatalf("Compact: %v", err)
	}
	if res.Path != opts.Path {
		t.Errorf("compacted %s, want the link's target %s", res.Path, opts.Path)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("the link was replaced: %v", err)
	}
}

// A process that waited for the lock while another put a new file at the
// path must open the new file, not keep the one that lost its name.
func TestOpen_WaiterGetsReplacedFile(t *testing.T) {
	opts := testOptions(t)
	drainedSpool(t, opts, 10)
	// Hold the lock with plain bbolt, which keeps the stored list of free
	// pages, so the waiter's Open needs no check in a child process and
	// waits in bbolt's own lock.
	holder, err := bolt.Open(opts.Path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}

	type result struct {
		s   *Spool
		err error
	}
	done := make(chan result, 1)
	go func() {
		o := opts
		o.LockTimeout = 5 * time.Second
		s, err := Open(o)
		done <- result{s, err}
	}()
	time.Sleep(200 * time.Millisecond) // let the waiter open the old file

	// Replace the file as Compact does, then let go of the old one.
	fresh := Options{Path: opts.Path + ".new", Logger: opts.Logger}
	fillAndClose(t, fresh, 3, 10)
	if err := os.Rename(fresh.Path, opts.Path); err != nil {
		t.Fatal(err)
	}
	holder.Close()

	r := <-done
	if r.err != nil {
		t.Fatalf("Open: %v", r.err)
	}
	defer r.s.Close()
	if n := r.s.Stats().Messages; n != 3 {
		t.Errorf("opened a database with %d messages, want the new file's 3", n)
	}
}
