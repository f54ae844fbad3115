package test

import (
	"fmt"
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

// TestOpsSignal_ReloadRejectsValuelessUnknownKey checks that SIGHUP with
// a misspelt key that has an empty mapping is rejected like any other
// unknown key, and that the valid keys beside it do not apply.
func TestOpsSignal_ReloadRejectsValuelessUnknownKey(t *testing.T) {
	b := harness.StartBroker(t, "")
	d := harness.NewDaemon(t, b.URL(), "")
	d.DumpOnFailure()
	d.Start()

	d.WriteConfig(b.URL(), "throttle:\n  messages_per_second: 7\nbrokr: {}\n")
	d.Signal(syscall.SIGHUP)
	harness.WaitFor(t, 10*time.Second, "the reload error", func() bool {
		return strings.Contains(d.Log(), "configuration not reloaded")
	})
	if !strings.Contains(d.Log(), "brokr: unknown key") {
		t.Errorf("reload error does not name the key brokr:\n%s", d.Log())
	}
	if !d.Running() {
		t.Fatal("daemon exited on SIGHUP with an unknown key")
	}
	if st := opsStatus(t, d); st["throttle"] == "7/s" {
		t.Errorf("status throttle = %v after a rejected reload, want the running value", st["throttle"])
	}
}

// TestOpsSignal_RepeatedReloadLogsOutcome sends SIGHUP twice for each of
// two files, one with a key that needs a restart and one that is
// invalid, and checks that every reload logs its outcome, also when it
// is the same as the one before.
func TestOpsSignal_RepeatedReloadLogsOutcome(t *testing.T) {
	b := harness.StartBroker(t, "")
	d := harness.NewDaemon(t, b.URL(), "")
	d.DumpOnFailure()
	d.Start()

	cases := []struct {
		extra, line string
	}{
		{"publish:\n  qos: 2\n", "changed settings need a restart to apply"},
		{"log:\n  level: loud\n", "configuration not reloaded"},
	}
	for _, c := range cases {
		d.WriteConfig(b.URL(), c.extra)
		for want := 1; want <= 2; want++ {
			d.Signal(syscall.SIGHUP)
			harness.WaitFor(t, 10*time.Second, fmt.Sprintf("%q logged %d times", c.line, want), func() bool {
				return strings.Count(d.Log(), c.line) >= want
			})
		}
	}
	if !d.Running() {
		t.Fatal("daemon exited on SIGHUP")
	}
}

// TestOpsSignal_StopWithStalledBroker sends SIGTERM while a PUBLISH write
// waits on a broker that stopped reading. The write's own deadline is the
// keep alive of 30 s; the daemon must stop at its drain timeout instead,
// with exit status 0.
func TestOpsSignal_StopWithStalledBroker(t *testing.T) {
	b := harness.StartBroker(t, "")
	proxy := harness.StartProxy(t, b.Addr())
	d := harness.NewDaemon(t, proxy.URL(), "broker:\n  urls: ["+proxy.URL()+"]\n  client_id: mqspool-t\n  keep_alive: 30s\n"+
		"publish:\n  max_message_bytes: 4MiB\nshutdown:\n  drain_timeout: 2s\n")
	d.DumpOnFailure()
	d.Start()
	opsConnected(t, d)

	// 40 messages of 1 MiB fill the socket buffers once the proxy stops
	// reading, so the loop's write blocks.
	proxy.SetMode(harness.Stall)
	payload := strings.Repeat("x", 1<<20)
	for i := range 40 {
		d.Drop(fmt.Sprintf("big-%03d.msg", i), []byte(fmt.Sprintf("Topic: stall/t\nQoS: 1\n\nseq-%06d%s", i, payload)))
	}
	harness.WaitFor(t, 20*time.Second, "40 messages queued", func() bool {
		st, _, code := opsTryStatus(t, d)
		return code == 0 && st["queue_messages"] == float64(40)
	})
	time.Sleep(time.Second) // the write fills the buffers and blocks

	start := time.Now()
	code := d.Stop(20 * time.Second)
	took := time.Since(start)
	if code != 0 {
		t.Errorf("exit status %d after SIGTERM, want 0", code)
	}
	if took > 4*time.Second {
		t.Errorf("stopped %s after SIGTERM, want within the 2 s drain timeout and a second", took.Round(time.Millisecond))
	}
}

// TestOpsSignal_PolicyNeverExitsOnLoss checks that with reconnect.policy
// never, a lost connection ends the daemon with exit status 1, so that
// systemd's Restart=on-failure starts it again, and that the next start
// forwards what was dropped meanwhile.
func TestOpsSignal_PolicyNeverExitsOnLoss(t *testing.T) {
	b := harness.StartBroker(t, "")
	sub := harness.Subscribe(t, b.Addr(), "never/#", 1)
	d := harness.NewDaemon(t, b.URL(), "reconnect:\n  policy: never\n")
	d.DumpOnFailure()
	d.Start()
	opsConnected(t, d)
	d.Drop("never/a/1.txt", []byte("first"))
	sub.WaitCount(1, 10*time.Second)

	b.Stop()
	if code := d.ExitCode(30 * time.Second); code != 1 {
		t.Fatalf("exit status %d after the connection ended, want 1", code)
	}
	if !strings.Contains(d.Log(), "reconnect.policy is never") {
		t.Errorf("log does not name the policy as the reason for stopping:\n%s", d.Log())
	}

	d.Drop("never/a/2.txt", []byte("second"))
	b.Start()
	sub = harness.Subscribe(t, b.Addr(), "never/#", 1)
	d.Start()
	sub.WaitCount(1, 15*time.Second)
	if got := string(sub.Messages()[0].Payload); got != "second" {
		t.Errorf("after the restart the subscriber got %q, want second", got)
	}
}
