package daemon

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mqspool/mqspool/internal/config"
	"github.com/mqspool/mqspool/internal/eventloop"
	"github.com/mqspool/mqspool/internal/inbox"
	"github.com/mqspool/mqspool/internal/message"
)

func TestDownlink_Route(t *testing.T) {
	dl := &downlink{subs: loopSubscriptions([]config.Subscription{
		{Filter: "cmd/#"}, {Filter: "cmd/special/+"}, {Filter: "other/+"},
	})}
	cases := []struct {
		name  string
		topic string
		ids   []int
		want  []routeTarget
	}{
		{"identifier wins over first match", "cmd/special/x", []int{2}, []routeTarget{{1, 2}}},
		{"first match without identifier", "cmd/special/x", nil, []routeTarget{{0, 0}}},
		{"identifier out of range", "other/a", []int{9}, []routeTarget{{2, 0}}},
		{"identifier whose filter does not match", "other/a", []int{1}, []routeTarget{{2, 0}}},
		{"no match", "nothing/here", nil, nil},
		{"two identifiers", "cmd/special/x", []int{1, 2}, []routeTarget{{0, 1}, {1, 2}}},
		{"two identifiers in broker order", "cmd/special/x", []int{2, 1}, []routeTarget{{1, 2}, {0, 1}}},
		{"repeated identifier", "cmd/special/x", []int{2, 2}, []routeTarget{{1, 2}}},
		{"one of two identifiers does not match", "cmd/special/x", []int{3, 2}, []routeTarget{{1, 2}}},
		{"identifier 0 ignored", "cmd/special/x", []int{0, 2}, []routeTarget{{1, 2}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := &eventloop.Incoming{Message: message.Message{Topic: c.topic}, SubscriptionIdentifiers: c.ids}
			if got := dl.route(in); !slices.Equal(got, c.want) {
				t.Errorf("route = %v, want %v", got, c.want)
			}
		})
	}
}

// The systemd status line names inboxes that hold acknowledgements.
func TestDownlink_HeldSummary(t *testing.T) {
	full := filepath.Join(t.TempDir(), "full")
	if err := os.MkdirAll(filepath.Join(full, "new"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(full, "new", "a.msg"), []byte("Topic: a\n\nx"), 0o644); err != nil {
		t.Fatal(err)
	}
	blocked := filepath.Join(t.TempDir(), "blocked")
	if err := os.WriteFile(blocked, []byte("a file where the inbox goes"), 0o644); err != nil {
		t.Fatal(err)
	}
	ok := filepath.Join(t.TempDir(), "ok")

	dl := &downlink{inboxes: []*inbox.Inbox{
		openInbox(t, inbox.Options{Dir: ok, MaxFiles: 10}),
	}}
	if got := dl.heldSummary(); got != "" {
		t.Errorf("summary %q with a working inbox, want none", got)
	}

	dl.inboxes = append(dl.inboxes,
		openInbox(t, inbox.Options{Dir: full, MaxFiles: 1}),
		openInbox(t, inbox.Options{Dir: blocked, MaxFiles: 1}),
	)
	if got, want := dl.heldSummary(), "1 inbox full, 1 inbox unusable, acknowledgements held"; got != want {
		t.Errorf("summary %q, want %q", got, want)
	}
}

func openInbox(t *testing.T, opts inbox.Options) *inbox.Inbox {
	t.Helper()
	in, err := inbox.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close() })
	return in
}

// startDownlink runs a downlink with one inbox per filter, in dirs, and
// returns it.
func startDownlink(t *testing.T, filters, dirs []string, maxFiles int) *downlink {
	t.Helper()
	var subs []config.Subscription
	dl := &downlink{log: slog.New(slog.DiscardHandler)}
	for i, filter := range filters {
		subs = append(subs, config.Subscription{Filter: filter, Dir: dirs[i]})
		dl.inboxes = append(dl.inboxes, openInbox(t, inbox.Options{
			Dir: dirs[i], Filter: filter, MaxFiles: maxFiles, PollInterval: 20 * time.Millisecond,
		}))
	}
	dl.subs = loopSubscriptions(subs)
	stop := dl.start()
	t.Cleanup(stop)
	return dl
}

// newFileCount returns how many files dir/new contains, 0 when it cannot
// be read.
func newFileCount(dir string) int {
	entries, err := os.ReadDir(filepath.Join(dir, "new"))
	if err != nil {
		return 0
	}
	return len(entries)
}

// ackRecorder is the acknowledgement side of a fake eventloop.Incoming.
// At each release it records the files in the inboxes' new/ directories.
type ackRecorder struct {
	dirs     []string
	mu       sync.Mutex
	releases [][]int // files in each of dirs at each release
	declines int
}

func (r *ackRecorder) incoming(topic string, qos byte, ids ...int) *eventloop.Incoming {
	return &eventloop.Incoming{
		PacketID:                1,
		Message:                 message.Message{Topic: topic, QoS: qos, Payload: []byte("21.5")},
		SubscriptionIdentifiers: ids,
		Release: func() {
			var counts []int
			for _, dir := range r.dirs {
				counts = append(counts, newFileCount(dir))
			}
			r.mu.Lock()
			r.releases = append(r.releases, counts)
			r.mu.Unlock()
		},
		Decline: func() {
			r.mu.Lock()
			r.declines++
			r.mu.Unlock()
		},
	}
}

func (r *ackRecorder) counts() (releases [][]int, declines int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.releases), r.declines
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// readSubscriptionIdentifier returns the Subscription-Identifier header
// of the only file in dir/new.
func readSubscriptionIdentifier(t *testing.T, dir string) string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(dir, "new"))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Fatalf("%s/new contains %d files, want 1", dir, len(entries))
	}
	data, err := os.ReadFile(filepath.Join(dir, "new", entries[0].Name()))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(data)) {
		if value, ok := strings.CutPrefix(line, "Subscription-Identifier: "); ok {
			return strings.TrimSpace(value)
		}
	}
	return ""
}

// One PUBLISH with the identifiers of two overlapping subscriptions is
// written into both inboxes and released once, after both files are in
// new/.
func TestDownlink_SeveralIdentifiersFillEveryInbox(t *testing.T) {
	for _, qos := range []byte{1, 2} {
		t.Run(fmt.Sprintf("qos %d", qos), func(t *testing.T) {
			dirs := []string{filepath.Join(t.TempDir(), "all"), filepath.Join(t.TempDir(), "temp")}
			dl := startDownlink(t, []string{"sensors/#", "sensors/temp"}, dirs, 0)
			r := &ackRecorder{dirs: dirs}

			dl.deliver(r.incoming("sensors/temp", qos, 1, 2))
			requireOneRelease(t, r)
			if got := readSubscriptionIdentifier(t, dirs[0]); got != "1" {
				t.Errorf("first inbox file has Subscription-Identifier %q, want 1", got)
			}
			if got := readSubscriptionIdentifier(t, dirs[1]); got != "2" {
				t.Errorf("second inbox file has Subscription-Identifier %q, want 2", got)
			}
		})
	}
}

// An inbox that holds its copy, because it is full or cannot be written,
// holds the acknowledgement of a PUBLISH that the other inbox stored.
func TestDownlink_HeldInboxHoldsSharedAck(t *testing.T) {
	cases := []struct {
		name  string
		block func(t *testing.T, dir string) // makes the inbox in dir hold
		clear func(t *testing.T, dir string) // gives it room again
	}{
		{"full", func(t *testing.T, dir string) {
			if err := os.MkdirAll(filepath.Join(dir, "new"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "new", "old.msg"), []byte("Topic: a\n\nx"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, func(t *testing.T, dir string) {
			if err := os.Remove(filepath.Join(dir, "new", "old.msg")); err != nil {
				t.Fatal(err)
			}
		}},
		{"unusable", func(t *testing.T, dir string) {
			if err := os.WriteFile(dir, []byte("a file where the inbox goes"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, func(t *testing.T, dir string) {
			if err := os.Remove(dir); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dirs := []string{filepath.Join(t.TempDir(), "all"), filepath.Join(t.TempDir(), "temp")}
			c.block(t, dirs[1])
			dl := startDownlink(t, []string{"sensors/#", "sensors/temp"}, dirs, 1)
			r := &ackRecorder{dirs: dirs}

			dl.deliver(r.incoming("sensors/temp", 1, 1, 2))
			waitUntil(t, "the first inbox's file", func() bool { return newFileCount(dirs[0]) == 1 })
			time.Sleep(200 * time.Millisecond)
			if releases, _ := r.counts(); len(releases) != 0 {
				t.Fatalf("released %d times while the second inbox holds its copy, want 0", len(releases))
			}

			c.clear(t, dirs[1])
			requireOneRelease(t, r)
		})
	}
}

// When the daemon stops while one inbox holds its copy, the message is
// declined once and never released, although the other inbox stored it:
// the broker sends it again after the restart.
func TestDownlink_DeclinedCopyDeclinesMessage(t *testing.T) {
	dirs := []string{filepath.Join(t.TempDir(), "all"), filepath.Join(t.TempDir(), "temp")}
	if err := os.MkdirAll(filepath.Join(dirs[1], "new"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dirs[1], "new", "old.msg"), []byte("Topic: a\n\nx"), 0o644); err != nil {
		t.Fatal(err)
	}
	dl := startDownlink(t, []string{"sensors/#", "sensors/temp"}, dirs, 1)
	r := &ackRecorder{dirs: dirs}

	dl.deliver(r.incoming("sensors/temp", 2, 1, 2))
	waitUntil(t, "the first inbox's file", func() bool { return newFileCount(dirs[0]) == 1 })
	dl.stopWaiting()
	waitUntil(t, "the decline", func() bool { _, declines := r.counts(); return declines > 0 })
	time.Sleep(100 * time.Millisecond)

	releases, declines := r.counts()
	if declines != 1 {
		t.Errorf("declined %d times, want 1", declines)
	}
	if len(releases) != 0 {
		t.Errorf("released %d times, want 0", len(releases))
	}
}

// requireOneRelease waits for r's release and checks that it came once,
// without a decline, when each of the two inboxes held its file.
func requireOneRelease(t *testing.T, r *ackRecorder) {
	t.Helper()
	waitUntil(t, "the release", func() bool { releases, _ := r.counts(); return len(releases) > 0 })
	time.Sleep(100 * time.Millisecond) // let a second release show up

	releases, declines := r.counts()
	if len(releases) != 1 {
		t.Fatalf("released %d times, want 1", len(releases))
	}
	if want := []int{1, 1}; !slices.Equal(releases[0], want) {
		t.Errorf("files in new/ at the release %v, want %v", releases[0], want)
	}
	if declines != 0 {
		t.Errorf("declined %d times, want 0", declines)
	}
}
