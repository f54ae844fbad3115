package test

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"

	"github.com/mqspool/mqspool/test/harness"
)

// TestOpsSignal_ReloadKeepsConnection sends SIGHUP after changing the log
// level, the throttle and the routes in the config file, and checks all
// three apply while the connection stays up.
func TestOpsSignal_ReloadKeepsConnection(t *testing.T) {
	b := harness.StartBroker(t, "")
	proxy := harness.StartProxy(t, b.Addr())
	sub := harness.Subscribe(t, b.Addr(), "hup/#", 1)
	routed := harness.Subscribe(t, b.Addr(), "routed/#", 1)
	d := harness.NewDaemon(t, proxy.URL(), "log:\n  level: info\n")
	d.DumpOnFailure()
	d.Start()
	opsConnected(t, d)

	d.Drop("hup/one/1.txt", []byte("before"))
	sub.WaitCount(1, 10*time.Second)
	if strings.Contains(d.Log(), "message acknowledged") {
		t.Fatalf("debug line logged at level info:\n%s", d.Log())
	}

	d.WriteConfig(proxy.URL(), "log:\n  level: debug\nthrottle:\n  messages_per_second: 7\n"+
		"routes:\n  - match: \"hup/three/*\"\n    topic: routed/three\n")
	d.Signal(syscall.SIGHUP)
	harness.WaitFor(t, 10*time.Second, "configuration reloaded", func() bool {
		return strings.Contains(d.Log(), "configuration reloaded")
	})

	d.Drop("hup/two/2.txt", []byte("after"))
	sub.WaitCount(2, 10*time.Second)
	harness.WaitFor(t, 10*time.Second, "a debug line after the reload", func() bool {
		return strings.Contains(d.Log(), "message acknowledged")
	})
	d.Drop("hup/three/3.txt", []byte("routed"))
	routed.WaitCount(1, 10*time.Second)
	if got := routed.Messages()[0].Topic; got != "routed/three" {
		t.Errorf("file after the reload went to %q, want the new route's routed/three", got)
	}
	if st := opsStatus(t, d); st["throttle"] != "7/s" {
		t.Errorf("status throttle after reload = %v, want 7/s", st["throttle"])
	}
	if n := len(opsPackets(proxy, harness.ToBroker, packets.CONNECT, time.Time{})); n != 1 {
		t.Errorf("%d CONNECT packets, want 1: the reload must keep the connection", n)
	}
	if !d.Running() {
		t.Fatal("daemon exited on SIGHUP")
	}
}

// TestOpsSignal_ReloadInvalidConfig checks that SIGHUP with a broken file
// keeps the daemon running on its old configuration.
func TestOpsSignal_ReloadInvalidConfig(t *testing.T) {
	b := harness.StartBroker(t, "")
	d := harness.NewDaemon(t, b.URL(), "")
	d.DumpOnFailure()
	d.Start()

	d.WriteConfig(b.URL(), "log:\n  level: loud\n")
	d.Signal(syscall.SIGHUP)
	harness.WaitFor(t, 10*time.Second, "the reload error", func() bool {
		return strings.Contains(d.Log(), "configuration not reloaded")
	})
	if !d.Running() {
		t.Fatal("daemon exited on SIGHUP with an invalid config")
	}
	if code := d.Stop(15 * time.Second); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
}
