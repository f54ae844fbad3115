package test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mqspool/mqspool/test/harness"
)

// TestDownlink_BacklogAcrossReconnects queues 900 QoS 1 messages for the
// daemon's session while it is stopped. It then starts the daemon with an
// inbox that holds 100 files, so acknowledgements are held, and makes it
// reconnect twice. mosquitto sends a resumed session's whole backlog at
// once, beyond the Receive Maximum of 64, and again after each reconnect.
// Once a consumer takes the files, every message must arrive, with
// repeats only for what each reconnect cut off before its
// acknowledgement: at most a receive maximum each.
func TestDownlink_BacklogAcrossReconnects(t *testing.T) {
	broker := harness.StartBroker(t, "")
	dir := filepath.Join(t.TempDir(), "inbox")
	d := harness.NewDaemon(t, broker.URL(), fmt.Sprintf(`subscriptions:
  - filter: backlog/#
    qos: 1
    dir: %s
    max_files: 100
`, dir))
	d.DumpOnFailure()
	subscribeAndStop(t, d)

	const total = 900
	pub := startLinePublisher(t, broker, "backlog/a", 1)
	for i := range total {
		pub.send(fmt.Sprintf("seq-%06d", i))
	}
	pub.close(t)

	startConnected(t, d)
	harness.WaitFor(t, 20*time.Second, "a full inbox", func() bool { return len(readInbox(t, dir)) == 100 })
	for range 2 {
		before := strings.Count(d.Log(), "msg=connected")
		opsCtl(t, d, "reconnect")
		harness.WaitFor(t, 10*time.Second, "a new connection", func() bool {
			return strings.Count(d.Log(), "msg=connected") > before
		})
	}

	seen, files := map[string]int{}, 0
	harness.WaitFor(t, 90*time.Second, fmt.Sprintf("%d distinct messages through the inbox", total), func() bool {
		for _, f := range readInbox(t, dir) {
			seen[string(f.Message.Payload)]++
			files++
			os.Remove(filepath.Join(dir, "new", f.Name))
		}
		return len(seen) >= total
	})
	time.Sleep(time.Second) // repeats still on their way
	files += len(readInbox(t, dir))
	if limit := total + 2*64; files > limit {
		t.Errorf("%d files for %d messages, want at most %d: messages were written again after their connection ended", files, total, limit)
	}
	t.Logf("%d files for %d messages", files, total)
}

// TestDownlink_BacklogMemoryBounded queues 256 QoS 1 messages of 1 MiB
// for the daemon's session while it is stopped, then starts it with an
// inbox that holds 20 files and a Receive Maximum of 8. mosquitto sends
// the whole backlog at once. The daemon must hold only 16 MiB of messages
// past the Receive Maximum, about 24 MiB in all, not the 256 MiB the
// broker pushes. Once a consumer takes the files, every message arrives.
func TestDownlink_BacklogMemoryBounded(t *testing.T) {
	broker := harness.StartBroker(t, "")
	dir := filepath.Join(t.TempDir(), "inbox")
	d := harness.NewDaemon(t, broker.URL(), fmt.Sprintf(`broker:
  urls: [%s]
  client_id: mqspool-t
  keep_alive: 5s
  receive_maximum: 8
subscriptions:
  - filter: big/#
    qos: 1
    dir: %s
    max_files: 20
    max_bytes: 0
`, broker.URL(), dir))
	d.DumpOnFailure()
	subscribeAndStop(t, d)

	const total = 256
	payload := filepath.Join(t.TempDir(), "payload")
	for i := range total {
		body := fmt.Sprintf("seq-%06d", i) + strings.Repeat("x", 1<<20)
		if err := os.WriteFile(payload, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command("mosquitto_pub", "-V", "mqttv5", "-h", "127.0.0.1", "-p", fmt.Sprint(broker.Port),
			"-t", "big/a", "-q", "1", "-f", payload).CombinedOutput()
		if err != nil {
			t.Fatalf("mosquitto_pub -f: %v\n%s", err, out)
		}
	}

	startConnected(t, d)
	harness.WaitFor(t, 30*time.Second, "a full inbox", func() bool { return len(readInbox(t, dir)) == 20 })
	peak := 0
	for range 30 {
		peak = max(peak, d.RSSAnonKiB())
		time.Sleep(100 * time.Millisecond)
	}
	if limit := harness.MemoryScale() * 64 << 10; peak > limit {
		t.Errorf("RssAnon peaked at %d KiB with a full inbox and 256 MiB at the broker, want under %d KiB", peak, limit)
	}

	seen := map[string]bool{}
	harness.WaitFor(t, 120*time.Second, fmt.Sprintf("%d distinct messages through the inbox", total), func() bool {
		for _, f := range readInbox(t, dir) {
			seen[string(f.Message.Payload[:10])] = true
			os.Remove(filepath.Join(dir, "new", f.Name))
		}
		return len(seen) >= total
	})
	t.Logf("RssAnon peak %d KiB", peak)
}

// TestDownlink_HeldThroughLostSession holds three QoS 1 messages in
// memory while their inbox cannot be written, then restarts the broker
// without persistence, so the session and its copies are gone. The held
// messages are the only copies left and must still be written once the
// inbox works.
func TestDownlink_HeldThroughLostSession(t *testing.T) {
	broker := harness.StartBroker(t, "persistence false")
	dir := filepath.Join(t.TempDir(), "inbox")
	d := harness.NewDaemon(t, broker.URL(), fmt.Sprintf(`subscriptions:
  - filter: lost/#
    qos: 1
    dir: %s
`, dir))
	d.DumpOnFailure()
	startConnected(t, d)
	waitSubscribed(t, d, 1)
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir, []byte("not a directory\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	for i := range 3 {
		mosquittoPub(t, broker, "lost/a", 1, fmt.Sprintf("held-%d", i))
	}
	opsWait(t, "the inbox error in status", func() bool {
		e, _ := downlinkStatus(t, d)["error"].(string)
		return e != ""
	})
	before := strings.Count(d.Log(), "msg=connected")
	broker.Restart()
	harness.WaitFor(t, 20*time.Second, "a connection to the restarted broker", func() bool {
		return strings.Count(d.Log(), "msg=connected") > before
	})
	if !strings.Contains(d.Log(), "broker lost the session") {
		t.Fatal("the restarted broker kept the session; the test needs it lost")
	}
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}

	harness.WaitFor(t, 20*time.Second, "the three held messages", func() bool {
		if _, err := os.Stat(filepath.Join(dir, "new")); err != nil {
			return false
		}
		return len(readInbox(t, dir)) == 3
	})
}

// subscribeAndStop starts the daemon until its subscription is in the
// broker's session, then stops it, so that messages published next wait
// at the broker for its next start.
func subscribeAndStop(t *testing.T, d *harness.Daemon) {
	t.Helper()
	startConnected(t, d)
	waitSubscribed(t, d, 1)
	if code := d.Stop(10 * time.Second); code != 0 {
		t.Fatalf("daemon exit status %d, want 0", code)
	}
}
