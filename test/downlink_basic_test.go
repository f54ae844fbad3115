package test

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mqspool/mqspool/test/harness"
)

func downlinkConfig(root string) string {
	return fmt.Sprintf(`subscriptions:
  - filter: cmd/#
    qos: 2
    dir: %s
  - filter: cmd/special/+
    qos: 1
    dir: %s
`, filepath.Join(root, "inbox-cmd"), filepath.Join(root, "inbox-special"))
}

func TestDownlink_QoSAndProperties(t *testing.T) {
	broker := harness.StartBroker(t, "")
	root := t.TempDir()
	metricsAddr := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	d := harness.NewDaemon(t, broker.URL(), downlinkConfig(root)+"metrics:\n  listen: "+metricsAddr+"\n")
	d.DumpOnFailure()
	d.Start()
	waitSubscribed(t, d, 2)

	props := []string{"-D", "publish", "user-property", "k", "v", "-D", "publish", "user-property", "k", "w",
		"-D", "publish", "content-type", "text/plain", "-D", "publish", "response-topic", "reply/x",
		"-D", "publish", "correlation-data", "abc", "-D", "publish", "message-expiry-interval", "300",
		"-D", "publish", "payload-format-indicator", "1"}
	for qos := range 3 {
		mosquittoPub(t, broker, "cmd/a", qos, fmt.Sprintf("payload qos %d", qos), props...)
	}
	mosquittoPub(t, broker, "cmd/special/x", 2, "both inboxes")

	cmdDir, specialDir := filepath.Join(root, "inbox-cmd"), filepath.Join(root, "inbox-special")
	harness.WaitFor(t, 10*time.Second, "4 files in inbox-cmd", func() bool { return len(readInbox(t, cmdDir)) >= 4 })
	harness.WaitFor(t, 10*time.Second, "1 file in inbox-special", func() bool { return len(readInbox(t, specialDir)) >= 1 })
	time.Sleep(300 * time.Millisecond) // let a duplicate show up

	files := readInbox(t, cmdDir)
	if len(files) != 4 {
		t.Fatalf("inbox-cmd holds %d files, want 4 (exactly once)", len(files))
	}
	for qos, f := range files[:3] {
		m := f.Message
		if m.Topic != "cmd/a" || string(m.Payload) != fmt.Sprintf("payload qos %d", qos) || int(m.QoS) != qos {
			t.Errorf("file %s: topic %q qos %d payload %q, want cmd/a qos %d in arrival order", f.Name, m.Topic, m.QoS, m.Payload, qos)
		}
		if m.ContentType != "text/plain" || m.ResponseTopic != "reply/x" || string(m.CorrelationData) != "abc" {
			t.Errorf("file %s: properties %+v", f.Name, m)
		}
		if m.ExpirySeconds == 0 || m.ExpirySeconds > 300 {
			t.Errorf("file %s: Message-Expiry %d, want 1..300", f.Name, m.ExpirySeconds)
		}
		if m.PayloadFormat.String() != "utf8" {
			t.Errorf("file %s: Payload-Format %s, want utf8", f.Name, m.PayloadFormat)
		}
		if got := fmt.Sprint(m.UserProperties); got != "[{k v} {k w}]" {
			t.Errorf("file %s: user properties %s, want k=v then k=w", f.Name, got)
		}
		checkReceivedHeaders(t, f, "1", "false")
	}

	// Each overlapping filter gets its own copy, with its own
	// Subscription Identifier and at its own granted QoS.
	both := files[3]
	if string(both.Message.Payload) != "both inboxes" || both.Message.QoS != 2 {
		t.Errorf("inbox-cmd last file = %+v", both.Message)
	}
	checkReceivedHeaders(t, both, "1", "false")
	special := readInbox(t, specialDir)
	if len(special) != 1 {
		t.Fatalf("inbox-special holds %d files, want 1", len(special))
	}
	if special[0].Message.QoS != 1 || special[0].Message.Topic != "cmd/special/x" {
		t.Errorf("inbox-special file = %+v", special[0].Message)
	}
	checkReceivedHeaders(t, special[0], "2", "false")

	st := opsStatus(t, d)
	subs, _ := st["subscriptions"].([]any)
	if len(subs) != 2 {
		t.Fatalf("status subscriptions = %v, want 2 entries", st["subscriptions"])
	}
	first := subs[0].(map[string]any)
	if first["received"].(float64) != 4 || first["backlog_files"].(float64) != 4 {
		t.Errorf("status of cmd/# = %v, want 4 received and 4 in the backlog", first)
	}
	samples := opsScrape(t, metricsAddr)
	for name, want := range map[string]float64{
		`mqspool_downlink_received_total{filter="cmd/#"}`:        4,
		`mqspool_downlink_backlog_files{filter="cmd/special/+"}`: 1,
		`mqspool_downlink_inbox_full{filter="cmd/#"}`:            0,
	} {
		if got, ok := samples[name]; !ok || got != want {
			t.Errorf("metric %s = %v (present %t), want %v", name, got, ok, want)
		}
	}
	text, _ := d.Ctl("status")
	if !strings.Contains(text, "cmd/# -> "+cmdDir+": ok") || !strings.Contains(text, "received 4 (0 with DUP set), backlog 4 files") {
		t.Errorf("status text lacks the cmd/# subscription:\n%s", text)
	}
}

func checkReceivedHeaders(t *testing.T, f inboxFile, subID, dup string) {
	t.Helper()
	if got := f.Received["Subscription-Identifier"]; got != subID {
		t.Errorf("file %s: Subscription-Identifier %q, want %s", f.Name, got, subID)
	}
	if got := f.Received["Dup"]; got != dup {
		t.Errorf("file %s: Dup %q, want %s", f.Name, got, dup)
	}
	at, err := time.Parse(time.RFC3339Nano, f.Received["Received-At"])
	if err != nil || at.Location() != time.UTC || time.Since(at) > time.Minute {
		t.Errorf("file %s: Received-At %q is not a recent RFC 3339 UTC time", f.Name, f.Received["Received-At"])
	}
	if !strings.HasSuffix(f.Name, ".msg") {
		t.Errorf("file %s lacks .msg", f.Name)
	}
}
