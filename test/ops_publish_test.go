package test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mqspool/mqspool/test/harness"
)

// TestOpsPublishWait_Outcomes runs "mqspool publish --wait" against a
// forwarding daemon and checks each exit status: 0 delivered, 4 rejected
// by the broker, 4 rejected at ingest, 3 timed out while the broker hangs.
func TestOpsPublishWait_Outcomes(t *testing.T) {
	b := harness.StartBroker(t, "message_size_limit 1024")
	sub := harness.Subscribe(t, b.Addr(), "pw/#", 1)
	// The route matches nothing that publish writes, so the pickup
	// rejects a message without a topic.
	d := harness.NewDaemon(t, b.URL(), "routes:\n  - match: \"elsewhere/*\"\n    topic: pw/routed\n")
	d.DumpOnFailure()
	d.Start()
	opsConnected(t, d)

	// Delivered: exit 0 once the broker acknowledged.
	out, code := harness.Command(t, "publish", "--config", d.Config, "--topic", "pw/ok", "--qos", "1", "--wait", "10s", "--message", "hello")
	if code != 0 || !strings.Contains(out, "delivered new/") {
		t.Fatalf("publish --wait of a good message: exit %d, want 0 and delivered:\n%s", code, out)
	}
	if sub.Count() != 1 {
		t.Errorf("subscriber has %d messages when publish --wait returned, want 1", sub.Count())
	}

	// Rejected by the broker (PUBACK 0x95): exit 4.
	big := filepath.Join(t.TempDir(), "big.bin")
	if err := os.WriteFile(big, []byte(strings.Repeat("x", 4096)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, code = harness.Command(t, "publish", "--config", d.Config, "--topic", "pw/big", "--qos", "1", "--wait", "10s", big)
	if code != 4 {
		t.Errorf("publish --wait of an oversized message: exit %d, want 4:\n%s", code, out)
	}
	if !strings.Contains(out, "failed/") {
		t.Errorf("rejection message does not point at failed/:\n%s", out)
	}

	// Rejected at ingest (no topic from the file, a route or a default):
	// exit 4. Without --config, publish cannot know the daemon's routes, so
	// it leaves the check to the pickup.
	out, code = harness.Command(t, "publish", "--spool-dir", d.Dir, "--socket", d.Socket, "--wait", "10s", "--message", "no topic")
	if code != 4 {
		t.Errorf("publish --wait without a topic: exit %d, want 4:\n%s", code, out)
	}

	// Timed out: the broker is stopped, so no acknowledgement comes.
	b.Pause()
	defer b.Resume()
	start := time.Now()
	out, code = harness.Command(t, "publish", "--config", d.Config, "--topic", "pw/late", "--qos", "1", "--wait", "2s", "--message", "late")
	if code != 3 {
		t.Errorf("publish --wait with the broker stopped: exit %d, want 3:\n%s", code, out)
	}
	if took := time.Since(start); took < 2*time.Second || took > 8*time.Second {
		t.Errorf("publish --wait 2s returned after %s", took.Round(100*time.Millisecond))
	}
	b.Resume()
	harness.WaitFor(t, 20*time.Second, "the late message after the broker resumed", func() bool {
		for _, m := range sub.Messages() {
			if m.Topic == "pw/late" {
				return true
			}
		}
		return false
	})
}

// TestOpsPublishWait_DroppedOldest checks that publish --wait exits 1
// when spool.overflow drop-oldest deletes its message to make room.
func TestOpsPublishWait_DroppedOldest(t *testing.T) {
	d := harness.NewDaemon(t, "mqtt://127.0.0.1:1", "spool:\n  max_messages: 2\n  overflow: drop-oldest\n")
	d.DumpOnFailure()
	d.Start()

	wait := exec.Command(harness.Binary(t), "publish", "--config", d.Config, "--topic", "pw/first", "--qos", "1", "--wait", "20s", "--message", "first")
	var out strings.Builder
	wait.Stdout, wait.Stderr = &out, &out
	if err := wait.Start(); err != nil {
		t.Fatal(err)
	}
	opsWait(t, "the first message queued", func() bool {
		st, _, code := opsTryStatus(t, d)
		return code == 0 && st["queue_messages"] == float64(1)
	})
	for _, topic := range []string{"pw/second", "pw/third"} {
		if text, code := harness.Command(t, "publish", "--config", d.Config, "--topic", topic, "--qos", "1", "--message", "x"); code != 0 {
			t.Fatalf("publish %s: exit %d:\n%s", topic, code, text)
		}
	}

	err := wait.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("publish --wait of a message dropped for room: %v, want exit 1:\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "drop-oldest") {
		t.Errorf("output does not name the reason:\n%s", out.String())
	}
	if st := opsStatus(t, d); st["dropped_overflow"] != float64(1) {
		t.Errorf("status dropped_overflow = %v, want 1", st["dropped_overflow"])
	}
}

// TestOpsPublishWait_NoDaemon checks that --wait without a daemon gives up
// at the deadline with exit 3 and leaves the message queued in new/.
func TestOpsPublishWait_NoDaemon(t *testing.T) {
	d := harness.NewDaemon(t, "mqtt://127.0.0.1:1", "")
	for _, sub := range []string{"tmp", "new", "failed"} {
		if err := os.MkdirAll(filepath.Join(d.Dir, sub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	out, code := harness.Command(t, "publish", "--config", d.Config, "--topic", "pw/x", "--wait", "1s", "--message", "x")
	if code != 3 {
		t.Errorf("publish --wait with no daemon: exit %d, want 3:\n%s", code, out)
	}
	if !strings.Contains(out, "no daemon listened") {
		t.Errorf("output does not say no daemon listened:\n%s", out)
	}
	if d.NewEmpty() {
		t.Error("new/ is empty: the message must stay queued")
	}
}
