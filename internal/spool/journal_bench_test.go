package spool

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mqspool/mqspool/internal/state"
)

// BenchmarkCommitDrain replays the journal of a QoS 1 drain with a full
// window: each commit records the packet identifiers of the next batch of
// messages and the PUBACKs of the batch sent a window earlier, as the
// event loop's group commit does. cpu-ns/msg is the process's CPU time
// per message, fsync included.
func BenchmarkCommitDrain(b *testing.B) {
	const queued, window = 20_000, 1000
	for _, size := range []int{100, 1024} {
		for _, perCommit := range []int{44, 150} {
			b.Run(fmt.Sprintf("payload=%d/batch=%d", size, perCommit), func(b *testing.B) {
				benchmarkCommitDrain(b, size, queued, perCommit, window)
			})
		}
	}
}

func benchmarkCommitDrain(b *testing.B, size, queued, perCommit, window int) {
	payload := []byte(strings.Repeat("p", size))
	var changes []state.Change
	var cpu time.Duration
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		s := openSpool(b, testOptions(b))
		for first := 0; first < queued; first += 1000 {
			f := batch("drain", first, 1000)
			for i := range f.Messages {
				f.Messages[i].Payload, f.Messages[i].QoS = payload, 1
			}
			mustAppend(b, s, f)
		}
		b.StartTimer()
		start := processCPU(b)

		for first := 0; first < queued+window; first += perCommit {
			changes = drainChanges(changes[:0], first, perCommit, window, queued)
			if err := s.Commit(changes); err != nil {
				b.Fatal(err)
			}
		}

		cpu += processCPU(b) - start
		b.StopTimer()
		if n := s.Stats().Messages; n != 0 {
			b.Fatalf("%d messages left after the drain, want 0", n)
		}
		s.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N*queued), "cpu-ns/msg")
}

// drainChanges appends the changes of the commit that starts sending at
// message first: the sent changes of up to n messages and the acked
// changes of the messages sent window messages before them.
func drainChanges(changes []state.Change, first, n, window, queued int) []state.Change {
	packetID := func(i int) uint16 { return uint16(i%(2*window) + 1) }
	for i := first; i < min(first+n, queued); i++ {
		changes = append(changes, state.Change{Kind: state.ChangeSent, PacketID: packetID(i), Seq: uint64(i + 1), QoS: 1, Order: uint64(i)})
	}
	for i := max(first-window, 0); i < min(first+n-window, queued); i++ {
		changes = append(changes, state.Change{Kind: state.ChangeAcked, PacketID: packetID(i), Seq: uint64(i + 1), QoS: 1, Order: uint64(i)})
	}
	return changes
}

// processCPU returns the user and system time the test process used so
// far.
func processCPU(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatalf("getrusage: %v", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
