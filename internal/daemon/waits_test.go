package daemon

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mqspool/mqspool/internal/control"
	"github.com/mqspool/mqspool/internal/eventloop"
)

func TestWaitTracker_Outcomes(t *testing.T) {
	tests := []struct {
		name     string
		outcomes []eventloop.Outcome
		want     string
	}{
		{"delivered", []eventloop.Outcome{{Seq: 10, Kind: eventloop.Delivered}, {Seq: 11, Kind: eventloop.Delivered}}, control.WaitDelivered},
		{"one rejected", []eventloop.Outcome{{Seq: 10, Kind: eventloop.Delivered}, {Seq: 11, Kind: eventloop.Failed, Reason: "0x95 packet too large"}}, control.WaitRejected},
		{"one expired", []eventloop.Outcome{{Seq: 10, Kind: eventloop.Expired}, {Seq: 11, Kind: eventloop.Delivered}}, control.WaitDropped},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWaitTracker(t.TempDir())
			// Outcomes that arrive before the request are remembered.
			w.committed("a.msg", 10, 2, false)
			w.outcome(tt.outcomes[0])
			done := make(chan control.WaitResult, 1)
			go func() { done <- w.wait(context.Background(), "a.msg") }()
			w.outcome(tt.outcomes[1])

			select {
			case res := <-done:
				if res.State != tt.want {
					t.Errorf("state %q (%s), want %q", res.State, res.Reason, tt.want)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("wait did not return after the last outcome")
			}
		})
	}
}

func TestWaitTracker_TimedOut(t *testing.T) {
	w := newWaitTracker(t.TempDir())
	w.committed("a.msg", 1, 3, false)
	w.outcome(eventloop.Outcome{Seq: 1, Kind: eventloop.Delivered})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()

	res := w.wait(ctx, "a.msg")
	if res.State != control.WaitTimedOut {
		t.Fatalf("state %q, want %q", res.State, control.WaitTimedOut)
	}
	if res.Reason != "queued; 1 of 3 messages done" {
		t.Errorf("reason %q does not count the done messages", res.Reason)
	}
}

func TestWaitTracker_RejectedAtIngest(t *testing.T) {
	dir := t.TempDir()
	failed := filepath.Join(dir, "failed")
	if err := os.MkdirAll(failed, 0o755); err != nil {
		t.Fatal(err)
	}
	w := newWaitTracker(dir)
	done := make(chan control.WaitResult, 1)
	go func() { done <- w.wait(context.Background(), "b.msg") }()

	os.WriteFile(filepath.Join(failed, "b.msg.reason"), []byte("missing topic\n"), 0o644)
	os.WriteFile(filepath.Join(failed, "b.msg"), []byte("x"), 0o644)
	select {
	case res := <-done:
		if res.State != control.WaitRejected || res.Reason != "missing topic" {
			t.Errorf("result %+v, want rejected with the reason file's text", res)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("wait did not notice the file in failed/")
	}
}

func TestWaitTracker_RejectedAtIngestReasonOnly(t *testing.T) {
	dir := t.TempDir()
	failed := filepath.Join(dir, "failed")
	if err := os.MkdirAll(failed, 0o755); err != nil {
		t.Fatal(err)
	}
	text := "missing topic\n\nThe file was new/b.msg. To retry it, fix it and move it back into new/ " +
		"(without this .reason file).\n"
	os.WriteFile(filepath.Join(failed, "b.msg.reason"), []byte(text), 0o644)
	os.WriteFile(filepath.Join(failed, "b.msg"), []byte("x"), 0o644)

	res := newWaitTracker(dir).wait(context.Background(), "b.msg")
	if res.State != control.WaitRejected {
		t.Errorf("state %q, want %q", res.State, control.WaitRejected)
	}
	if res.Reason != "missing topic" {
		t.Errorf("reason %q, want only the first paragraph of the reason file", res.Reason)
	}
}

func TestWaitTracker_EarlyOutcomesBounded(t *testing.T) {
	w := newWaitTracker(t.TempDir())
	for seq := range uint64(maxEarly + 10) {
		w.outcome(eventloop.Outcome{Seq: seq + 1, Kind: eventloop.Delivered})
	}
	if n := len(w.early); n != maxEarly {
		t.Errorf("%d outcomes of unknown files kept, want %d", n, maxEarly)
	}
	if _, ok := w.early[1]; ok {
		t.Error("the oldest outcome of an unknown file is still kept")
	}
}

// A file found again after a crash keeps the sequence numbers it got
// before, which the restarted loop may deliver before the pickup reports
// the file.
func TestWaitTracker_OutcomeBeforeCommit(t *testing.T) {
	w := newWaitTracker(t.TempDir())
	w.outcome(eventloop.Outcome{Seq: 5, Kind: eventloop.Delivered})
	w.committed("a.msg", 5, 1, false)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if res := w.wait(ctx, "a.msg"); res.State != control.WaitDelivered {
		t.Errorf("state %q (%s), want %q", res.State, res.Reason, control.WaitDelivered)
	}
}

func TestWaitTracker_ForgetsOldestFiles(t *testing.T) {
	w := newWaitTracker(t.TempDir())
	for i := range maxFiles + 10 {
		w.committed(fmt.Sprintf("f%d.msg", i), uint64(2*i+1), 2, false)
	}
	if n := len(w.byName); n != maxFiles {
		t.Errorf("%d files kept, want %d", n, maxFiles)
	}
	if _, ok := w.byName["f0.msg"]; ok {
		t.Error("the oldest file is still kept")
	}
	if len(w.files)-w.head != maxFiles {
		t.Errorf("%d files in the sequence index, want %d", len(w.files)-w.head, maxFiles)
	}

	// The newest file still gets its outcomes.
	last := fmt.Sprintf("f%d.msg", maxFiles+9)
	first := uint64(2*(maxFiles+9) + 1)
	w.outcome(eventloop.Outcome{Seq: first, Kind: eventloop.Delivered})
	w.outcome(eventloop.Outcome{Seq: first + 1, Kind: eventloop.Failed, Reason: "0x87 not authorized"})
	res, done, _ := w.check(last)
	if !done || res.State != control.WaitRejected || res.Reason != "0x87 not authorized" {
		t.Errorf("result %+v done %t, want rejected with the reason", res, done)
	}
}

// A file appended again after a crash keeps its old sequence numbers, which
// are lower than those of newer files.
func TestWaitTracker_RepeatedFileOutOfSequence(t *testing.T) {
	w := newWaitTracker(t.TempDir())
	w.committed("new.msg", 100, 1, false)
	w.committed("old.msg", 5, 3, false)
	for seq := uint64(5); seq < 8; seq++ {
		w.outcome(eventloop.Outcome{Seq: seq, Kind: eventloop.Delivered})
	}
	if res, done, _ := w.check("old.msg"); !done || res.State != control.WaitDelivered || res.Messages != 3 {
		t.Errorf("old.msg: result %+v done %t, want delivered with 3 messages", res, done)
	}
	if _, done, _ := w.check("new.msg"); done {
		t.Error("new.msg is done before its message has an outcome")
	}
}

// A file appended in parts is done only once its last part is committed
// and every message of every part has an outcome.
func TestWaitTracker_FileInParts(t *testing.T) {
	w := newWaitTracker(t.TempDir())
	w.committed("big.jsonl", 10, 2, true)
	w.outcome(eventloop.Outcome{Seq: 10, Kind: eventloop.Delivered})
	w.outcome(eventloop.Outcome{Seq: 11, Kind: eventloop.Delivered})
	if _, done, _ := w.check("big.jsonl"); done {
		t.Fatal("file reported done while parts are still to come")
	}

	w.outcome(eventloop.Outcome{Seq: 12, Kind: eventloop.Failed, Reason: "0x99 payload format invalid"})
	w.committed("big.jsonl", 12, 2, false)
	if _, done, _ := w.check("big.jsonl"); done {
		t.Fatal("file reported done before its last message has an outcome")
	}

	w.outcome(eventloop.Outcome{Seq: 13, Kind: eventloop.Delivered})
	res, done, _ := w.check("big.jsonl")
	if !done || res.State != control.WaitRejected || res.Messages != 4 {
		t.Errorf("result %+v (done %v), want rejected with 4 messages", res, done)
	}
}

// The last part of a file can add no messages when an earlier run stored
// them; it still ends the file.
func TestWaitTracker_EmptyLastPart(t *testing.T) {
	w := newWaitTracker(t.TempDir())
	w.committed("big.jsonl", 1, 1, true)
	w.outcome(eventloop.Outcome{Seq: 1, Kind: eventloop.Delivered})
	w.committed("big.jsonl", 0, 0, false)
	if res, done, _ := w.check("big.jsonl"); !done || res.State != control.WaitDelivered {
		t.Errorf("result %+v (done %v), want delivered", res, done)
	}
}

// Every message of a .jsonl file, and of each part of a file appended in
// parts, is traced back to its file. A message queued before the start is
// not.
func TestWaitTracker_SourceOfEachMessage(t *testing.T) {
	w := newWaitTracker(t.TempDir())
	w.committed("lines.jsonl", 10, 5, false)
	w.committed("big.jsonl", 15, 3, true)
	w.committed("other.msg", 18, 1, false)
	w.committed("big.jsonl", 19, 2, false)

	cases := []struct {
		seq  uint64
		want string
	}{
		{10, "lines.jsonl"}, {14, "lines.jsonl"},
		{15, "big.jsonl"}, {17, "big.jsonl"},
		{18, "other.msg"},
		{19, "big.jsonl"}, {20, "big.jsonl"},
	}
	for _, tc := range cases {
		if got, ok := w.source(tc.seq); !ok || got != tc.want {
			t.Errorf("source(%d) = %q, %t; want %q", tc.seq, got, ok, tc.want)
		}
	}
	for _, seq := range []uint64{9, 21} {
		if got, ok := w.source(seq); ok {
			t.Errorf("source(%d) = %q for a message of no known file", seq, got)
		}
	}
}
