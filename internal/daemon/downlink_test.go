package daemon

import (
	"os"
	"path/filepath"
	"testing"

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
		name      string
		topic     string
		ids       []int
		wantIndex int
		wantID    int
	}{
		{"identifier wins over first match", "cmd/special/x", []int{2}, 1, 2},
		{"first match without identifier", "cmd/special/x", nil, 0, 0},
		{"identifier out of range", "other/a", []int{9}, 2, 0},
		{"identifier whose filter does not match", "other/a", []int{1}, 2, 0},
		{"no match", "nothing/here", nil, -1, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := &eventloop.Incoming{Message: message.Message{Topic: c.topic}, SubscriptionIdentifiers: c.ids}
			index, id := dl.route(in)
			if index != c.wantIndex {
				t.Errorf("index = %d, want %d", index, c.wantIndex)
			}
			if id != c.wantID {
				t.Errorf("identifier = %d, want %d", id, c.wantID)
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
