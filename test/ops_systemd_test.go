package test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mqspool/mqspool/test/harness"
)

// TestOpsNotify_Sequence runs the binary with a NOTIFY_SOCKET and a one
// second watchdog and checks READY, STATUS, WATCHDOG and STOPPING arrive in
// that order.
func TestOpsNotify_Sequence(t *testing.T) {
	b := harness.StartBroker(t, "")
	sock := harness.ListenNotify(t)
	t.Setenv("NOTIFY_SOCKET", sock.Path)
	t.Setenv("WATCHDOG_USEC", "1000000")
	d := harness.NewDaemon(t, b.URL(), "")
	d.DumpOnFailure()
	d.Start()

	harness.WaitFor(t, 10*time.Second, "READY=1", func() bool { return sock.Index("READY=1") >= 0 })
	harness.WaitFor(t, 10*time.Second, "a STATUS line showing the connection", func() bool {
		for _, m := range sock.Messages() {
			if strings.Contains(m, "STATUS=connected to "+b.URL()) {
				return true
			}
		}
		return false
	})
	harness.WaitFor(t, 10*time.Second, "three WATCHDOG=1 pings", func() bool { return sock.Count("WATCHDOG=1") >= 3 })

	if code := d.Stop(15 * time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
	// The daemon has exited, but the listener may not have read its last
	// datagrams yet.
	harness.WaitFor(t, 5*time.Second, "STOPPING=1", func() bool { return sock.Index("STOPPING=1") >= 0 })
	ready, status := sock.Index("READY=1"), sock.Index("STATUS=")
	watchdog, stopping := sock.Index("WATCHDOG=1"), sock.Index("STOPPING=1")
	t.Logf("notifications: %q", sock.Messages())
	if ready != 0 {
		t.Errorf("READY=1 is notification %d, want the first", ready)
	}
	if status < ready {
		t.Errorf("first STATUS= at %d, before READY=1 at %d", status, ready)
	}
	if watchdog <= ready {
		t.Errorf("first WATCHDOG=1 at %d, not after READY=1 at %d", watchdog, ready)
	}
	if stopping <= watchdog {
		t.Errorf("STOPPING=1 at %d, not after the first WATCHDOG=1 at %d", stopping, watchdog)
	}
}

// TestOpsNotify_ReadyOffline checks that READY=1 and watchdog pings do not
// wait for the broker: an offline gateway is working, not hung.
func TestOpsNotify_ReadyOffline(t *testing.T) {
	sock := harness.ListenNotify(t)
	t.Setenv("NOTIFY_SOCKET", sock.Path)
	t.Setenv("WATCHDOG_USEC", "1000000")
	port := harness.FreePort(t) // nothing listens here
	d := harness.NewDaemon(t, fmt.Sprintf("mqtt://127.0.0.1:%d", port), "")
	d.DumpOnFailure()
	d.Start()

	harness.WaitFor(t, 10*time.Second, "READY=1 while offline", func() bool { return sock.Index("READY=1") >= 0 })
	harness.WaitFor(t, 10*time.Second, "three WATCHDOG=1 pings while offline", func() bool { return sock.Count("WATCHDOG=1") >= 3 })
	if !strings.Contains(sock.Messages()[0], "STATUS=disconnected") {
		t.Errorf("READY notification %q does not say disconnected", sock.Messages()[0])
	}
	if code := d.Stop(15 * time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
}

// unitKeys are settings the shipped unit must keep.
var unitKeys = []string{
	"Type=notify",
	"WatchdogSec=",
	"Restart=on-failure",
	"RestartPreventExitStatus=2",
	"User=mqspool",
	"Group=mqspool",
	"StateDirectory=mqspool",
	"RuntimeDirectory=mqspool",
	"UMask=0007",
	"NoNewPrivileges=yes",
	"ProtectSystem=strict",
	"ReadWritePaths=/var/spool/mqspool /var/lib/mqspool",
	"CapabilityBoundingSet=",
}

// TestOpsUnit_Verify runs systemd-analyze verify on the shipped unit with
// ExecStart pointed at the built binary. Warnings count as failures:
// systemd only warns about unknown keys and bad values.
func TestOpsUnit_Verify(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("systemd-analyze not installed (apt-get install systemd); the unit file is not verified")
	}
	src, err := os.ReadFile(filepath.Join("..", "deploy", "systemd", "mqspool.service"))
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range unitKeys {
		if !bytes.Contains(src, []byte("\n"+key)) {
			t.Errorf("unit lacks %q", key)
		}
	}

	unit := strings.ReplaceAll(string(src), "/usr/local/bin/mqspool", harness.Binary(t))
	path := filepath.Join(t.TempDir(), "mqspool.service")
	if err := os.WriteFile(path, []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("systemd-analyze", "verify", path).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestOpsUnit_Tmpfiles applies the tmpfiles.d entry to a scratch root and
// checks the spool directories come out setgid and group-writable.
func TestOpsUnit_Tmpfiles(t *testing.T) {
	if _, err := exec.LookPath("systemd-tmpfiles"); err != nil {
		t.Skip("systemd-tmpfiles not installed (apt-get install systemd); the tmpfiles.d entry is not checked")
	}
	root := t.TempDir()
	opsWriteFile(t, filepath.Join(root, "etc", "passwd"), "mqspool:x:990:990::/var/lib/mqspool:/usr/sbin/nologin\n")
	opsWriteFile(t, filepath.Join(root, "etc", "group"), "mqspool:x:990:\n")
	conf, err := filepath.Abs(filepath.Join("..", "deploy", "systemd", "mqspool.conf"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("systemd-tmpfiles", "--create", "--root="+root, conf).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("systemd-tmpfiles --create: %v\n%s", err, out)
	}
	for _, dir := range []string{"", "tmp", "new", "failed"} {
		fi, err := os.Stat(filepath.Join(root, "var", "spool", "mqspool", dir))
		if err != nil {
			t.Errorf("spool directory %q not created: %v", dir, err)
			continue
		}
		if fi.Mode()&os.ModeSetgid == 0 || fi.Mode().Perm() != 0o770 {
			t.Errorf("spool directory %q has mode %s, want setgid 2770", dir, fi.Mode())
		}
	}
}

func opsWriteFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}
