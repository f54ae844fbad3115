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

// TestDiskFull_CommitsFailWhileDraining fills the database's disk after
// the messages are queued, so the commits that record acknowledgements
// fail once the broker is back. The daemon must stay up and offline
// instead of exiting, which under systemd's Restart=on-failure would send
// the whole window again every few seconds, and deliver the rest once
// space is back.
func TestDiskFull_CommitsFailWhileDraining(t *testing.T) {
	broker := harness.StartBroker(t, "")
	sub := harness.Subscribe(t, broker.Addr(), "fulldrain/#", 1)
	broker.Stop()

	d := harness.NewDaemon(t, broker.URL(), "")
	stateDir := filepath.Dir(d.DB)
	mountTmpfs(t, stateDir, "4M")
	d.DumpOnFailure()
	d.Start()

	// Few large messages leave bbolt few free pages to reuse, so the
	// commits of the drain must grow into space the file system lacks.
	const total = 4
	payload := strings.Repeat("z", 200_000)
	for i := range total {
		d.Drop(fmt.Sprintf("m-%05d.msg", i), []byte(fmt.Sprintf("Topic: fulldrain/t\nQoS: 1\n\nseq-%06d %s", i, payload)))
	}
	harness.WaitFor(t, 30*time.Second, "every file queued", d.NewEmpty)

	filler := filepath.Join(stateDir, "filler")
	fillDisk(t, filler)
	broker.Start()
	harness.WaitFor(t, 30*time.Second, "a failed commit", func() bool {
		return strings.Contains(d.Log(), "session changes cannot be committed")
	})
	time.Sleep(3 * time.Second)
	if !d.Running() {
		t.Fatal("the daemon exited when its commits failed")
	}

	if err := os.Remove(filler); err != nil {
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
		t.Error("the daemon exited after space came back")
	}
}

// fillDisk writes path until its file system has no space left.
func fillDisk(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, size := range []int{64 << 10, 4 << 10, 1} {
		block := make([]byte, size)
		for {
			_, err := f.Write(block)
			if err == nil {
				continue
			}
			if !strings.Contains(err.Error(), "no space left") {
				t.Fatalf("fill %s: %v", path, err)
			}
			break
		}
	}
}
