package pickup

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mqspool/mqspool/internal/message"
	"github.com/mqspool/mqspool/internal/spool"
)

func TestMatchSegments(t *testing.T) {
	tests := []struct {
		glob, rel string
		want      bool
	}{
		{"a/*", "a/f", true},
		{"a/*", "a/b/f", false},
		{"a/**", "a/b/c/f", true},
		{"a/**/f", "a/f", true},
		{"a/**/f", "a/x/y/f", true},
		{"**", "f", true},
		{"**/*.msg", "x/y.msg", true},
		{"**/*.msg", "x/y.jsonl", false},
		{"site?/*", "site1/f", true},
		{"b/*", "a/f", false},
	}
	for _, tt := range tests {
		got := matchSegments(strings.Split(tt.glob, "/"), strings.Split(tt.rel, "/"))
		if got != tt.want {
			t.Errorf("match %q against %q = %v, want %v", tt.glob, tt.rel, got, tt.want)
		}
	}
}

func TestNew_RejectsBadOptions(t *testing.T) {
	opts := testOptions(t)
	opts.Routes = []Route{{Match: "a/[", Topic: "x"}}
	if _, err := New(opts, newFakeStore()); err == nil {
		t.Error("New accepted an invalid glob")
	}
	qos := byte(3)
	opts.Routes = []Route{{Match: "a/*", QoS: &qos}}
	if _, err := New(opts, newFakeStore()); err == nil {
		t.Error("New accepted route qos 3")
	}
	opts.Routes = nil
	opts.TopicPrefix = "gw/+/"
	if _, err := New(opts, newFakeStore()); err == nil {
		t.Error("New accepted a topic prefix with a wildcard")
	}
}

func TestPickup_Precedence(t *testing.T) {
	opts := testOptions(t)
	opts.TopicPrefix = "gw1/"
	opts.DefaultTopic = "default"
	opts.MessageIDProperty = "msg-id"
	opts.IngestTimeProperty = "ingested"
	qos0, retain := byte(0), true
	opts.Routes = []Route{
		{Match: "routed/**", Topic: "route/topic", QoS: &qos0, Retain: &retain},
		{Match: "sys/*", AllowDollar: true},
	}
	store := newFakeStore()
	start(t, opts, store)

	drop(t, opts.Dir, "routed/x/raw", "r")
	drop(t, opts.Dir, "routed/file.msg", "QoS: 2\n\nm")
	drop(t, opts.Dir, "routed/lines.jsonl",
		`{"topic":"own","payload":"a","retain":false}`+"\n"+`{"payload":"b"}`)
	drop(t, opts.Dir, "plain/f.msg", "\nd")
	drop(t, opts.Dir, "sys/f.msg", "Topic: $SYS/ok\n\ns")
	drop(t, opts.Dir, "root", "t")
	waitFor(t, 5*time.Second, "six files appended", func() bool { return store.count() == 6 })

	var msgs []message.Message
	for _, f := range store.files {
		msgs = append(msgs, f.Messages...)
	}
	want := []struct {
		topic  string
		qos    byte
		retain bool
	}{
		{"gw1/route/topic", 0, true}, // route wins over the path
		{"gw1/route/topic", 2, true}, // file QoS wins over the route
		{"gw1/own", 0, false},        // file topic and retain win
		{"gw1/route/topic", 0, true}, // route fills what the line leaves out
		{"gw1/default", 1, false},    // publish.* defaults
		{"gw1/$SYS/ok", 1, false},    // the prefix comes first, so $ is inside
		{"gw1/default", 1, false},    // a file directly in new/
	}
	if len(msgs) != len(want) {
		t.Fatalf("got %d messages, want %d", len(msgs), len(want))
	}
	ids := make(map[string]bool)
	for i, w := range want {
		m := msgs[i]
		if m.Topic != w.topic || m.QoS != w.qos || m.Retain != w.retain {
			t.Errorf("message %d = topic %q qos %d retain %v, want %q %d %v",
				i, m.Topic, m.QoS, m.Retain, w.topic, w.qos, w.retain)
		}
		if len(m.UserProperties) != 2 || m.UserProperties[0].Key != "msg-id" ||
			m.UserProperties[1].Key != "ingested" {
			t.Errorf("message %d properties = %v, want msg-id and ingested", i, m.UserProperties)
			continue
		}
		ids[m.UserProperties[0].Value] = true
		if _, err := time.Parse(time.RFC3339Nano, m.UserProperties[1].Value); err != nil {
			t.Errorf("message %d ingest time: %v", i, err)
		}
	}
	if len(ids) != len(want) {
		t.Errorf("got %d distinct message ids, want %d", len(ids), len(want))
	}
}

// The pickup uses the first route that matches a file, as MatchRoute
// does, even when a later route matches too.
func TestPickup_FirstRouteWins(t *testing.T) {
	opts := testOptions(t)
	opts.Routes = []Route{{Match: "site1/**", Topic: "one"}, {Match: "**", Topic: "all"}}
	store := newFakeStore()
	start(t, opts, store)

	drop(t, opts.Dir, "site1/x/f", "a")
	drop(t, opts.Dir, "other/g", "b")
	waitFor(t, 5*time.Second, "two files appended", func() bool { return store.count() == 2 })

	want := map[string]string{"site1/x/f": "one", "other/g": "all"}
	store.mu.Lock()
	defer store.mu.Unlock()
	for _, f := range store.files {
		if got := f.Messages[0].Topic; got != want[f.ID.Name] {
			t.Errorf("%s: topic %q, want %q", f.ID.Name, got, want[f.ID.Name])
		}
	}
}

func TestPickup_DollarTopicWithRoute(t *testing.T) {
	opts := testOptions(t)
	opts.Routes = []Route{{Match: "$SYS/**", AllowDollar: true}}
	store := newFakeStore()
	start(t, opts, store)

	drop(t, opts.Dir, "$SYS/gw/f", "x")
	waitFor(t, 5*time.Second, "file appended", func() bool { return store.count() == 1 })
	if got := store.files[0].Messages[0].Topic; got != "$SYS/gw" {
		t.Errorf("topic = %q, want $SYS/gw", got)
	}
}

// A route that matches a file but does not set AllowDollar leaves a $
// topic rejected, while a good file on the same route goes through.
func TestPickup_DollarTopicRouteWithoutAllow(t *testing.T) {
	opts := testOptions(t)
	qos0 := byte(0)
	opts.Routes = []Route{{Match: "data/**", QoS: &qos0}}
	store := newFakeStore()
	start(t, opts, store)

	drop(t, opts.Dir, "data/f.msg", "Topic: $SYS/x\n\ns")
	drop(t, opts.Dir, "data/good", "g")

	failed := filepath.Join(opts.Dir, "failed", "data", "f.msg")
	waitFor(t, 5*time.Second, "reason file", func() bool { return exists(failed + ".reason") })
	reason, err := os.ReadFile(failed + ".reason")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(reason), "topic starts with $") {
		t.Errorf("reason = %q, want it to say the topic starts with $", reason)
	}

	waitFor(t, 5*time.Second, "good file appended", func() bool { return store.count() == 1 })
	store.mu.Lock()
	defer store.mu.Unlock()
	if got := store.files[0].Messages[0].Topic; got != "data" {
		t.Errorf("good file topic = %q, want data", got)
	}
}

func TestMessageID_Stable(t *testing.T) {
	id := spool.FileID{Dev: 1, Ino: 2, Size: 3, Ctime: 4, Name: "a/b"}
	first := messageID(id, 0)
	if again := messageID(id, 0); again != first {
		t.Errorf("id changed between calls: %s, %s", first, again)
	}
	if len(first) != 32 {
		t.Errorf("id %q has %d hex digits, want 32", first, len(first))
	}
	if messageID(id, 1) == first {
		t.Error("second line has the same id as the first")
	}
	id.Ino = 9
	if messageID(id, 0) == first {
		t.Error("another file has the same id")
	}
}

func TestMatchRoute_FirstMatchWins(t *testing.T) {
	routes := []Route{{Match: "a/[", Topic: "bad"}, {Match: "site1/**", Topic: "one"}, {Match: "**", Topic: "all"}}
	tests := []struct {
		rel, want string
	}{
		{"site1/x/f.json", "one"},
		{"site1", "one"},
		{"f.msg", "all"},
		{"a/[", "all"},
	}
	for _, tt := range tests {
		r, ok := MatchRoute(routes, tt.rel)
		if !ok || r.Topic != tt.want {
			t.Errorf("MatchRoute(%q) = %q, %v; want %q", tt.rel, r.Topic, ok, tt.want)
		}
	}
	if r, ok := MatchRoute(routes[:2], "other/f"); ok {
		t.Errorf("MatchRoute(other/f) = %q, want no route", r.Topic)
	}
}
