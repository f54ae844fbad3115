package spool

import (
	"slices"
	"testing"
	"time"
)

// Each commit is timed once, and Stats shows the histogram.
func TestStats_CommitTimes(t *testing.T) {
	s := openSpool(t, testOptions(t))
	before := s.Stats().Commits.Count

	mustAppend(t, s, batch("a", 0, 3))
	mustAppend(t, s, batch("b", 3, 2))

	ct := s.Stats().Commits
	if got := ct.Count - before; got != 2 {
		t.Errorf("%d commits timed for two appends, want 2", got)
	}
	if ct.Sum <= 0 {
		t.Errorf("commit time sum %v, want above 0", ct.Sum)
	}
	if last := ct.Buckets[len(ct.Buckets)-1]; last != ct.Count {
		t.Errorf("last bucket %d, want every commit (%d) under %v s", last, ct.Count, CommitBuckets[len(CommitBuckets)-1])
	}
}

// A bucket counts the times up to its bound, and the ones before it. A
// time above every bound shows only in the count and the sum.
func TestCommitTimes_Buckets(t *testing.T) {
	if len(commitBounds) != len(CommitBuckets) {
		t.Fatalf("%d bounds against %d buckets", len(commitBounds), len(CommitBuckets))
	}
	for i, b := range commitBounds {
		if b.Seconds() != CommitBuckets[i] {
			t.Errorf("bound %d is %v, bucket %v s", i, b, CommitBuckets[i])
		}
	}

	var c commitTimes
	for _, took := range []time.Duration{500 * time.Microsecond, 501 * time.Microsecond, 2 * time.Millisecond, 11 * time.Second} {
		c.observe(took)
	}
	got := c.snapshot()

	if got.Count != 4 {
		t.Errorf("count %d, want 4", got.Count)
	}
	if want := 500*time.Microsecond + 501*time.Microsecond + 2*time.Millisecond + 11*time.Second; got.Sum != want {
		t.Errorf("sum %v, want %v", got.Sum, want)
	}
	want := []uint64{1, 2, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3}
	if !slices.Equal(got.Buckets, want) {
		t.Errorf("buckets %v, want %v", got.Buckets, want)
	}
}
