package spool

import (
	"sync/atomic"
	"testing"
	"time"
)

// A message stamped before the wall clock was stepped is aged from its
// true append time: the stamp moves by the step.
func TestWallSteps_ShiftAcrossStep(t *testing.T) {
	w := newWallSteps()
	bootDate := time.Date(1970, 1, 1, 0, 5, 0, 0, time.UTC)
	step := time.Date(2026, 12, 5, 9, 0, 0, 0, time.UTC).Sub(bootDate)

	w.note(10, 0)
	w.note(20, 0) // same offset: no new regime
	w.note(30, step)

	before := bootDate.Add(time.Minute)
	if got, want := w.shift(15, before, step), before.Add(step); !got.Equal(want) {
		t.Errorf("stamp before the step moved to %v, want %v", got, want)
	}
	after := bootDate.Add(step + 2*time.Minute)
	if got := w.shift(30, after, step); !got.Equal(after) {
		t.Errorf("stamp after the step moved to %v, want it unchanged", got)
	}
	if got := w.shift(15, before, 0); !got.Equal(before) {
		t.Errorf("stamp moved to %v with no step since, want it unchanged", got)
	}
}

// A step after the last append still moves the stamps made before it.
func TestWallSteps_StepAfterLastAppend(t *testing.T) {
	w := newWallSteps()
	w.note(1, 0)

	stamp := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	if got, want := w.shift(5, stamp, -time.Hour), stamp.Add(-time.Hour); !got.Equal(want) {
		t.Errorf("stamp moved to %v after the clock went back an hour, want %v", got, want)
	}
}

// Messages from before this process, and all messages while no append
// was noted, keep their stamps.
func TestWallSteps_EarlierMessagesUnchanged(t *testing.T) {
	w := newWallSteps()
	stamp := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if got := w.shift(3, stamp, time.Hour); !got.Equal(stamp) {
		t.Errorf("stamp moved to %v with no regime noted, want it unchanged", got)
	}

	w.note(100, 0)
	if got := w.shift(99, stamp, time.Hour); !got.Equal(stamp) {
		t.Errorf("stamp of a message from before this process moved to %v, want it unchanged", got)
	}
}

// Small changes of the offset, such as NTP slewing, start no regime, and
// the number of regimes is bounded.
func TestWallSteps_Regimes(t *testing.T) {
	w := newWallSteps()
	w.note(1, 0)
	w.note(2, time.Second)
	if n := len(*w.regimes.Load()); n != 1 {
		t.Fatalf("%d regimes after a 1s change, want 1", n)
	}

	for i := range 2 * maxWallRegimes {
		w.note(uint64(10+i), time.Duration(i+2)*time.Hour)
	}
	regimes := *w.regimes.Load()
	if len(regimes) != maxWallRegimes {
		t.Fatalf("%d regimes, want at most %d", len(regimes), maxWallRegimes)
	}
	if last := regimes[len(regimes)-1]; last.firstSeq != uint64(10+2*maxWallRegimes-1) {
		t.Errorf("newest regime starts at %d, want the last note", last.firstSeq)
	}
}

// Without a step, the offset stays the same.
func TestWallSteps_OffsetWithoutStep(t *testing.T) {
	w := newWallSteps()
	before := w.offsetNow()
	time.Sleep(10 * time.Millisecond)
	if d := (w.offsetNow() - before).Abs(); d > 100*time.Millisecond {
		t.Errorf("offset moved by %s without a clock step, want about 0", d)
	}
}

// After the wall clock steps forward, the spool hands out the stamps of
// messages with an expiry interval moved by the step, and leaves the
// others alone.
func TestSpool_EnqueuedFollowsWallStep(t *testing.T) {
	s := openSpool(t, testOptions(t))
	var offset atomic.Int64
	s.wall.offsetNow = func() time.Duration { return time.Duration(offset.Load()) }

	f := batch("a", 0, 2)
	f.Messages[0].ExpirySeconds = 60
	mustAppend(t, s, f)
	stored, err := s.List(0, 2)
	if err != nil || len(stored) != 2 {
		t.Fatalf("List: %d records, %v", len(stored), err)
	}

	offset.Store(int64(40 * 365 * 24 * time.Hour)) // the clock was set from 1986 to 2026
	got := drain(t, s.NewCursor())
	if len(got) != 2 {
		t.Fatalf("cursor returned %d messages, want 2", len(got))
	}
	if want := stored[0].Enqueued.Add(40 * 365 * 24 * time.Hour); !got[0].Enqueued.Equal(want) {
		t.Errorf("stamp of the message with an expiry is %v, want %v", got[0].Enqueued, want)
	}
	if !got[1].Enqueued.Equal(stored[1].Enqueued) {
		t.Errorf("stamp of the message without an expiry is %v, want it unchanged at %v", got[1].Enqueued, stored[1].Enqueued)
	}

	loaded, err := s.Load(got[0].Seq)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if !loaded.Enqueued.Equal(got[0].Enqueued) {
		t.Errorf("Load returned stamp %v, want %v like the cursor", loaded.Enqueued, got[0].Enqueued)
	}
}
