package test

import (
	"strings"
	"testing"
	"time"

	"github.com/mqspool/mqspool/test/harness"
)

// opsPayloads returns the payloads the subscriber received, in order.
func opsPayloads(sub *harness.Subscriber) []string {
	var out []string
	for _, m := range sub.Messages() {
		out = append(out, string(m.Payload))
	}
	return out
}

// TestOpsPresence_BirthWillStop checks the retained status topic: online
// after each connect, offline from the Last Will after kill -9, and
// offline again after a clean stop.
func TestOpsPresence_BirthWillStop(t *testing.T) {
	const topic = "gw/t/status"
	b := harness.StartBroker(t, "")
	sub := harness.Subscribe(t, b.Addr(), topic, 1)
	d := harness.NewDaemon(t, b.URL(), "status:\n  topic: "+topic+"\n")
	d.DumpOnFailure()

	steps := []struct {
		name string
		act  func()
		want string
	}{
		{"start", d.Start, "online"},
		{"kill -9", d.Kill, "offline"},
		{"restart", d.Start, "online"},
		{"clean stop", func() {
			if code := d.Stop(15 * time.Second); code != 0 {
				t.Errorf("exit code %d after SIGTERM, want 0", code)
			}
		}, "offline"},
	}
	for i, s := range steps {
		s.act()
		harness.WaitFor(t, 10*time.Second, "status "+s.want+" after "+s.name, func() bool { return sub.Count() >= i+1 })
		got := sub.Messages()[i]
		if string(got.Payload) != s.want {
			t.Fatalf("after %s the status is %q, want %q (all: %q)", s.name, got.Payload, s.want, opsPayloads(sub))
		}
	}
	if !strings.Contains(d.Log(), "offline status published") {
		t.Errorf("log does not record the offline status at the clean stop")
	}

	// A subscriber arriving later gets the retained last state.
	late := harness.Subscribe(t, b.Addr(), topic, 1)
	late.WaitCount(1, 10*time.Second)
	if m := late.Messages()[0]; string(m.Payload) != "offline" || !m.Retain {
		t.Errorf("late subscriber got %q retain=%t, want retained offline", m.Payload, m.Retain)
	}
	if n := sub.Count(); n != len(steps) {
		t.Errorf("subscriber got %d status messages, want %d: %q", n, len(steps), opsPayloads(sub))
	}
}
