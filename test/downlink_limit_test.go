package test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mqspool/mqspool/test/harness"
)

// TestDownlink_FullInboxHoldsAcks fills an inbox to max_files: further
// QoS 1 messages wait at the broker unacknowledged, QoS 0 messages are
// dropped and counted, and removing files lets the held ones in.
func TestDownlink_FullInboxHoldsAcks(t *testing.T) {
	broker := harness.StartBroker(t, "")
	dir := filepath.Join(t.TempDir(), "inbox")
	d := harness.NewDaemon(t, broker.URL(), fmt.Sprintf(`subscriptions:
  - filter: full/#
    qos: 1
    dir: %s
    max_files: 3
`, dir))
	d.DumpOnFailure()
	d.Start()
	waitSubscribed(t, d, 1)

	const total = 10
	pub := startLinePublisher(t, broker, "full/q1", 1)
	for i := range total {
		pub.send(fmt.Sprintf("seq-%06d", i))
	}
	harness.WaitFor(t, 10*time.Second, "3 files", func() bool { return len(readInbox(t, dir)) == 3 })
	opsWait(t, "status full", func() bool { return downlinkStatus(t, d)["full"] == true })
	time.Sleep(500 * time.Millisecond)
	if n := len(readInbox(t, dir)); n != 3 {
		t.Fatalf("full inbox holds %d files, want max_files 3", n)
	}
	if !strings.Contains(d.Log(), "inbox full, holding acknowledgements") {
		t.Errorf("no log line for the full inbox")
	}

	for i := range 4 {
		mosquittoPub(t, broker, "full/q0", 0, fmt.Sprintf("qos0-%d", i))
	}
	opsWait(t, "4 dropped qos 0 messages", func() bool { return downlinkStatus(t, d)["dropped_qos0"] == float64(4) })

	// A consumer takes files as they come: every QoS 1 message arrives.
	seen := map[string]int{}
	harness.WaitFor(t, 30*time.Second, fmt.Sprintf("%d messages through a 3-file inbox", total), func() bool {
		for _, f := range readInbox(t, dir) {
			seen[string(f.Message.Payload)]++
			os.Remove(filepath.Join(dir, "new", f.Name))
		}
		return len(seen) >= total
	})
	pub.close(t)
	for i := range total {
		if seen[fmt.Sprintf("seq-%06d", i)] == 0 {
			t.Errorf("seq-%06d lost", i)
		}
	}
	for payload := range seen {
		if strings.HasPrefix(payload, "qos0-") {
			t.Errorf("qos 0 message %s stored while the inbox was full", payload)
		}
	}
	opsWait(t, "status not full", func() bool { return downlinkStatus(t, d)["full"] == false })
}

// TestDownlink_FullInboxStopsAtOnce stops the daemon while QoS 1
// messages wait for room in a full inbox. The drain does not wait for a
// consumer: the held messages are declined, and the broker sends them
// again after the restart, so none is lost.
func TestDownlink_FullInboxStopsAtOnce(t *testing.T) {
	broker := harness.StartBroker(t, "")
	dir := filepath.Join(t.TempDir(), "inbox")
	d := harness.NewDaemon(t, broker.URL(), fmt.Sprintf(`shutdown:
  drain_timeout: 60s
subscriptions:
  - filter: full/#
    qos: 1
    dir: %s
    max_files: 1
`, dir))
	d.DumpOnFailure()
	d.Start()
	waitSubscribed(t, d, 1)

	const total = 4
	for i := range total {
		mosquittoPub(t, broker, "full/q1", 1, fmt.Sprintf("seq-%d", i))
	}
	opsWait(t, "status full", func() bool { return downlinkStatus(t, d)["full"] == true })

	began := time.Now()
	if code := d.Stop(20 * time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
	if took := time.Since(began); took > 10*time.Second {
		t.Errorf("stop took %s with a full inbox, want far less than the 60s drain timeout", took)
	}
	if !strings.Contains(d.Log(), "the broker sends them again after the restart") {
		t.Errorf("no log line for the messages declined while stopping")
	}

	seen := map[string]int{}
	takeAll := func() {
		for _, f := range readInbox(t, dir) {
			seen[string(f.Message.Payload)]++
			os.Remove(filepath.Join(dir, "new", f.Name))
		}
	}
	takeAll()
	d.Start()
	harness.WaitFor(t, 30*time.Second, fmt.Sprintf("%d messages after the restart", total), func() bool {
		takeAll()
		return len(seen) >= total
	})
	for i := range total {
		if seen[fmt.Sprintf("seq-%d", i)] == 0 {
			t.Errorf("seq-%d lost", i)
		}
	}
}

// downlinkStatus returns the status entry of the first subscription.
func downlinkStatus(t *testing.T, d *harness.Daemon) map[string]any {
	t.Helper()
	subs, _ := opsStatus(t, d)["subscriptions"].([]any)
	if len(subs) == 0 {
		t.Fatal("status lists no subscriptions")
	}
	return subs[0].(map[string]any)
}

// TestDownlink_UnusableInbox starts the daemon with a regular file where
// an inbox should be. The daemon keeps forwarding, status names the
// inbox's error, and a QoS 1 message for it waits at the broker until the
// file is gone. Then it arrives and the error clears.
func TestDownlink_UnusableInbox(t *testing.T) {
	broker := harness.StartBroker(t, "")
	sub := harness.Subscribe(t, broker.Addr(), "up/#", 1)
	dir := filepath.Join(t.TempDir(), "inbox")
	if err := os.WriteFile(dir, []byte("not a directory\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d := harness.NewDaemon(t, broker.URL(), fmt.Sprintf(`subscriptions:
  - filter: down/#
    qos: 1
    dir: %s
`, dir))
	d.DumpOnFailure()
	d.Start()
	waitSubscribed(t, d, 1)

	d.Drop("up/a.msg", []byte("Topic: up/a\nQoS: 1\n\nforwarded"))
	sub.WaitCount(1, 10*time.Second)
	mosquittoPub(t, broker, "down/a", 1, "held")
	opsWait(t, "the inbox error in status", func() bool {
		e, _ := downlinkStatus(t, d)["error"].(string)
		return strings.Contains(e, dir)
	})
	if out, _ := d.Ctl("status"); !strings.Contains(out, "inbox unusable") {
		t.Errorf("status text does not say the inbox is unusable:\n%s", out)
	}

	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	harness.WaitFor(t, 10*time.Second, "the inbox created again", func() bool {
		_, err := os.Stat(filepath.Join(dir, "new"))
		return err == nil
	})
	harness.WaitFor(t, 10*time.Second, "the held message in the inbox", func() bool {
		files := readInbox(t, dir)
		return len(files) == 1 && string(files[0].Message.Payload) == "held"
	})
	opsWait(t, "the error to clear", func() bool {
		_, set := downlinkStatus(t, d)["error"]
		return !set
	})
}
