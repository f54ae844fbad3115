package inbox

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
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

func TestInbox_Write_QoS2RedeliveryReplaces(t *testing.T) {
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
	if names := newFiles(t, in); len(names) != 1 {
		t.Fatalf("new/ holds %v, want the redelivery to replace the first file", names)
	}
	if st := in.Stats(); st.Replaced != 1 {
		t.Errorf("replaced = %d, want 1", st.Replaced)
	}

	// A QoS 1 redelivery is a message of its own: at least once.
	q1 := delivery("q/1", "twice", 1, &released)
	in.Enqueue(q1)
	q1.Dup = true
	in.Enqueue(q1)
	waitFor(t, "qos 1 releases", func() bool { return released.Load() == 4 })
	if names := newFiles(t, in); len(names) != 3 {
		t.Errorf("new/ holds %v, want 3 files", names)
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

func TestInbox_Enqueue_NeverBlocks(t *testing.T) {
	in := openTest(t, Options{QueueSize: 2})
	var released atomic.Int32
	done := make(chan struct{})
	go func() {
		// No worker runs: QoS 1 and 2 queue past QueueSize, QoS 0 is dropped.
		for i := range 5 {
			in.Enqueue(delivery("a", fmt.Sprint(i), byte(1+i%2), &released))
		}
		in.Enqueue(delivery("a", "zero", 0, &released))
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Enqueue blocked with no worker running")
	}
	if st := in.Stats(); st.Dropped != 1 {
		t.Errorf("dropped = %d, want the qos 0 message", st.Dropped)
	}

	runTest(t, in)
	waitFor(t, "5 releases", func() bool { return released.Load() == 5 })
	names := newFiles(t, in)
	if len(names) != 5 {
		t.Fatalf("new/ holds %d files, want 5", len(names))
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
