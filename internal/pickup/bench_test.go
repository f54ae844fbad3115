package pickup

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mqspool/mqspool/internal/spool"
)

// countingStore counts appended files and keeps nothing, so a benchmark
// measures the pickup's own memory.
type countingStore struct{ files atomic.Int64 }

func (s *countingStore) AppendForget(files []spool.FileBatch, _ []spool.FileID) (int, error) {
	s.files.Add(int64(len(files)))
	return len(files), nil
}

func (s *countingStore) Forget([]spool.FileID) error { return nil }

func (s *countingStore) FileIDs() ([]spool.FileID, error) { return nil, nil }

func (s *countingStore) FileProgress(spool.FileID) (int, bool, error) { return 0, false, nil }

// BenchmarkPickup_Ingest ingests b.N files that are already in new/
// when the pickup starts. Run it with -benchtime=50000x for a large
// backlog.
func BenchmarkPickup_Ingest(b *testing.B) {
	opts := testOptions(b)
	store := &countingStore{}
	if _, err := New(opts, store); err != nil {
		b.Fatal(err)
	}
	for i := range b.N {
		dropFast(b, opts.Dir, fmt.Sprintf("bench/%d/f%07d", i%16, i), "payload")
	}

	b.ReportAllocs()
	b.ResetTimer()
	start(b, opts, store)
	waitFor(b, time.Hour, "all files appended", func() bool {
		return store.files.Load() == int64(b.N)
	})
}

// BenchmarkPickup_IngestJSONL ingests b.N .jsonl files of 100 lines of
// about 100 bytes each that are already in new/ when the pickup starts.
func BenchmarkPickup_IngestJSONL(b *testing.B) {
	opts := testOptions(b)
	store := &countingStore{}
	if _, err := New(opts, store); err != nil {
		b.Fatal(err)
	}
	line := `{"topic":"bench/jsonl","payload":"` + strings.Repeat("p", 60) + `","qos":1}` + "\n"
	file := strings.Repeat(line, 100)
	for i := range b.N {
		dropFast(b, opts.Dir, fmt.Sprintf("bench/%d/f%07d.jsonl", i%16, i), file)
	}

	b.ReportAllocs()
	b.ResetTimer()
	start(b, opts, store)
	waitFor(b, time.Hour, "all files appended", func() bool {
		return store.files.Load() == int64(b.N)
	})
}
