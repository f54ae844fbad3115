package test

import (
	"encoding/json"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"

	"github.com/mqspool/mqspool/test/harness"
)

// opsPackets returns the packets of type typ in direction dir that the
// proxy saw after since.
func opsPackets(p *harness.Proxy, dir harness.Direction, typ byte, since time.Time) []harness.Packet {
	var out []harness.Packet
	for _, pk := range p.Packets() {
		if pk.Dir == dir && pk.Type == typ && pk.At.After(since) {
			out = append(out, pk)
		}
	}
	return out
}

// opsStatus runs "mqspool status --json" and decodes it.
func opsStatus(t *testing.T, d *harness.Daemon) map[string]any {
	t.Helper()
	st, out, code := opsTryStatus(t, d)
	if code != 0 {
		t.Fatalf("status exited %d:\n%s", code, out)
	}
	return st
}

// opsTryStatus runs "mqspool status --json" and returns the decoded
// output, or the exit code when it failed.
func opsTryStatus(t *testing.T, d *harness.Daemon) (map[string]any, string, int) {
	t.Helper()
	out, code := d.Ctl("status", "--json")
	if code != 0 {
		return nil, out, code
	}
	var st map[string]any
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json output is not JSON: %v\n%s", err, out)
	}
	return st, out, 0
}

// opsConnected waits until status reports a broker connection. The
// control socket may not listen yet right after Start.
func opsConnected(t *testing.T, d *harness.Daemon) {
	t.Helper()
	opsWait(t, "connected", func() bool {
		st, _, code := opsTryStatus(t, d)
		return code == 0 && st["connected"] == true
	})
}

// opsWait polls a condition that runs the binary, at a pace that leaves
// the machine to the daemon.
func opsWait(t *testing.T, what string, cond func() bool) {
	t.Helper()
	harness.WaitEvery(t, 15*time.Second, 150*time.Millisecond, what, cond)
}

// opsCtl runs a ctl command and fails the test unless it exits 0.
func opsCtl(t *testing.T, d *harness.Daemon, args ...string) {
	t.Helper()
	if out, code := d.Ctl(append([]string{"ctl"}, args...)...); code != 0 {
		t.Fatalf("ctl %v exited %d:\n%s", args, code, out)
	}
}

// opsDropMsgs drops n .msg files on topic.
func opsDropMsgs(d *harness.Daemon, topic string, n int) {
	for i := range n {
		body := fmt.Sprintf("Topic: %s\nQoS: 1\n\nmsg-%04d", topic, i)
		d.Drop(fmt.Sprintf("%s-%04d.msg", strings.ReplaceAll(topic, "/", "_"), i), []byte(body))
	}
}

// TestOpsControl_PauseStatusResume pauses a forwarding daemon, checks that
// nothing is published while keep alive continues and that status shows
// the queue, then resumes and checks everything arrives.
func TestOpsControl_PauseStatusResume(t *testing.T) {
	b := harness.StartBroker(t, "")
	proxy := harness.StartProxy(t, b.Addr())
	sub := harness.Subscribe(t, b.Addr(), "ctl/#", 1)
	d := harness.NewDaemon(t, proxy.URL(), "broker:\n  urls: ["+proxy.URL()+"]\n  client_id: mqspool-t\n  keep_alive: 2s\n")
	d.DumpOnFailure()
	d.Start()
	opsConnected(t, d)

	opsCtl(t, d, "pause")
	pausedAt := time.Now()
	opsDropMsgs(d, "ctl/a", 5)
	opsWait(t, "5 queued messages in status", func() bool {
		return opsStatus(t, d)["queue_messages"] == 5.0
	})
	harness.WaitFor(t, 10*time.Second, "a PINGREQ while paused", func() bool {
		return len(opsPackets(proxy, harness.ToBroker, packets.PINGREQ, pausedAt)) > 0
	})

	st := opsStatus(t, d)
	if st["paused"] != true {
		t.Errorf("status paused = %v, want true", st["paused"])
	}
	if st["broker"] != proxy.URL() {
		t.Errorf("status broker = %v, want %s", st["broker"], proxy.URL())
	}
	if st["client_id"] != "mqspool-t" {
		t.Errorf("status client_id = %v, want mqspool-t", st["client_id"])
	}
	if st["inflight"] != 0.0 {
		t.Errorf("status inflight = %v while paused, want 0", st["inflight"])
	}
	if n := len(opsPackets(proxy, harness.ToBroker, packets.PUBLISH, pausedAt)); n != 0 {
		t.Errorf("%d PUBLISH packets while paused, want 0", n)
	}
	out, _ := d.Ctl("status")
	for _, want := range []string{"connected to " + proxy.URL(), "5 messages", "paused:          true"} {
		if !strings.Contains(out, want) {
			t.Errorf("status output lacks %q:\n%s", want, out)
		}
	}

	opsCtl(t, d, "resume")
	sub.WaitCount(5, 10*time.Second)
	opsWait(t, "an empty queue in status", func() bool {
		st := opsStatus(t, d)
		return st["queue_messages"] == 0.0 && st["acknowledged"] == 5.0
	})
}

// TestOpsControl_Throttle checks that ctl throttle holds the publish rate
// within 10 percent over a few seconds, that a byte rate keeps the
// message rate, and that off clears both.
func TestOpsControl_Throttle(t *testing.T) {
	const rate, total = 30.0, 90
	b := harness.StartBroker(t, "")
	proxy := harness.StartProxy(t, b.Addr())
	sub := harness.Subscribe(t, b.Addr(), "thr/#", 1)
	d := harness.NewDaemon(t, proxy.URL(), "")
	d.DumpOnFailure()
	d.Start()
	opsConnected(t, d)

	if out, code := d.Ctl("ctl", "throttle", "30/s"); code != 0 || !strings.Contains(out, "throttle 30/s: done") {
		t.Fatalf("ctl throttle 30/s: exit %d, output %q; want 0 and a confirmation", code, out)
	}
	if st := opsStatus(t, d); st["throttle"] != "30/s" {
		t.Errorf("status throttle = %v, want 30/s", st["throttle"])
	}
	start := time.Now()
	var lines strings.Builder
	for i := range total {
		fmt.Fprintf(&lines, `{"topic":"thr/x","payload":"m%03d"}`+"\n", i)
	}
	d.Drop("batch.jsonl", []byte(lines.String()))
	sub.WaitCount(total, 20*time.Second)

	pubs := opsPackets(proxy, harness.ToBroker, packets.PUBLISH, start)
	if len(pubs) != total {
		t.Fatalf("%d PUBLISH packets, want %d", len(pubs), total)
	}
	// The limiter's burst lets the first few out at once; measure the
	// steady rate after them.
	const skip = 10
	span := pubs[total-1].At.Sub(pubs[skip].At).Seconds()
	got := float64(total-1-skip) / span
	if got < rate*0.9 || got > rate*1.1 {
		t.Errorf("publish rate %.1f/s over %.1fs, want %.0f/s within 10%%", got, span, rate)
	}

	// A byte rate is a second limit beside the message rate.
	opsCtl(t, d, "throttle", "1MiB/s")
	if st := opsStatus(t, d); st["throttle"] != "30/s, 1MiB/s" {
		t.Errorf("status throttle after a byte rate = %v, want 30/s, 1MiB/s", st["throttle"])
	}
	opsCtl(t, d, "throttle", "off")
	if st := opsStatus(t, d); st["throttle"] != "off" {
		t.Errorf("status throttle after off = %v, want off", st["throttle"])
	}
}

// TestOpsControl_Reconnect checks that ctl reconnect makes a new CONNECT.
func TestOpsControl_Reconnect(t *testing.T) {
	b := harness.StartBroker(t, "")
	proxy := harness.StartProxy(t, b.Addr())
	d := harness.NewDaemon(t, proxy.URL(), "")
	d.DumpOnFailure()
	d.Start()
	opsConnected(t, d)

	before := time.Now()
	opsCtl(t, d, "reconnect")
	harness.WaitFor(t, 10*time.Second, "a new CONNECT after ctl reconnect", func() bool {
		return len(opsPackets(proxy, harness.ToBroker, packets.CONNECT, before)) == 1
	})
	opsWait(t, "connected again", func() bool {
		st := opsStatus(t, d)
		return st["connected"] == true && st["reconnects"] == 1.0
	})
	if n := len(opsPackets(proxy, harness.ToBroker, packets.DISCONNECT, before)); n != 1 {
		t.Errorf("%d DISCONNECT packets before the reconnect, want 1", n)
	}
}

// TestOpsControl_StatusShowsFailedAtOnce drops a file that cannot be
// stored and checks that status counts it and its bytes in failed/
// before the next rescan of the spool directory.
func TestOpsControl_StatusShowsFailedAtOnce(t *testing.T) {
	b := harness.StartBroker(t, "")
	d := harness.NewDaemon(t, b.URL(), "pickup:\n  rescan_interval: 1h\n")
	d.DumpOnFailure()
	d.Start()
	opsConnected(t, d)

	body := []byte("Topic: ctl/bad\nQoS: 7\n\nx")
	d.Drop("bad.msg", body)
	// The bytes include the .reason file, written just after the file
	// is moved, so status may show the file a moment before its reason.
	opsWait(t, "one file in failed/ with its reason in status", func() bool {
		st := opsStatus(t, d)
		got, _ := st["failed_bytes"].(float64)
		return st["failed_files"] == 1.0 && got > float64(len(body))
	})
}

// TestOpsControl_NoDaemon checks that status and ctl exit 1 when nothing
// listens on the socket.
func TestOpsControl_NoDaemon(t *testing.T) {
	sock := t.TempDir() + "/none.sock"
	for _, args := range [][]string{{"status"}, {"status", "--json"}, {"ctl", "pause"}, {"ctl", "throttle", "5/s"}} {
		out, code := harness.Command(t, append(args, "--socket", sock)...)
		if code != 1 {
			t.Errorf("%v exited %d, want 1:\n%s", args, code, out)
		}
		if !strings.Contains(out, "no mqspool daemon is listening") {
			t.Errorf("%v output does not say no daemon listens:\n%s", args, out)
		}
	}
	if out, code := harness.Command(t, "ctl", "throttle", "fast", "--socket", sock); code != 2 {
		t.Errorf("ctl throttle fast exited %d, want 2 (invalid usage):\n%s", code, out)
	}
}

// TestOpsControl_StoppingRefusesReconnect checks that during the drain of
// a stop, status reports the daemon as stopping, and ctl reconnect exits 1
// instead of reporting a reconnect that does not happen.
func TestOpsControl_StoppingRefusesReconnect(t *testing.T) {
	b := harness.StartBroker(t, "")
	d := harness.NewDaemon(t, b.URL(), "shutdown:\n  drain_timeout: 10s\n")
	d.DumpOnFailure()
	d.Start()
	opsConnected(t, d)

	b.Pause() // no acknowledgement comes, so the drain waits
	defer b.Resume()
	d.Drop("stop/a/1.txt", []byte("in flight"))
	opsWait(t, "a message in flight", func() bool {
		st, _, code := opsTryStatus(t, d)
		return code == 0 && st["inflight"] == float64(1)
	})
	d.Signal(syscall.SIGTERM)
	opsWait(t, "status stopping", func() bool {
		st, _, code := opsTryStatus(t, d)
		return code == 0 && st["stopping"] == true
	})

	out, code := d.Ctl("ctl", "reconnect")
	if code != 1 || !strings.Contains(out, "stopping") {
		t.Errorf("ctl reconnect while stopping: exit %d, output %q; want 1 and the reason", code, out)
	}
	b.Resume()
	if code := d.ExitCode(30 * time.Second); code != 0 {
		t.Errorf("exit status %d after the drain, want 0", code)
	}
}
