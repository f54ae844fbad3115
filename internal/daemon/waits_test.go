package daemon

import (
	"context"
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
			w.committed("a.msg", 10, 2)
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
	w.committed("a.msg", 1, 3)
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

func TestWaitTracker_ForgetsOldestOutcomes(t *testing.T) {
	w := newWaitTracker(t.TempDir())
	for seq := range uint64(maxOutcomes + 10) {
		w.outcome(eventloop.Outcome{Seq: seq + 1, Kind: eventloop.Delivered})
	}
	if n := len(w.outcomes); n != maxOutcomes {
		t.Errorf("%d outcomes kept, want %d", n, maxOutcomes)
	}
	if _, ok := w.outcomes[1]; ok {
		t.Error("the oldest outcome is still kept")
	}
}
