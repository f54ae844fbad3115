package spool

import "time"

// CommitBuckets are the upper bounds, in seconds, of the buckets of
// [CommitTimes]: from a fast SSD, well under a millisecond, to an SD card
// that can stall for seconds.
var CommitBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// CommitTimes is a histogram of the time that each commit since Open spent
// writing the database file and syncing it, as bbolt times it: the data
// pages and the meta page, each followed by fdatasync on Linux.
type CommitTimes struct {
	Count uint64
	Sum   time.Duration
	// Buckets counts the commits that took at most each bound of
	// CommitBuckets, so each count includes the ones before it.
	Buckets []uint64
}

// commitTimes collects CommitTimes. Its counts are per bucket, the last
// one for commits slower than every bound.
type commitTimes struct {
	count  uint64
	sum    time.Duration
	counts [len(commitBounds) + 1]uint64
}

// commitBounds is CommitBuckets as durations.
var commitBounds = [...]time.Duration{
	500 * time.Microsecond, time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond,
	10 * time.Millisecond, 25 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond,
	250 * time.Millisecond, 500 * time.Millisecond, time.Second, 2500 * time.Millisecond,
	5 * time.Second, 10 * time.Second,
}

func (c *commitTimes) observe(took time.Duration) {
	c.count++
	c.sum += took
	i := 0
	for i < len(commitBounds) && took > commitBounds[i] {
		i++
	}
	c.counts[i]++
}

func (c *commitTimes) snapshot() CommitTimes {
	out := CommitTimes{Count: c.count, Sum: c.sum, Buckets: make([]uint64, len(commitBounds))}
	var below uint64
	for i := range commitBounds {
		below += c.counts[i]
		out.Buckets[i] = below
	}
	return out
}
