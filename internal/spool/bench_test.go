package spool

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
)

func BenchmarkAppend(b *testing.B) {
	for _, perCall := range []int{1, 100} {
		b.Run(fmt.Sprintf("messages=%d", perCall), func(b *testing.B) {
			s := openSpool(b, testOptions(b))
			f := batch("bench", 0, perCall)
			for i := range f.Messages {
				f.Messages[i].Payload = []byte(strings.Repeat("x", 200))
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				// A new identity each time, because the spool skips a
				// file it has stored before.
				f.ID.Ino++
				files := []FileBatch{f}
				if _, err := s.Append(files); err != nil {
					b.Fatal(err)
				}
				if files[0].Count != perCall {
					b.Fatalf("stored %d messages, want %d", files[0].Count, perCall)
				}
			}
			b.ReportMetric(float64(b.N*perCall)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

// queueMessages appends messages from to from+n-1, with 100-byte
// payloads, in files of 1000.
func queueMessages(tb testing.TB, s *Spool, from, n int) {
	tb.Helper()
	for first := from; first < from+n; first += 1000 {
		f := batch("q", first, min(1000, from+n-first))
		for i := range f.Messages {
			f.Messages[i].Payload = []byte(strings.Repeat("p", 100))
		}
		mustAppend(tb, s, f)
	}
}

// drainPeakHeap reads the whole queue through a new cursor and returns
// the largest live heap (HeapInuse after a GC) seen every 5000 records.
func drainPeakHeap(tb testing.TB, s *Spool) (records int, peak uint64) {
	tb.Helper()
	c := s.NewCursor()
	defer c.Close()
	var ms runtime.MemStats
	for {
		_, ok, err := c.Next()
		if err != nil {
			tb.Fatal(err)
		}
		if !ok {
			return records, peak
		}
		records++
		if records%5000 == 0 {
			runtime.GC()
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
		}
	}
}

func BenchmarkCursorMemory(b *testing.B) {
	for _, queued := range []int{10_000, 100_000} {
		b.Run(fmt.Sprintf("queued=%d", queued), func(b *testing.B) {
			s := openSpool(b, testOptions(b))
			queueMessages(b, s, 0, queued)
			b.ResetTimer()
			var peak uint64
			for b.Loop() {
				_, p := drainPeakHeap(b, s)
				peak = max(peak, p)
			}
			b.ReportMetric(float64(peak)/(1<<20), "heap-inuse-MiB")
		})
	}
}

func TestLargeQueueMemoryAndOpen(t *testing.T) {
	if testing.Short() {
		t.Skip("queues 110k messages")
	}
	opts := testOptions(t)
	s, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	queueMessages(t, s, 0, 10_000)
	n, small := drainPeakHeap(t, s)
	equal(t, "records at 10k", n, 10_000)

	queueMessages(t, s, 10_000, 100_000)
	n, large := drainPeakHeap(t, s)
	equal(t, "records at 110k", n, 110_000)

	// The read-ahead holds at most 256 records of about 200 bytes, so 11
	// times the queue must not add more than a few MiB of live heap.
	t.Logf("peak heap in use: %d KiB at 10k queued, %d KiB at 110k", small>>10, large>>10)
	if large > small+4<<20 {
		t.Fatalf("heap in use grew from %d to %d bytes with 11 times the queue", small, large)
	}

	// Open reads counters from the meta bucket instead of scanning.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	s = openSpool(t, opts)
	elapsed := time.Since(start)
	equal(t, "messages after reopen", s.Stats().Messages, int64(110_000))
	t.Logf("Open with 110k queued took %v", elapsed)
	if elapsed > 2*time.Second {
		t.Fatalf("Open took %v with 110k queued, want well under 2s", elapsed)
	}
}
