package inbox

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mqspool/mqspool/internal/format"
	"github.com/mqspool/mqspool/internal/message"
)

func openTest(t *testing.T, opts Options) *Inbox {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	opts.PollInterval = 20 * time.Millisecond
	in, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close() })
	return in
}

func runTest(t *testing.T, in *Inbox) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { in.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

func newFiles(t *testing.T, in *Inbox) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(in.Dir(), "new"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func delivery(topic, payload string, qos byte, released *atomic.Int32) Delivery {
	return Delivery{
		Message:    message.Message{Topic: topic, Payload: []byte(payload), QoS: qos},
		PacketID:   uint16(len(payload)),
		ReceivedAt: time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC),
		Release:    func() { released.Add(1) },
	}
}

func TestInbox_Write_HeadersAndPayload(t *testing.T) {
	in := openTest(t, Options{})
	runTest(t, in)
	var released atomic.Int32
	d := delivery("cmd/a", "hello\nworld", 1, &released)
	d.Message.ContentType = "text/plain"
	d.Message.UserProperties = []message.UserProperty{{Key: "k", Value: "v"}, {Key: "k", Value: "w"}}
	d.Message.CorrelationData = []byte{0, 1}
	d.Dup = true
	d.SubscriptionIdentifier = 3
	in.Enqueue(d)
	waitFor(t, "release", func() bool { return released.Load() == 1 })

	names := newFiles(t, in)
	if len(names) != 1 {
		t.Fatalf("new/ holds %v, want one file", names)
	}
	data, err := os.ReadFile(filepath.Join(in.Dir(), "new", names[0]))
	if err != nil {
		t.Fatal(err)
	}
	m, _, err := format.ParseMsg(data)
	if err != nil {
		t.Fatalf("stored file does not parse: %v\n%s", err, data)
	}
	if m.Topic != "cmd/a" || string(m.Payload) != "hello\nworld" || m.QoS != 1 || m.ContentType != "text/plain" {
		t.Errorf("stored message = %+v", m)
	}
	if len(m.UserProperties) != 2 || m.UserProperties[1].Value != "w" {
		t.Errorf("user properties = %v", m.UserProperties)
	}
	for _, h := range []string{"Subscription-Identifier: 3\n", "Received-At: 2026-05-06T07:08:09Z\n", "Dup: true\n"} {
		if !strings.Contains(string(data), h) {
			t.Errorf("file lacks header %q:\n%s", h, data)
		}
	}
	if st := in.Stats(); st.Received != 1 || st.Duplicates != 1 || st.BacklogFiles != 1 {
		t.Errorf("stats = %+v", st)
	}
	if entries, _ := os.ReadDir(filepath.Join(in.Dir(), "tmp")); len(entries) != 0 {
		t.Errorf("tmp/ is not empty: %v", entries)
	}
}

// A QoS 2 redelivery after a restart finds the file the earlier process
// wrote, and one whose file a consumer took is written anew.
func TestInbox_Write_QoS2RedeliveryAfterRestart(t *testing.T) {
	dir := t.TempDir()
	first := openTest(t, Options{Dir: dir})
	var released atomic.Int32
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { first.Run(ctx); close(done) }()
	kept := delivery("q/2", "kept", 2, &released)
	taken := delivery("q/2", "taken away", 2, &released)
	first.Enqueue(kept)
	first.Enqueue(taken)
	waitFor(t, "two releases", func() bool { return released.Load() == 2 })
	cancel()
	<-done
	first.Close()
	names := newFiles(t, first)
	for _, name := range names {
		data, _ := os.ReadFile(filepath.Join(dir, "new", name))
		if strings.HasSuffix(string(data), "taken away") {
			os.Remove(filepath.Join(dir, "new", name))
		}
	}

	second := openTest(t, Options{Dir: dir})
	runTest(t, second)
	kept.Dup, taken.Dup = true, true
	second.Enqueue(kept)
	second.Enqueue(taken)
	waitFor(t, "two more releases", func() bool { return released.Load() == 4 })
	if got := newFiles(t, second); len(got) != 2 {
		t.Errorf("new/ holds %v, want the kept file replaced and the taken one written anew", got)
	}
	if st := second.Stats(); st.Replaced != 1 {
		t.Errorf("replaced = %d, want 1", st.Replaced)
	}
}

// Within one process the loop acknowledges a redelivery of a flow it
// tracks without an event. A QoS 2 message with Dup set and the flow key
// of a file this process wrote is therefore a later message with the
// same packet identifier, topic and payload, and it gets its own file.
func TestInbox_QoS2SameKeyKept(t *testing.T) {
	in := openTest(t, Options{})
	runTest(t, in)
	var released atomic.Int32
	first := delivery("q/2", "once", 2, &released)
	in.Enqueue(first)
	waitFor(t, "first release", func() bool { return released.Load() == 1 })

	again := first
	again.Dup = true
	in.Enqueue(again)
	waitFor(t, "second release", func() bool { return released.Load() == 2 })
	if names := newFiles(t, in); len(names) != 2 {
		t.Fatalf("new/ holds %v, want two files", names)
	}
	if st := in.Stats(); st.Replaced != 0 {
		t.Errorf("replaced = %d, want 0", st.Replaced)
	}

	// A QoS 1 redelivery is a message of its own: at least once.
	q1 := delivery("q/1", "twice", 1, &released)
	in.Enqueue(q1)
	q1.Dup = true
	in.Enqueue(q1)
	waitFor(t, "qos 1 releases", func() bool { return released.Load() == 4 })
	if names := newFiles(t, in); len(names) != 4 {
		t.Errorf("new/ holds %v, want 4 files", names)
	}
}

func TestInbox_Limit_HoldsAndResumes(t *testing.T) {
	in := openTest(t, Options{MaxFiles: 2})
	runTest(t, in)
	var released atomic.Int32
	in.Enqueue(delivery("a", "1", 1, &released))
	in.Enqueue(delivery("a", "22", 2, &released))
	waitFor(t, "two releases", func() bool { return released.Load() == 2 })
	waitFor(t, "full flag", func() bool { return in.Stats().Full })

	in.Enqueue(delivery("a", "333", 1, &released))
	in.Enqueue(delivery("a", "0", 0, &released)) // dropped: full
	time.Sleep(100 * time.Millisecond)
	if n := released.Load(); n != 2 {
		t.Fatalf("released %d messages into a full inbox, want 2", n)
	}
	if st := in.Stats(); st.Dropped != 1 {
		t.Errorf("dropped = %d, want 1 qos 0 message", st.Dropped)
	}

	// A consumer takes a file: the held message is written and released.
	names := newFiles(t, in)
	if err := os.Remove(filepath.Join(in.Dir(), "new", names[0])); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "release after room", func() bool { return released.Load() == 3 })
	if names := newFiles(t, in); len(names) != 2 {
		t.Errorf("new/ holds %v, want 2 files", names)
	}
}

// An inbox that a consumer keeps at its limit fills up again and again.
// Only the first time within a minute is logged above debug level.
func TestInbox_Limit_FullLoggedOncePerMinute(t *testing.T) {
	var logs syncBuffer
	handler := slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})
	in := openTest(t, Options{MaxFiles: 1, Logger: slog.New(handler)})
	runTest(t, in)
	var released atomic.Int32
	in.Enqueue(delivery("a", "1", 1, &released))
	for i := range 3 {
		in.Enqueue(delivery("a", fmt.Sprint(i), 1, &released))
		waitFor(t, "the worker waiting for room", func() bool {
			return strings.Count(logs.String(), "inbox full") == i+1
		})
		if err := os.Remove(filepath.Join(in.Dir(), "new", newFiles(t, in)[0])); err != nil {
			t.Fatal(err)
		}
		want := int32(i + 2)
		waitFor(t, "release after room", func() bool { return released.Load() == want })
	}

	out := logs.String()
	if n := strings.Count(out, `level=WARN msg="inbox full`); n != 1 {
		t.Errorf("%d full warnings for three fills within a minute, want 1:\n%s", n, out)
	}
	if n := strings.Count(out, `level=INFO msg="inbox has room again`); n != 1 {
		t.Errorf("%d room again lines at info level, want 1:\n%s", n, out)
	}
}

// A fill within a minute of the last warning is logged at debug level,
// but a hold that then lasts more than a minute is logged as a warning.
func TestInbox_Limit_LongHoldWarns(t *testing.T) {
	var logs syncBuffer
	handler := slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})
	in := openTest(t, Options{MaxFiles: 1, Logger: slog.New(handler)})
	var clock atomic.Int64
	clock.Store(time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC).UnixNano())
	in.now = func() time.Time { return time.Unix(0, clock.Load()) }
	runTest(t, in)
	var released atomic.Int32
	in.Enqueue(delivery("a", "1", 1, &released))

	// The first fill warns; the consumer makes room at once.
	in.Enqueue(delivery("a", "22", 1, &released))
	waitFor(t, "the first full line", func() bool { return strings.Count(logs.String(), "inbox full") == 1 })
	if err := os.Remove(filepath.Join(in.Dir(), "new", newFiles(t, in)[0])); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "release after room", func() bool { return released.Load() == 2 })

	// The second fill, ten seconds later, is at debug level and lasts.
	clock.Add(int64(10 * time.Second))
	in.Enqueue(delivery("a", "333", 1, &released))
	waitFor(t, "the second full line", func() bool { return strings.Count(logs.String(), "inbox full") == 2 })
	if n := strings.Count(logs.String(), `level=WARN msg="inbox full`); n != 1 {
		t.Fatalf("%d full warnings after a fill within a minute, want 1:\n%s", n, logs.String())
	}

	clock.Add(int64(2 * time.Minute))
	waitFor(t, "a warning for the long hold", func() bool {
		return strings.Count(logs.String(), `level=WARN msg="inbox full`) == 2
	})
	if err := os.Remove(filepath.Join(in.Dir(), "new", newFiles(t, in)[0])); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "release after room", func() bool { return released.Load() == 3 })
	if n := strings.Count(logs.String(), `level=INFO msg="inbox has room again`); n != 2 {
		t.Errorf("%d room again lines at info level, want 2, one for each warning:\n%s", n, logs.String())
	}
}

// syncBuffer is a bytes.Buffer that the worker and the test may use at
// once.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// A QoS 2 redelivery whose file an earlier process left in new/ replaces
// that file and adds nothing to the backlog, so a full inbox does not
// hold it. Held, it would wait for a consumer, and a consumer that took
// the earlier file meanwhile would get the message twice.
func TestInbox_Limit_QoS2ReplacementNotHeld(t *testing.T) {
	dir := t.TempDir()
	var released atomic.Int32
	d := delivery("q/2", "crash window", 2, &released)
	first := openTest(t, Options{Dir: dir})
	if err := first.write(d, &movedFile{}); err != nil {
		t.Fatal(err)
	}
	first.Close()

	second := openTest(t, Options{Dir: dir, MaxFiles: 1})
	if st := second.Stats(); !st.Full {
		t.Fatalf("inbox with %d of max 1 files not full", st.BacklogFiles)
	}
	runTest(t, second)
	d.Dup = true
	second.Enqueue(d)
	waitFor(t, "release of the redelivery", func() bool { return released.Load() == 1 })

	if names := newFiles(t, second); len(names) != 1 {
		t.Errorf("new/ contains %v, want the earlier file replaced", names)
	}
	if st := second.Stats(); st.Replaced != 1 {
		t.Errorf("replaced = %d, want 1", st.Replaced)
	}
}

func TestInbox_MaxBytes_Holds(t *testing.T) {
	in := openTest(t, Options{MaxBytes: 10})
	runTest(t, in)
	var released atomic.Int32
	in.Enqueue(delivery("a", "more than ten bytes of headers", 1, &released))
	waitFor(t, "first release", func() bool { return released.Load() == 1 })
	in.Enqueue(delivery("a", "x", 1, &released))
	time.Sleep(100 * time.Millisecond)
	if n := released.Load(); n != 1 {
		t.Errorf("released %d, want the second message held", n)
	}
}

func TestInbox_Open_RemovesTmpAndCounts(t *testing.T) {
	dir := t.TempDir()
	for _, sub := range []string{"tmp", "new"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(dir, "tmp", "half"), []byte("x"), 0o644)
	os.WriteFile(filepath.Join(dir, "new", "a.msg"), []byte("12345"), 0o644)
	os.WriteFile(filepath.Join(dir, "new", ".hidden"), []byte("x"), 0o644)
	in := openTest(t, Options{Dir: dir})
	if entries, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(entries) != 0 {
		t.Errorf("tmp/ still holds %v", entries)
	}
	if st := in.Stats(); st.BacklogFiles != 1 || st.BacklogBytes != 5 {
		t.Errorf("backlog = %d files %d bytes, want 1 and 5", st.BacklogFiles, st.BacklogBytes)
	}
}

func TestInbox_Write_UnrepresentableGoesToFailed(t *testing.T) {
	in := openTest(t, Options{})
	runTest(t, in)
	var released atomic.Int32
	d := delivery("a", "payload", 1, &released)
	d.Message.UserProperties = []message.UserProperty{{Key: "a=b", Value: "c"}}
	in.Enqueue(d)
	waitFor(t, "release", func() bool { return released.Load() == 1 })
	data, err := os.ReadDir(filepath.Join(in.Dir(), "failed"))
	if err != nil || len(data) != 2 {
		t.Fatalf("failed/ holds %v (%v), want the payload and its reason", data, err)
	}
	if st := in.Stats(); st.Failed != 1 || st.Received != 0 {
		t.Errorf("stats = %+v", st)
	}
}

// The reason for a message in failed/ is read by the inbox's consumer,
// who cannot change the message, so it gives no fix meant for a producer.
func TestInbox_Write_FailedReasonForConsumer(t *testing.T) {
	cases := []struct {
		name, topic, contentType, want string
	}{
		{"topic with spaces", "dl/sp ace/ ", "", "starts or ends with a space or tab"},
		{"control character", "dl/a", "text\x01plain", "contains U+0001 at byte 4"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := openTest(t, Options{})
			runTest(t, in)
			var released atomic.Int32
			d := delivery(tc.topic, "payload", 1, &released)
			d.Message.ContentType = tc.contentType
			in.Enqueue(d)
			waitFor(t, "release", func() bool { return released.Load() == 1 })

			reasons, err := filepath.Glob(filepath.Join(in.Dir(), "failed", "*.reason"))
			if err != nil || len(reasons) != 1 {
				t.Fatalf("reason files %v (%v), want one", reasons, err)
			}
			data, err := os.ReadFile(reasons[0])
			if err != nil {
				t.Fatal(err)
			}
			reason := string(data)
			for _, want := range []string{fmt.Sprintf("topic %q", tc.topic), tc.want, "acknowledged"} {
				if !strings.Contains(reason, want) {
					t.Errorf("reason %q does not contain %q", reason, want)
				}
			}
			if strings.Contains(reason, "remove it") {
				t.Errorf("reason %q gives the consumer a producer's fix", reason)
			}
		})
	}
}

func TestInbox_Enqueue_NeverBlocks(t *testing.T) {
	in := openTest(t, Options{QueueSize: 2})
	var released atomic.Int32
	done := make(chan struct{})
	go func() {
		// No worker runs: QoS 1 and 2 queue past QueueSize, and QoS 0
		// is dropped once QueueSize QoS 0 messages wait.
		for i := range 5 {
			in.Enqueue(delivery("a", fmt.Sprint(i), byte(1+i%2), &released))
		}
		for i := range 3 {
			in.Enqueue(delivery("a", fmt.Sprint(5+i), 0, &released))
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Enqueue blocked with no worker running")
	}
	if st := in.Stats(); st.Dropped != 1 {
		t.Errorf("dropped = %d, want the third qos 0 message", st.Dropped)
	}

	runTest(t, in)
	waitFor(t, "7 releases", func() bool { return released.Load() == 7 })
	names := newFiles(t, in)
	if len(names) != 7 {
		t.Fatalf("new/ holds %d files, want 7", len(names))
	}
	for i, name := range names {
		data, _ := os.ReadFile(filepath.Join(in.Dir(), "new", name))
		m, _, err := format.ParseMsg(data)
		if err != nil || string(m.Payload) != fmt.Sprint(i) {
			t.Errorf("file %d %s payload %q (%v), want %d in arrival order", i, name, m.Payload, err, i)
		}
	}
}

func TestInbox_Write_NeverOverwritesAName(t *testing.T) {
	in := openTest(t, Options{})
	fixed := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	in.now = func() time.Time { return fixed }

	// The name the inbox makes next is taken, as after a clock set back.
	var earlier namer
	taken := earlier.next(fixed, "")
	path := filepath.Join(in.Dir(), "new", taken)
	if err := os.WriteFile(path, []byte("earlier message"), 0o644); err != nil {
		t.Fatal(err)
	}
	runTest(t, in)
	var released atomic.Int32
	in.Enqueue(delivery("a", "later", 1, &released))
	waitFor(t, "release", func() bool { return released.Load() == 1 })
	if data, _ := os.ReadFile(path); string(data) != "earlier message" {
		t.Errorf("existing file overwritten: %q", data)
	}
	if n := len(newFiles(t, in)); n != 2 {
		t.Errorf("new/ holds %d files, want 2", n)
	}
}

// A QoS 1 message the broker sent again is not stored but released, so
// the loop stops counting it. One whose fate is unknown waits until it is
// known, and is stored when the broker did not send it again.
func TestInbox_RedeliveredQoS1(t *testing.T) {
	in := openTest(t, Options{})
	runTest(t, in)
	var released atomic.Int32
	again := delivery("cmd/a", "sent again", 1, &released)
	again.Redelivered = func() (bool, bool) { return true, true }
	in.Enqueue(again)

	var known atomic.Bool
	waiting := delivery("cmd/a", "waits", 1, &released)
	waiting.Redelivered = func() (bool, bool) { return false, known.Load() }
	in.Enqueue(waiting)
	waitFor(t, "the release of the copy sent again", func() bool { return released.Load() == 1 })
	time.Sleep(100 * time.Millisecond)
	if names := newFiles(t, in); len(names) != 0 {
		t.Fatalf("new/ holds %v before the next connection, want nothing", names)
	}

	known.Store(true)
	waitFor(t, "the waiting message", func() bool { return released.Load() == 2 })
	if names := newFiles(t, in); len(names) != 1 {
		t.Fatalf("new/ holds %v, want only the message the broker did not send again", names)
	}
	if st := in.Stats(); st.Skipped != 1 || st.Received != 1 {
		t.Errorf("stats = %+v, want 1 skipped and 1 received", st)
	}
}

// An inbox removed while the daemon runs is created again at the next
// write, and the failure shows in the stats while it lasts.
func TestInbox_RemovedDirCreatedAgain(t *testing.T) {
	in := openTest(t, Options{})
	runTest(t, in)
	if err := os.RemoveAll(in.Dir()); err != nil {
		t.Fatal(err)
	}
	var released atomic.Int32
	in.Enqueue(delivery("cmd/a", "after", 1, &released))
	waitFor(t, "release", func() bool { return released.Load() == 1 })

	if names := newFiles(t, in); len(names) != 1 {
		t.Fatalf("new/ holds %v, want the message", names)
	}
	if st := in.Stats(); st.WriteError != "" {
		t.Errorf("write error %q after a successful write, want none", st.WriteError)
	}
}

// An inbox whose directory cannot be created opens anyway, reports the
// error in its stats and holds the acknowledgement. Once the path is
// usable, the message is written and released.
func TestInbox_UncreatableDirHoldsAck(t *testing.T) {
	parent := t.TempDir()
	blocker := filepath.Join(parent, "inbox")
	if err := os.WriteFile(blocker, []byte("a file where the inbox goes"), 0o644); err != nil {
		t.Fatal(err)
	}
	in := openTest(t, Options{Dir: blocker})
	if st := in.Stats(); !strings.Contains(st.WriteError, blocker) {
		t.Fatalf("stats error %q, want one naming %s", st.WriteError, blocker)
	}
	runTest(t, in)
	var released atomic.Int32
	in.Enqueue(delivery("cmd/a", "held", 2, &released))
	time.Sleep(100 * time.Millisecond)
	if released.Load() != 0 {
		t.Fatal("message released although it could not be written")
	}

	if err := os.Remove(blocker); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "release", func() bool { return released.Load() == 1 })
	if names := newFiles(t, in); len(names) != 1 {
		t.Fatalf("new/ holds %v, want the held message", names)
	}
	if st := in.Stats(); st.WriteError != "" {
		t.Errorf("write error %q after the path was freed, want none", st.WriteError)
	}
}

// Retries that fail the same way log once, although each names another
// temporary file.
func TestInbox_FailingWritesLoggedOnce(t *testing.T) {
	var logs bytes.Buffer
	in := openTest(t, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	for range 3 {
		in.failed(fmt.Errorf("create %s: %w", filepath.Join(in.Dir(), "tmp", fmt.Sprint(time.Now().UnixNano())), syscall.EROFS), true)
	}
	if n := strings.Count(logs.String(), "inbox unusable"); n != 1 {
		t.Errorf("%d log lines for three failures of one kind, want 1:\n%s", n, logs.String())
	}
	in.failed(fmt.Errorf("create x: %w", syscall.ENOSPC), true)
	if n := strings.Count(logs.String(), "inbox unusable"); n != 2 {
		t.Errorf("%d log lines after a new kind of failure, want 2", n)
	}
}

// While the worker waits for room, queued QoS 1 copies that the broker
// sent again are released and dropped, so they do not pile up.
func TestInbox_PrunesRedeliveredWhileFull(t *testing.T) {
	in := openTest(t, Options{MaxFiles: 1})
	runTest(t, in)
	var released atomic.Int32
	in.Enqueue(delivery("cmd/a", "fills", 1, &released))
	waitFor(t, "the first file", func() bool { return released.Load() == 1 })

	in.Enqueue(delivery("cmd/a", "waits for room", 1, &released))
	for i := range 3 {
		again := delivery("cmd/a", fmt.Sprint("resent ", i), 1, &released)
		again.Redelivered = func() (bool, bool) { return true, true }
		in.Enqueue(again)
	}
	waitFor(t, "the resent copies released", func() bool { return released.Load() == 4 })
	if st := in.Stats(); st.Skipped != 3 || st.Received != 1 {
		t.Errorf("stats = %+v, want 3 skipped and 1 received", st)
	}
}

// A QoS 1 message that waits for room while the broker sends it again on
// a resumed session is skipped once there is room, since the copy in
// flight is stored instead.
func TestInbox_HeldMessageResentSkipped(t *testing.T) {
	var logs syncBuffer
	in := openTest(t, Options{MaxFiles: 1, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	runTest(t, in)
	var released atomic.Int32
	in.Enqueue(delivery("cmd/a", "fills", 1, &released))
	waitFor(t, "the first file", func() bool { return released.Load() == 1 })

	var resent atomic.Bool
	var checks atomic.Int32
	held := delivery("cmd/a", "waits for room", 1, &released)
	held.Redelivered = func() (bool, bool) {
		checks.Add(1)
		return resent.Load(), true
	}
	in.Enqueue(held)
	waitFor(t, "the worker waiting for room", func() bool {
		return checks.Load() > 0 && strings.Contains(logs.String(), "inbox full")
	})
	resent.Store(true)

	names := newFiles(t, in)
	if err := os.Remove(filepath.Join(in.Dir(), "new", names[0])); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the held release", func() bool { return released.Load() == 2 })
	st := in.Stats()
	if st.Received != 1 {
		t.Errorf("received = %d, want 1: the resent message was stored", st.Received)
	}
	if st.Skipped != 1 {
		t.Errorf("skipped = %d, want 1", st.Skipped)
	}
	if got := newFiles(t, in); len(got) != 0 {
		t.Errorf("new/ holds %v, want nothing", got)
	}
}

// After StopWaiting, a message held by a full inbox and the queued ones
// behind it are declined, not released.
func TestInbox_StopWaitingDeclinesHeld(t *testing.T) {
	in := openTest(t, Options{MaxFiles: 1})
	runTest(t, in)
	var released, declined atomic.Int32
	withDecline := func(payload string) Delivery {
		d := delivery("a", payload, 1, &released)
		d.Decline = func() { declined.Add(1) }
		return d
	}
	in.Enqueue(withDecline("1"))
	waitFor(t, "the first release", func() bool { return released.Load() == 1 })
	in.Enqueue(withDecline("22"))
	in.Enqueue(withDecline("333"))
	time.Sleep(100 * time.Millisecond)

	in.StopWaiting()
	waitFor(t, "two declines", func() bool { return declined.Load() == 2 })
	if n := released.Load(); n != 1 {
		t.Errorf("released %d messages, want 1: the others never had room", n)
	}
	if names := newFiles(t, in); len(names) != 1 {
		t.Errorf("new/ holds %v, want the first message only", names)
	}
}

// After StopWaiting has declined a message, a later message on its topic
// is declined even when the inbox has room again, so that it is not
// stored before the declined one. Other topics are still written.
func TestInbox_StopWaitingKeepsTopicOrder(t *testing.T) {
	in := openTest(t, Options{MaxFiles: 1})
	runTest(t, in)
	var released, declined atomic.Int32
	withDecline := func(topic, payload string) Delivery {
		d := delivery(topic, payload, 1, &released)
		d.Decline = func() { declined.Add(1) }
		return d
	}
	in.Enqueue(withDecline("a", "1"))
	waitFor(t, "the first release", func() bool { return released.Load() == 1 })
	in.Enqueue(withDecline("a", "22"))
	in.StopWaiting()
	waitFor(t, "the held decline", func() bool { return declined.Load() == 1 })

	for _, name := range newFiles(t, in) {
		if err := os.Remove(filepath.Join(in.Dir(), "new", name)); err != nil {
			t.Fatal(err)
		}
	}
	in.Enqueue(withDecline("a", "333"))
	in.Enqueue(withDecline("b", "4444"))
	waitFor(t, "the release on topic b", func() bool { return released.Load() == 2 })
	if n := declined.Load(); n != 2 {
		t.Errorf("declined %d messages, want 2: the later one on topic a too", n)
	}
	names := newFiles(t, in)
	if len(names) != 1 {
		t.Fatalf("new/ holds %v, want the message on topic b only", names)
	}
	data, err := os.ReadFile(filepath.Join(in.Dir(), "new", names[0]))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), "Topic: b\n") {
		t.Errorf("new/ holds %q, want the message on topic b", data)
	}
}

// A QoS 1 or 2 copy of a PUBLISH that another inbox declined is declined
// too, without a file, because the broker sends the message again. A QoS
// 0 copy is still written, since the broker never sends it again.
func TestInbox_DeclinedElsewhereNotWritten(t *testing.T) {
	in := openTest(t, Options{})
	runTest(t, in)
	var released, declined atomic.Int32
	declinedCopy := func(payload string, qos byte) Delivery {
		d := delivery("a", payload, qos, &released)
		d.Decline = func() { declined.Add(1) }
		d.DeclinedElsewhere = func() bool { return true }
		return d
	}

	in.Enqueue(declinedCopy("1", 1))
	in.Enqueue(declinedCopy("22", 2))
	waitFor(t, "two declines", func() bool { return declined.Load() == 2 })
	in.Enqueue(declinedCopy("333", 0))
	waitFor(t, "the qos 0 release", func() bool { return released.Load() == 1 })

	names := newFiles(t, in)
	if len(names) != 1 {
		t.Fatalf("new/ holds %v, want the qos 0 message only", names)
	}
	data, err := os.ReadFile(filepath.Join(in.Dir(), "new", names[0]))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(string(data), "\n\n333") {
		t.Errorf("new/ holds %q, want the qos 0 message", data)
	}
	if n := declined.Load(); n != 2 {
		t.Errorf("declined %d messages, want 2", n)
	}
}

// The event loop gives QoS 0 messages a Decline that does nothing, and
// the broker never sends them again, so one on a topic with a declined
// message is still written.
func TestInbox_StopWaitingWritesQoS0(t *testing.T) {
	in := openTest(t, Options{MaxFiles: 1})
	runTest(t, in)
	var released, declined atomic.Int32
	withDecline := func(payload string, qos byte) Delivery {
		d := delivery("a", payload, qos, &released)
		d.Decline = func() { declined.Add(1) }
		return d
	}
	in.Enqueue(withDecline("1", 1))
	waitFor(t, "the first release", func() bool { return released.Load() == 1 })
	in.Enqueue(withDecline("22", 1))
	in.StopWaiting()
	waitFor(t, "the held decline", func() bool { return declined.Load() == 1 })

	for _, name := range newFiles(t, in) {
		if err := os.Remove(filepath.Join(in.Dir(), "new", name)); err != nil {
			t.Fatal(err)
		}
	}
	// A QoS 0 message that comes while the inbox counts as full is dropped.
	waitFor(t, "room in the inbox", func() bool { return !in.Stats().Full })
	in.Enqueue(withDecline("333", 0))
	waitFor(t, "the qos 0 message to be handled", func() bool {
		return released.Load() == 2 || declined.Load() == 2
	})
	if n := declined.Load(); n != 1 {
		t.Errorf("declined %d messages, want 1: a qos 0 message is not sent again", n)
	}
	names := newFiles(t, in)
	if len(names) != 1 {
		t.Fatalf("new/ holds %v, want the qos 0 message", names)
	}
	data, err := os.ReadFile(filepath.Join(in.Dir(), "new", names[0]))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(string(data), "\n333") {
		t.Errorf("new/ holds %q, want the qos 0 message", data)
	}
}

// After StopWaiting, a message that a usable inbox has room for is still
// written and released.
func TestInbox_StopWaitingStillWrites(t *testing.T) {
	in := openTest(t, Options{MaxFiles: 5})
	runTest(t, in)
	in.StopWaiting()
	var released, declined atomic.Int32
	d := delivery("a", "1", 1, &released)
	d.Decline = func() { declined.Add(1) }
	in.Enqueue(d)
	waitFor(t, "the release", func() bool { return released.Load() == 1 })
	if n := declined.Load(); n != 0 {
		t.Errorf("declined %d messages, want none", n)
	}
}

// After StopWaiting, a message for an inbox that cannot be written is
// declined instead of retried.
func TestInbox_StopWaitingDeclinesUnwritable(t *testing.T) {
	blocker := filepath.Join(t.TempDir(), "inbox")
	if err := os.WriteFile(blocker, []byte("a file where the inbox goes"), 0o644); err != nil {
		t.Fatal(err)
	}
	in := openTest(t, Options{Dir: blocker})
	runTest(t, in)
	var released, declined atomic.Int32
	d := delivery("a", "1", 2, &released)
	d.Decline = func() { declined.Add(1) }
	in.Enqueue(d)
	time.Sleep(100 * time.Millisecond)

	in.StopWaiting()
	waitFor(t, "the decline", func() bool { return declined.Load() == 1 })
	if n := released.Load(); n != 0 {
		t.Errorf("released %d messages, want none", n)
	}
}

// When new/ cannot be counted, the stats mark the backlog as stale
// instead of passing the last count off as current.
func TestInbox_BacklogStaleWhileUncountable(t *testing.T) {
	in := openTest(t, Options{})
	runTest(t, in)
	var released atomic.Int32
	in.Enqueue(delivery("a", "1", 1, &released))
	waitFor(t, "the release", func() bool { return released.Load() == 1 })
	if st := in.Stats(); st.BacklogFiles != 1 || st.BacklogStale {
		t.Fatalf("backlog %d files, stale %t; want 1 file, not stale", st.BacklogFiles, st.BacklogStale)
	}

	newDir := filepath.Join(in.Dir(), "new")
	if err := os.RemoveAll(newDir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(newDir, []byte("a file where new/ goes"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a stale backlog", func() bool { return in.Stats().BacklogStale })
	if st := in.Stats(); st.WriteError == "" {
		t.Errorf("no write error while new/ is a file")
	}

	if err := os.Remove(newDir); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a fresh count", func() bool { return !in.Stats().BacklogStale })
	if st := in.Stats(); st.BacklogFiles != 0 {
		t.Errorf("backlog %d files after new/ was emptied, want 0", st.BacklogFiles)
	}
}

// addFiles creates n message files in the inbox's new/, as a backlog.
func addFiles(t *testing.T, in *Inbox, n int) {
	t.Helper()
	for i := range n {
		name := filepath.Join(in.Dir(), "new", fmt.Sprintf("m%03d.msg", i))
		if err := os.WriteFile(name, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// setModTime sets the modification time of the inbox's new/.
func setModTime(t *testing.T, in *Inbox, mtime time.Time) {
	t.Helper()
	if err := os.Chtimes(filepath.Join(in.Dir(), "new"), mtime, mtime); err != nil {
		t.Fatal(err)
	}
}

// An idle inbox reads new/ in full only when new/ changed, because each
// full count costs a stat per file.
func TestInbox_Recount_SkipsUnchangedDir(t *testing.T) {
	in := openTest(t, Options{})
	addFiles(t, in, 3)
	setModTime(t, in, time.Now().Add(-time.Minute))
	in.recount()
	if in.files != 3 {
		t.Fatalf("backlog %d files, want 3", in.files)
	}

	before := in.fullCounts
	for range 5 {
		in.recount()
	}
	if n := in.fullCounts - before; n != 0 {
		t.Errorf("%d full counts of an unchanged new/, want 0", n)
	}

	// A consumer takes a file: the next recount counts new/ again.
	if err := os.Remove(filepath.Join(in.Dir(), "new", "m000.msg")); err != nil {
		t.Fatal(err)
	}
	in.recount()
	if in.files != 2 {
		t.Errorf("backlog %d files after a removal, want 2", in.files)
	}
	if n := in.fullCounts - before; n != 1 {
		t.Errorf("%d full counts after a removal, want 1", n)
	}
}

// A change within the timestamp tick of the last count leaves the
// modification time of new/ as it was, so a recent one is not trusted.
func TestInbox_Recount_RecentModTimeCountsAgain(t *testing.T) {
	in := openTest(t, Options{})
	addFiles(t, in, 3)
	mtime := time.Now()
	setModTime(t, in, mtime)
	in.recount()

	if err := os.Remove(filepath.Join(in.Dir(), "new", "m000.msg")); err != nil {
		t.Fatal(err)
	}
	setModTime(t, in, mtime)
	in.recount()
	if in.files != 2 {
		t.Errorf("backlog %d files after a removal in the same tick, want 2", in.files)
	}
}

// However old the modification time, the backlog is counted in full
// again after maxCountAge.
func TestInbox_Recount_FullAfterMaxCountAge(t *testing.T) {
	in := openTest(t, Options{})
	setModTime(t, in, time.Now().Add(-time.Minute))
	in.recount()
	before := in.fullCounts
	in.countedAt = in.countedAt.Add(-maxCountAge)
	in.recount()
	if n := in.fullCounts - before; n != 1 {
		t.Errorf("%d full counts after maxCountAge, want 1", n)
	}
}

// A full inbox looks for room more often than the poll interval, so a
// consumer that keeps up is not held to max_files messages a second.
func TestInbox_Limit_RoomFoundBeforePollInterval(t *testing.T) {
	in, err := Open(Options{Dir: t.TempDir(), MaxFiles: 1, PollInterval: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close() })
	runTest(t, in)
	var released atomic.Int32
	in.Enqueue(delivery("a", "1", 1, &released))
	waitFor(t, "first release", func() bool { return released.Load() == 1 })
	in.Enqueue(delivery("a", "22", 1, &released))
	waitFor(t, "full flag", func() bool { return in.Stats().Full })

	names := newFiles(t, in)
	if err := os.Remove(filepath.Join(in.Dir(), "new", names[0])); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	waitFor(t, "release after room", func() bool { return released.Load() == 2 })
	if waited := time.Since(start); waited >= 4*time.Second {
		t.Errorf("room found after %s, want well within the 5s poll interval", waited)
	}
}
