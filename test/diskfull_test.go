package test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mqspool/mqspool/internal/crashpoint"
	"github.com/mqspool/mqspool/test/harness"
)

// mountTmpfs mounts a tmpfs of size at dir, or skips the test where
// mounting is not permitted.
func mountTmpfs(t *testing.T, dir, size string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput()
	if err != nil {
		t.Skipf("cannot mount a tmpfs (needs root and mount permission): %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
}

// TestDiskFull_FilesWaitAndResume puts the database on a 1 MiB tmpfs and
// drops more than fits while the broker is down: the commit that hits
// ENOSPC must lose and corrupt nothing, the files wait in new/, the daemon
// keeps running, and once space is added everything is ingested and
// delivered.
func TestDiskFull_FilesWaitAndResume(t *testing.T) {
	broker := harness.StartBroker(t, "")
	sub := harness.Subscribe(t, broker.Addr(), "full/#", 1)
	broker.Stop()

	d := harness.NewDaemon(t, broker.URL(), "")
	stateDir := filepath.Dir(d.DB)
	mountTmpfs(t, stateDir, "1M")
	d.DumpOnFailure()
	d.Start()

	const total = 1500
	payload := strings.Repeat("z", 1000)
	for i := range total {
		d.Drop(fmt.Sprintf("m-%05d.msg", i), []byte(fmt.Sprintf("Topic: full/t\nQoS: 1\n\nseq-%06d %s", i, payload)))
	}
	harness.WaitFor(t, 20*time.Second, "the spool to run out of space", func() bool {
		return strings.Contains(d.Log(), "no space left on device")
	})
	time.Sleep(time.Second)
	if d.NewEmpty() {
		t.Fatal("new/ is empty although the database cannot hold every file")
	}
	if !d.Running() {
		t.Fatal("the daemon stopped when the disk filled")
	}

	if out, err := exec.Command("mount", "-o", "remount,size=64M", stateDir).CombinedOutput(); err != nil {
		t.Fatalf("grow the tmpfs: %v: %s", err, out)
	}
	harness.WaitFor(t, 30*time.Second, "new/ empty once space is back", d.NewEmpty)
	broker.Start()
	waitAllInOrder(t, sub, total, 60*time.Second)
}

// TestDiskFull_CommitsFailWhileDraining makes the commits that record
// session changes fail once messages are queued, as a full disk under
// spool.db does. A real full tmpfs fails them only when bbolt must grow
// its file, which no test can time, so the fault is injected. The daemon
// must stay up and offline, write nothing that waits for a commit, and
// deliver everything once commits work again. Exiting instead would make
// systemd's Restart=on-failure send the whole window again every few
// seconds.
func TestDiskFull_CommitsFailWhileDraining(t *testing.T) {
	broker := harness.StartBroker(t, "")
	sub := harness.Subscribe(t, broker.Addr(), "fulldrain/#", 1)
	broker.Stop()

	d := harness.NewDaemon(t, broker.URL(), "")
	fault := filepath.Join(t.TempDir(), "fail-commits")
	d.Env = []string{crashpoint.FaultEnvVar + "=" + fault}
	d.DumpOnFailure()
	d.Start()

	const total = 200
	for i := range total {
		d.Drop(fmt.Sprintf("m-%05d.msg", i), []byte(fmt.Sprintf("Topic: fulldrain/t\nQoS: 1\n\nseq-%06d", i)))
	}
	harness.WaitFor(t, 30*time.Second, "every file queued", d.NewEmpty)

	if err := os.WriteFile(fault, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	broker.Start()
	harness.WaitFor(t, 30*time.Second, "a failed commit", func() bool {
		return strings.Contains(d.Log(), "session changes cannot be committed")
	})
	time.Sleep(3 * time.Second)
	if !d.Running() {
		t.Fatal("the daemon exited when its commits failed")
	}
	if n := len(sub.Messages()); n != 0 {
		t.Errorf("the subscriber got %d messages while no commit succeeded, want 0", n)
	}
	if msg, _ := opsStatus(t, d)["last_error"].(string); !strings.Contains(msg, "injected commit fault") {
		t.Errorf("status last_error %q, want the commit error", msg)
	}

	if err := os.Remove(fault); err != nil {
		t.Fatal(err)
	}
	harness.WaitFor(t, 30*time.Second, "the commits to succeed again", func() bool {
		return strings.Contains(d.Log(), "session changes committed again")
	})
	waitAllInOrder(t, sub, total, 60*time.Second)
	harness.WaitFor(t, 30*time.Second, "an empty spool", func() bool {
		return opsStatus(t, d)["queue_messages"] == float64(0)
	})
	if !d.Running() {
		t.Error("the daemon exited after the commits recovered")
	}
}
