package spool

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/mqspool/mqspool/internal/state"
)

func TestOverflowRejectAcceptsPrefix(t *testing.T) {
	opts := testOptions(t)
	opts.MaxMessages = 5
	s := openSpool(t, opts)

	files := []FileBatch{batch("a", 0, 2), batch("b", 2, 2), batch("c", 4, 2), batch("d", 6, 1)}
	n, err := s.Append(files)
	if !errors.Is(err, ErrFull) {
		t.Fatalf("Append error = %v, want ErrFull", err)
	}
	equal(t, "accepted", n, 2)
	equal(t, "payloads", payloadsOf(drain(t, s.NewCursor())), []string{"payload 0", "payload 1", "payload 2", "payload 3"})
	for i, want := range []bool{true, true, false, false} {
		seen, err := s.Seen(files[i].ID)
		if err != nil {
			t.Fatal(err)
		}
		equal(t, "Seen("+files[i].ID.Name+")", seen, want)
	}

	// Once a message leaves, the waiting file fits again.
	mustCommit(t, s, state.Change{Kind: state.ChangeDelivered, Seq: 1})
	mustAppend(t, s, files[2])
}

func TestOverflowRejectByBytes(t *testing.T) {
	opts := testOptions(t)
	m := testMessage(0)
	opts.MaxBytes = int64(len(encodeRecord(time.Now(), &m)) * 3)
	s := openSpool(t, opts)

	n, err := s.Append([]FileBatch{batch("a", 0, 3), batch("b", 3, 1)})
	if !errors.Is(err, ErrFull) {
		t.Fatalf("Append error = %v, want ErrFull", err)
	}
	equal(t, "accepted", n, 1)
	equal(t, "bytes", s.Stats().Bytes, opts.MaxBytes)
}

func TestFileLargerThanLimit(t *testing.T) {
	opts := testOptions(t)
	opts.MaxMessages = 3
	opts.Overflow = OverflowDropOldest
	s := openSpool(t, opts)

	n, err := s.Append([]FileBatch{batch("a", 0, 1), batch("huge", 1, 4), batch("c", 5, 1)})
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Append error = %v, want ErrTooLarge", err)
	}
	equal(t, "accepted", n, 1)
	equal(t, "messages", s.Stats().Messages, int64(1))
	if want := "huge has 4 messages, more than spool.max_messages (3)"; !strings.Contains(err.Error(), want) {
		t.Errorf("Append error %q does not name the limit: want %q", err, want)
	}
}

func TestOverflowDropOldest(t *testing.T) {
	opts := testOptions(t)
	opts.MaxMessages = 4
	opts.Overflow = OverflowDropOldest
	s := openSpool(t, opts)
	mustAppend(t, s, batch("a", 0, 4))
	// Seq 1 is in flight, so the drop must pass over it.
	mustCommit(t, s, sent(1, 1, 1))

	mustAppend(t, s, batch("b", 4, 2))
	st := s.Stats()
	equal(t, "messages", st.Messages, int64(4))
	equal(t, "dropped", st.Dropped, uint64(2))
	equal(t, "seq 1 kept", present(t, s, 1), true)
	equal(t, "seq 2 dropped", present(t, s, 2), false)
	equal(t, "seq 3 dropped", present(t, s, 3), false)
	equal(t, "queue", seqsOf(drain(t, s.NewCursor())), []uint64{4, 5, 6})
}

// A long overflow drops a message for each one taken in, so the warnings
// are limited: one at the first drop, and later ones count what came
// between.
func TestOverflowDropOldestLogsOnce(t *testing.T) {
	var logged strings.Builder
	opts := testOptions(t)
	opts.Logger = slog.New(slog.NewTextHandler(&logged, &slog.HandlerOptions{Level: slog.LevelWarn}))
	opts.MaxMessages = 2
	opts.Overflow = OverflowDropOldest
	var onDrop []uint64
	opts.OnDrop = func(seq uint64) { onDrop = append(onDrop, seq) }
	s := openSpool(t, opts)

	for i := range 6 {
		mustAppend(t, s, batch(fmt.Sprintf("f%d", i), i, 1))
	}
	equal(t, "dropped", s.Stats().Dropped, uint64(4))
	equal(t, "OnDrop calls", onDrop, []uint64{1, 2, 3, 4})
	equal(t, "warnings", strings.Count(logged.String(), "dropped the oldest messages"), 1)
	if !strings.Contains(logged.String(), "dropped=1 ") {
		t.Errorf("first warning %q, want dropped=1", logged.String())
	}

	s.drops.last = time.Now().Add(-dropLogEvery)
	mustAppend(t, s, batch("g", 6, 1))
	equal(t, "warnings after dropLogEvery", strings.Count(logged.String(), "dropped the oldest messages"), 2)
	if !strings.Contains(logged.String(), "dropped=4 ") {
		t.Errorf("second warning %q, want dropped=4 (the three unlogged and this one)", logged.String())
	}
}

// Drops held back after a warning reach the log when the interval ends,
// although the overflow ended and nothing else is dropped.
func TestOverflowDropOldestLogsHeldBackDrops(t *testing.T) {
	var logged syncBuffer
	opts := testOptions(t)
	opts.Logger = slog.New(slog.NewTextHandler(&logged, &slog.HandlerOptions{Level: slog.LevelWarn}))
	opts.MaxMessages = 1
	opts.Overflow = OverflowDropOldest
	s := openSpool(t, opts)
	s.drops.every = 50 * time.Millisecond

	for i := range 4 {
		mustAppend(t, s, batch(fmt.Sprintf("f%d", i), i, 1))
	}
	equal(t, "warnings at once", strings.Count(logged.String(), "dropped the oldest messages"), 1)

	deadline := time.Now().Add(5 * time.Second)
	for strings.Count(logged.String(), "dropped the oldest messages") < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("the two drops after the first warning were never logged:\n%s", logged.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.Contains(logged.String(), "dropped=2 ") || !strings.Contains(logged.String(), "last_seq=3 ") {
		t.Errorf("held-back warning %q, want dropped=2 and last_seq=3", logged.String())
	}
}

// Close logs the drops held back since the last warning.
func TestOverflowDropOldestLogsAtClose(t *testing.T) {
	var logged syncBuffer
	opts := testOptions(t)
	opts.Logger = slog.New(slog.NewTextHandler(&logged, &slog.HandlerOptions{Level: slog.LevelWarn}))
	opts.MaxMessages = 1
	opts.Overflow = OverflowDropOldest
	s, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		mustAppend(t, s, batch(fmt.Sprintf("f%d", i), i, 1))
	}
	equal(t, "warnings before Close", strings.Count(logged.String(), "dropped the oldest messages"), 1)

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	equal(t, "warnings after Close", strings.Count(logged.String(), "dropped the oldest messages"), 2)
	if !strings.Contains(logged.String(), "last_seq=2 ") {
		t.Errorf("warning at Close %q, want last_seq=2", logged.String())
	}
}

func TestOverflowDropOldestAllInFlight(t *testing.T) {
	opts := testOptions(t)
	opts.MaxMessages = 2
	opts.Overflow = OverflowDropOldest
	s := openSpool(t, opts)
	mustAppend(t, s, batch("a", 0, 2))
	mustCommit(t, s, sent(1, 1, 1), sent(2, 2, 1))

	n, err := s.Append([]FileBatch{batch("b", 2, 1)})
	if !errors.Is(err, ErrFull) {
		t.Fatalf("Append error = %v, want ErrFull", err)
	}
	equal(t, "accepted", n, 0)
	equal(t, "dropped", s.Stats().Dropped, uint64(0))
}

// An append that committed before Close may report its drops after it,
// since it reports them once the write lock is released. They are logged
// at once, with no timer left to log them after Close.
func TestOverflowDropOldestLogsAfterClose(t *testing.T) {
	var logged syncBuffer
	opts := testOptions(t)
	opts.Logger = slog.New(slog.NewTextHandler(&logged, &slog.HandlerOptions{Level: slog.LevelWarn}))
	opts.MaxMessages = 1
	opts.Overflow = OverflowDropOldest
	s, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		mustAppend(t, s, batch(fmt.Sprintf("f%d", i), i, 1))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s.reportDrops([]droppedMessage{{seq: 7, size: 1}})
	equal(t, "warnings after a drop reported after Close", strings.Count(logged.String(), "dropped the oldest messages"), 2)
	if !strings.Contains(logged.String(), "last_seq=7 ") {
		t.Errorf("warnings %q, want one with last_seq=7", logged.String())
	}
	s.drops.mu.Lock()
	pending := s.drops.timer != nil
	s.drops.mu.Unlock()
	if pending {
		t.Error("a drop log timer is still pending after Close")
	}
}
