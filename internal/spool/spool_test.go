package spool

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/mqspool/mqspool/internal/state"
)

func TestAppendNextCommitCycle(t *testing.T) {
	s := openSpool(t, testOptions(t))
	mustAppend(t, s, batch("a", 0, 3), batch("b", 3, 2))

	c := s.NewCursor()
	recs := drain(t, c)
	equal(t, "seqs", seqsOf(recs), []uint64{1, 2, 3, 4, 5})
	equal(t, "payloads", payloadsOf(recs), []string{"payload 0", "payload 1", "payload 2", "payload 3", "payload 4"})
	equal(t, "messages", s.Stats().Messages, int64(5))
	if oldest := s.Stats().Oldest; time.Since(oldest) > time.Minute || oldest.After(time.Now()) {
		t.Fatalf("oldest = %v, want about now", oldest)
	}

	var changes []state.Change
	for _, r := range recs {
		changes = append(changes, state.Change{Kind: state.ChangeDelivered, Seq: r.Seq})
	}
	if err := s.Commit(changes); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	st := s.Stats()
	equal(t, "messages after commit", st.Messages, int64(0))
	equal(t, "bytes after commit", st.Bytes, int64(0))
	equal(t, "oldest after commit", st.Oldest, time.Time{})
}

func TestCursorReadySignalsAppend(t *testing.T) {
	s := openSpool(t, testOptions(t))
	c := s.NewCursor()
	<-c.Ready() // the initial signal
	if recs := drain(t, c); len(recs) != 0 {
		t.Fatalf("empty spool returned %d records", len(recs))
	}

	mustAppend(t, s, batch("a", 0, 1))
	select {
	case <-c.Ready():
	case <-time.After(time.Second):
		t.Fatal("Ready not signalled after Append")
	}
	equal(t, "seqs", seqsOf(drain(t, c)), []uint64{1})
}

func TestCursorReadAheadIsBounded(t *testing.T) {
	opts := testOptions(t)
	opts.ReadAheadMessages = 4
	s := openSpool(t, opts)
	mustAppend(t, s, batch("a", 0, 10))

	c := s.NewCursor()
	if _, ok, err := c.Next(); !ok || err != nil {
		t.Fatalf("Next: ok %v, err %v", ok, err)
	}
	equal(t, "buffered records", len(c.buf), 4)
	equal(t, "remaining", len(drain(t, c)), 9)
}

func TestCursorRecycledPayloadReused(t *testing.T) {
	opts := testOptions(t)
	opts.ReadAheadMessages = 1
	s := openSpool(t, opts)
	f := batch("a", 0, 3)
	f.Messages[0].Payload = bytes.Repeat([]byte("x"), 100)
	f.Messages[1].Payload = bytes.Repeat([]byte("y"), 80)
	f.Messages[2].Payload = bytes.Repeat([]byte("z"), 120) // too large for the buffer
	mustAppend(t, s, f)
	c := s.NewCursor()
	defer c.Close()

	next := func() Record {
		t.Helper()
		r, ok, err := c.Next()
		if !ok || err != nil {
			t.Fatalf("Next: ok %v, err %v", ok, err)
		}
		return r
	}

	buf := next().Message.Payload
	c.Recycle(buf)
	second := next()
	if !bytes.Equal(second.Message.Payload, f.Messages[1].Payload) {
		t.Fatalf("second payload %q, want %q", second.Message.Payload, f.Messages[1].Payload)
	}
	if &second.Message.Payload[0] != &buf[0] {
		t.Error("second payload was not decoded into the recycled buffer")
	}

	c.Recycle(second.Message.Payload)
	third := next()
	if !bytes.Equal(third.Message.Payload, f.Messages[2].Payload) {
		t.Errorf("third payload %q, want %q", third.Message.Payload, f.Messages[2].Payload)
	}
}

func TestCursorSkipsOpenFlows(t *testing.T) {
	s := openSpool(t, testOptions(t))
	mustAppend(t, s, batch("a", 0, 4))
	err := s.Commit([]state.Change{{Kind: state.ChangeSent, PacketID: 7, Seq: 2, QoS: 1, Order: 1}})
	if err != nil {
		t.Fatalf("Commit: %v", err)
	}

	equal(t, "seqs", seqsOf(drain(t, s.NewCursor())), []uint64{1, 3, 4})
	rec, err := s.NewCursor().Load(2)
	if err != nil {
		t.Fatalf("Load(2): %v", err)
	}
	equal(t, "loaded payload", string(rec.Message.Payload), "payload 1")
}

func TestLoadMissing(t *testing.T) {
	s := openSpool(t, testOptions(t))
	if _, err := s.Load(42); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Load(42) error = %v, want ErrNotFound", err)
	}
}

func TestReopenKeepsQueueAndTotals(t *testing.T) {
	opts := testOptions(t)
	s, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	mustAppend(t, s, batch("a", 0, 3))
	if err := s.Commit([]state.Change{{Kind: state.ChangeDelivered, Seq: 1}}); err != nil {
		t.Fatal(err)
	}
	before := s.Stats()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s = openSpool(t, opts)
	after := s.Stats()
	// Commit times count from Open.
	before.Commits, after.Commits = CommitTimes{}, CommitTimes{}
	equal(t, "stats", after, before)
	mustAppend(t, s, batch("b", 3, 1))
	equal(t, "seqs", seqsOf(drain(t, s.NewCursor())), []uint64{2, 3, 4})
}

func TestIdentitiesSeenAndForget(t *testing.T) {
	s := openSpool(t, testOptions(t))
	a, b := batch("a", 0, 1), batch("b", 1, 1)
	mustAppend(t, s, a)

	for _, tc := range []struct {
		id   FileID
		want bool
	}{{a.ID, true}, {b.ID, false}} {
		seen, err := s.Seen(tc.id)
		if err != nil {
			t.Fatal(err)
		}
		equal(t, "Seen("+tc.id.Name+")", seen, tc.want)
	}

	changed := a.ID
	changed.Ctime++
	if seen, _ := s.Seen(changed); seen {
		t.Fatal("a file with another change time is reported as seen")
	}

	if err := s.Forget([]FileID{a.ID}); err != nil {
		t.Fatalf("Forget: %v", err)
	}
	if seen, _ := s.Seen(a.ID); seen {
		t.Fatal("identity still seen after Forget")
	}
}

func TestAppendForget_RemovesAndStores(t *testing.T) {
	s := openSpool(t, testOptions(t))
	a, b := batch("a", 0, 1), batch("b", 1, 1)
	mustAppend(t, s, a)

	n, err := s.AppendForget([]FileBatch{b}, []FileID{a.ID})
	if err != nil || n != 1 {
		t.Fatalf("AppendForget: %d files, %v", n, err)
	}
	if seen, _ := s.Seen(a.ID); seen {
		t.Error("identity of a still seen after AppendForget")
	}
	if seen, _ := s.Seen(b.ID); !seen {
		t.Error("identity of b not stored by AppendForget")
	}
}

// A file whose identity is in forget is new: the old identity goes first,
// so the file is stored rather than taken for a repeat.
func TestAppendForget_SameIdentityIsNewFile(t *testing.T) {
	s := openSpool(t, testOptions(t))
	a := batch("a", 0, 1)
	mustAppend(t, s, a)
	before := s.Stats().Messages

	if _, err := s.AppendForget([]FileBatch{a}, []FileID{a.ID}); err != nil {
		t.Fatal(err)
	}
	equal(t, "messages after appending a again", s.Stats().Messages, before+1)
}

func TestLockTimeout(t *testing.T) {
	opts := testOptions(t)
	openSpool(t, opts)

	opts.LockTimeout = 50 * time.Millisecond
	start := time.Now()
	_, err := Open(opts)
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open error = %v, want ErrLocked", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("second Open took %v, want about the 50ms lock timeout", d)
	}
}

func TestClientIDStoredOnce(t *testing.T) {
	opts := testOptions(t)
	s, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	calls := 0
	derive := func() (string, error) { calls++; return "gw-1", nil }
	id, err := s.ClientID(derive)
	if err != nil {
		t.Fatal(err)
	}
	equal(t, "first id", id, "gw-1")
	s.Close()

	s = openSpool(t, opts)
	id, err = s.ClientID(func() (string, error) { return "other", nil })
	if err != nil {
		t.Fatal(err)
	}
	equal(t, "id after reopen", id, "gw-1")
	equal(t, "derive calls", calls, 1)
}

func TestClosedSpoolReturnsErrClosed(t *testing.T) {
	s, err := Open(testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	c := s.NewCursor()
	s.Close()
	if _, err := s.Append([]FileBatch{batch("a", 0, 1)}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append error = %v, want ErrClosed", err)
	}
	if _, _, err := c.Next(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Next error = %v, want ErrClosed", err)
	}
	if err := s.Commit([]state.Change{{Kind: state.ChangeDelivered, Seq: 1}}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Commit error = %v, want ErrClosed", err)
	}
}

func TestListPages(t *testing.T) {
	s := openSpool(t, testOptions(t))
	mustAppend(t, s, batch("a", 0, 5))
	page, err := s.List(0, 2)
	if err != nil {
		t.Fatal(err)
	}
	equal(t, "first page", seqsOf(page), []uint64{1, 2})
	page, err = s.List(2, 10)
	if err != nil {
		t.Fatal(err)
	}
	equal(t, "second page", seqsOf(page), []uint64{3, 4, 5})
}

func TestReadOnlyOpen(t *testing.T) {
	opts := testOptions(t)
	s, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	mustAppend(t, s, batch("a", 0, 2))
	s.Close()

	opts.ReadOnly = true
	ro := openSpool(t, opts)
	equal(t, "messages", ro.Stats().Messages, int64(2))
	if _, err := ro.Append([]FileBatch{batch("b", 2, 1)}); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("Append error = %v, want ErrReadOnly", err)
	}
}

func TestAppendSkipsSeenFile(t *testing.T) {
	s := openSpool(t, testOptions(t))
	a := batch("a", 0, 2)
	mustAppend(t, s, a)
	mustAppend(t, s, a, batch("b", 2, 1))
	equal(t, "messages", s.Stats().Messages, int64(3))
	equal(t, "payloads", payloadsOf(drain(t, s.NewCursor())), []string{"payload 0", "payload 1", "payload 2"})
}

func TestConcurrentAppendAndCommit(t *testing.T) {
	s := openSpool(t, testOptions(t))
	const files, perFile = 40, 5
	done := make(chan error, 1)
	go func() {
		for i := range files {
			if _, err := s.Append([]FileBatch{batch("f", i*perFile, perFile)}); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()

	c := s.NewCursor()
	delivered := 0
	deadline := time.After(20 * time.Second)
	for delivered < files*perFile {
		r, ok, err := c.Next()
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			select {
			case <-c.Ready():
			case <-deadline:
				t.Fatalf("delivered %d of %d before the deadline", delivered, files*perFile)
			}
			continue
		}
		equal(t, "seq", r.Seq, uint64(delivered+1))
		mustCommit(t, s, state.Change{Kind: state.ChangeDelivered, Seq: r.Seq})
		delivered++
	}
	if err := <-done; err != nil {
		t.Fatalf("Append: %v", err)
	}
	equal(t, "messages", s.Stats().Messages, int64(0))
	s.pendingMu.Lock()
	t.Logf("%d commits carried more than one write", s.groupCommits)
	s.pendingMu.Unlock()
}

func TestSalvageMissingFile(t *testing.T) {
	_, _, err := Salvage(filepath.Join(t.TempDir(), "absent.db"), func(Record) error { return nil })
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Salvage error = %v, want a not-exist error", err)
	}
}

func TestFileIDs_ListsStoredIdentities(t *testing.T) {
	s := openSpool(t, testOptions(t))
	a := batch("site/a.jsonl", 0, 2)
	a.ID.Dev, a.ID.Size, a.ID.Ctime = 7, 123, 1_700_000_000_123_456_789
	b := batch("b.msg", 10, 1)
	mustAppend(t, s, a, b)

	ids, err := s.FileIDs()
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != 2 || !slices.Contains(ids, a.ID) || !slices.Contains(ids, b.ID) {
		t.Errorf("FileIDs = %+v, want %+v and %+v", ids, a.ID, b.ID)
	}

	if err := s.Forget([]FileID{a.ID}); err != nil {
		t.Fatal(err)
	}
	ids, err = s.FileIDs()
	if err != nil {
		t.Fatal(err)
	}
	equal(t, "identities after Forget", ids, []FileID{b.ID})
}
