package test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/mqspool/mqspool/internal/control"
	"github.com/mqspool/mqspool/internal/message"
	"github.com/mqspool/mqspool/internal/spool"
	"github.com/mqspool/mqspool/test/harness"
)

// largeTestsEnv enables the tests that take many minutes and gigabytes;
// "make test-large" sets it.
const largeTestsEnv = "MQSPOOL_LARGE_TESTS"

// A daemon that starts on a large backlog under a 128 MiB memory cap must
// neither load the backlog into memory nor block on it. It starts at once
// and sends soon after the broker is up. While it drains, RssAnon stays
// low and flat and new files are still ingested.
func TestLarge_BacklogUnderMemoryCap(t *testing.T) {
	if os.Getenv(largeTestsEnv) == "" {
		t.Skipf("queues a million messages: set %s=1 or run make test-large", largeTestsEnv)
	}
	total := largeMessages(t)
	cg := harness.NewMemoryCgroup(t, 128<<20)
	broker := harness.StartBroker(t, "")
	broker.Stop()
	d := harness.NewDaemon(t, broker.URL(), "log:\n  level: info\n")
	d.DumpOnFailure()
	d.Wrap = cg.Wrap()

	begin := time.Now()
	prefillBacklog(t, d.DB, total)
	t.Logf("queued %d messages of 1 KiB in %s", total, time.Since(begin).Round(time.Second))

	begin = time.Now()
	d.Start()
	if took := time.Since(begin); took > 5*time.Second {
		t.Errorf("spool opened %s after start with %d queued, want under 5 s", took, total)
	}
	if peak := peakRSSAnon(d, 3*time.Second); peak > 64<<10 {
		t.Errorf("RssAnon peaked at %d KiB with %d queued and the broker down, want under 64 MiB", peak, total)
	}

	broker.Start()
	sub := harness.Subscribe(t, broker.Addr(), "large/new/#", 1)
	up := time.Now()
	harness.WaitFor(t, 5*time.Second, "first publish after the broker started", func() bool {
		st := largeStatus(t, d)
		return st != nil && st.Published > 0
	})
	t.Logf("first publish %s after the broker started", time.Since(up).Round(10*time.Millisecond))

	samples, newFiles, drained := drainWithNewFiles(t, d)
	if len(samples) < 8 {
		t.Fatalf("only %d RssAnon samples during the drain; queue more messages", len(samples))
	}
	checkFlat(t, samples, freePageIndexKiB(t, d.DB))

	// The new files are queued behind the backlog, so they arrive only
	// when it has drained within the window.
	if drained {
		harness.WaitFor(t, time.Minute, "the new files at the subscriber", func() bool { return sub.Count() >= newFiles })
		var got []string
		for _, m := range sub.Messages() {
			got = append(got, string(m.Payload))
		}
		want := make([]string, newFiles)
		for i := range want {
			want[i] = fmt.Sprintf("new-%03d", i)
		}
		if !slices.Equal(got[:newFiles], want) {
			t.Errorf("new files arrived as %v, want %v", got, want)
		}
	}

	if kills, err := cg.OOMKills(); err != nil {
		t.Logf("no OOM kill count: %v", err)
	} else if kills > 0 {
		t.Errorf("the kernel killed %d processes in the 128 MiB cgroup", kills)
	}
	if code := d.Stop(30 * time.Second); code != 0 {
		t.Errorf("mqspool exited with %d after the drain, want 0", code)
	}
}

// largeMessages returns the backlog size: MQSPOOL_LARGE_MESSAGES, or a
// million.
func largeMessages(t *testing.T) int {
	v := os.Getenv("MQSPOOL_LARGE_MESSAGES")
	if v == "" {
		return 1_000_000
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1000 {
		t.Fatalf("MQSPOOL_LARGE_MESSAGES=%q is invalid: use a count of at least 1000", v)
	}
	return n
}

// prefillBacklog stores total messages of 1 KiB on large/backlog through
// the spool's own API, a thousand per transaction.
func prefillBacklog(t *testing.T, path string, total int) {
	t.Helper()
	s, err := spool.Open(spool.Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	payload := bytes.Repeat([]byte("b"), 1024)
	for first := 0; first < total; first += 1000 {
		msgs := make([]message.Message, min(1000, total-first))
		for i := range msgs {
			msgs[i] = message.Message{Topic: "large/backlog", Payload: payload, QoS: 1}
		}
		id := spool.FileID{Ino: uint64(first + 1), Name: fmt.Sprintf("backlog-%d", first)}
		if _, err := s.Append([]spool.FileBatch{{ID: id, Messages: msgs}}); err != nil {
			t.Fatalf("append messages %d to %d: %v", first, first+len(msgs)-1, err)
		}
	}
}

// drainWindow bounds how long the test watches the drain. A million
// messages take longer than that; the window is enough to see memory grow.
const drainWindow = 3 * time.Minute

// drainWithNewFiles samples RssAnon every half second until the queue is
// empty or drainWindow has passed, and drops new files two seconds into
// the drain. It checks that the files leave new/ while the backlog is
// still draining. It returns the samples in KiB, the number of files
// dropped and whether the queue emptied.
func drainWithNewFiles(t *testing.T, d *harness.Daemon) (samples []int, newFiles int, drained bool) {
	t.Helper()
	newFiles = 100
	started := time.Now()
	dropped, ingested := false, false
	var first, last *control.Status
	for ; time.Since(started) < drainWindow; time.Sleep(500 * time.Millisecond) {
		st := largeStatus(t, d)
		if st == nil {
			t.Fatal("no status from the daemon during the drain")
		}
		if first == nil {
			first = st
		}
		last = st
		samples = append(samples, d.RSSAnonKiB())
		switch {
		case !dropped && time.Since(started) > 2*time.Second:
			for i := range newFiles {
				d.Drop(fmt.Sprintf("n-%03d.msg", i), []byte(fmt.Sprintf("Topic: large/new/x\nQoS: 1\n\nnew-%03d", i)))
			}
			dropped = true
		case dropped && !ingested && d.NewEmpty():
			ingested = true
			if st.QueueMessages <= int64(newFiles) {
				t.Errorf("new files were ingested only once the backlog had drained")
			}
		case dropped && ingested && st.QueueMessages == 0:
			drained = true
		}
		if drained {
			break
		}
	}
	if !ingested {
		t.Errorf("the files dropped during the drain were still in new/ after %s", drainWindow)
	}
	took := time.Since(started)
	t.Logf("published %d messages in %s (%.0f/s), %d still queued",
		last.Published-first.Published, took.Round(time.Second),
		float64(last.Published-first.Published)/took.Seconds(), last.QueueMessages)
	return samples, newFiles, drained
}

// checkFlat fails the test when RssAnon grows during the drain: the mean
// of the last quarter of samples may exceed that of the first quarter by
// at most 20 percent plus allowKiB, and no sample may reach 64 MiB.
func checkFlat(t *testing.T, samples []int, allowKiB float64) {
	t.Helper()
	quarter := len(samples) / 4
	first, last := mean(samples[:quarter]), mean(samples[len(samples)-quarter:])
	t.Logf("RssAnon during the drain: first quarter %.0f KiB, last quarter %.0f KiB, peak %d KiB, allowance for free pages %.0f KiB",
		first, last, slices.Max(samples), allowKiB)
	if last > first*1.2+allowKiB {
		t.Errorf("RssAnon grew from %.0f KiB to %.0f KiB during the drain, want within 20 percent plus %.0f KiB",
			first, last, allowKiB)
	}
	if peak := slices.Max(samples); peak >= 64<<10 {
		t.Errorf("RssAnon peaked at %d KiB during the drain, want under 64 MiB", peak)
	}
}

// freePageIndexKiB bounds the memory of bbolt's index of free pages, which
// grows with every page a drain frees until new messages reuse it: at most
// one entry of about 64 bytes per 4 KiB page of the database file.
func freePageIndexKiB(t *testing.T, db string) float64 {
	t.Helper()
	info, err := os.Stat(db)
	if err != nil {
		t.Fatal(err)
	}
	return float64(info.Size()/4096*64) / 1024
}

func mean(values []int) float64 {
	sum := 0
	for _, v := range values {
		sum += v
	}
	return float64(sum) / float64(len(values))
}

// peakRSSAnon samples the daemon's RssAnon every 100 ms for span.
func peakRSSAnon(d *harness.Daemon, span time.Duration) int {
	peak := 0
	for end := time.Now().Add(span); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		peak = max(peak, d.RSSAnonKiB())
	}
	return peak
}

func largeStatus(t *testing.T, d *harness.Daemon) *control.Status {
	t.Helper()
	resp, err := control.Send(context.Background(), d.Socket, control.Request{Command: control.CommandStatus})
	if err != nil {
		t.Logf("status: %v", err)
		return nil
	}
	return resp.Status
}
