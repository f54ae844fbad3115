package test

import (
	"fmt"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"

	"github.com/mqspool/mqspool/test/harness"
)

// TestMessageID_StableAcrossResendAndRestart checks that the configured
// message id property carries the same value on a resend after a
// reconnect and after a kill -9 restart, so consumers can drop the
// duplicates at-least-once delivery allows.
func TestMessageID_StableAcrossResendAndRestart(t *testing.T) {
	broker := harness.StartBroker(t, "")
	proxy := harness.StartProxy(t, broker.Addr())
	sub := harness.Subscribe(t, broker.Addr(), "mid/#", 1)
	d := harness.NewDaemon(t, proxy.URL(), "publish:\n  message_id_property: msg-id\n")
	d.DumpOnFailure()
	d.Start()
	harness.WaitFor(t, 10*time.Second, "first connection", func() bool { return proxy.Accepted() == 1 })

	// The broker forwards each message, but the daemon never sees the
	// PUBACK, so messages are sent again after the reset and after the
	// restart. After the reset the daemon sends one message alone until
	// the broker acknowledges one, as it would after a broker that closed
	// on a message, so only the first goes out again before the restart.
	proxy.SetDrop(func(p harness.Packet) bool { return p.Dir == harness.ToClient && p.Type == packets.PUBACK })
	for i := range 5 {
		d.Drop(fmt.Sprintf("m-%d.msg", i), []byte(fmt.Sprintf("Topic: mid/t\nQoS: 1\n\nseq-%06d", i)))
	}
	sub.WaitCount(5, 20*time.Second)
	proxy.Reset()
	sub.WaitCount(6, 20*time.Second)
	d.Kill()
	proxy.SetDrop(nil)
	d.Start()
	sub.WaitCount(11, 20*time.Second)

	ids := map[string]map[string]bool{}
	for _, m := range sub.Messages() {
		var id string
		for _, p := range m.UserProperties {
			if p[0] == "msg-id" {
				id = p[1]
			}
		}
		if id == "" {
			t.Fatalf("message %q arrived without the msg-id property", m.Payload)
		}
		if ids[string(m.Payload)] == nil {
			ids[string(m.Payload)] = map[string]bool{}
		}
		ids[string(m.Payload)][id] = true
	}
	seen := map[string]string{}
	for payload, set := range ids {
		if len(set) != 1 {
			t.Errorf("%s arrived with %d different ids: %v", payload, len(set), set)
		}
		for id := range set {
			if other, dup := seen[id]; dup {
				t.Errorf("id %s used by both %s and %s", id, other, payload)
			}
			seen[id] = payload
		}
	}
	if len(ids) != 5 {
		t.Errorf("%d distinct messages, want 5", len(ids))
	}
}
