package daemon

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// listenNotify replaces systemd's notification socket in tests.
func listenNotify(t *testing.T) *net.UnixConn {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	return conn
}

// nextDatagram returns the next notification, or "" when none arrives
// within wait.
func nextDatagram(conn *net.UnixConn, wait time.Duration) string {
	buf := make([]byte, 1024)
	conn.SetReadDeadline(time.Now().Add(wait))
	n, _, err := conn.ReadFromUnix(buf)
	if err != nil {
		return ""
	}
	return string(buf[:n])
}

func TestWatchdogTick_WithheldWhenStalled(t *testing.T) {
	conn := listenNotify(t)
	d := &Daemon{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	d.notify = notifier{log: d.log}

	// A Poll that should have returned long ago: no ping.
	d.live.beatLoop(time.Now().Add(-time.Minute), time.Second)
	d.watchdogTick(time.Now())
	if got := nextDatagram(conn, 200*time.Millisecond); got != "" {
		t.Errorf("stalled event loop still sent %q", got)
	}

	// A fresh heartbeat: ping.
	d.live.beatLoop(time.Now(), time.Second)
	d.watchdogTick(time.Now())
	if got := nextDatagram(conn, 2*time.Second); got != "WATCHDOG=1" {
		t.Errorf("healthy daemon sent %q, want WATCHDOG=1", got)
	}

	// The pickup stopped: no ping, however fresh the loop is.
	d.live.pickupEnded.Store(true)
	d.watchdogTick(time.Now())
	if got := nextDatagram(conn, 200*time.Millisecond); got != "" {
		t.Errorf("stopped pickup still sent %q", got)
	}
}

// A stall that goes on logs one line per repeat window, with the overdue
// time as an attribute, not one line per tick.
func TestWatchdogTick_StallLogsOnce(t *testing.T) {
	var buf bytes.Buffer
	d := &Daemon{log: slog.New(LimitRepeats(slog.NewTextHandler(&buf, nil), time.Hour))}
	d.notify = notifier{log: d.log}
	start := time.Now()
	d.live.beatLoop(start, time.Second)

	for i := range 3 {
		d.watchdogTick(start.Add(time.Minute + time.Duration(i)*time.Second))
	}

	out := buf.String()
	if n := strings.Count(out, "watchdog ping withheld"); n != 1 {
		t.Errorf("%d lines for one stall, want 1:\n%s", n, out)
	}
	if !strings.Contains(out, "overdue=") {
		t.Errorf("line lacks the overdue attribute:\n%s", out)
	}
}

// WATCHDOG_USEC is the timeout after which systemd kills the daemon, and
// the daemon pings at half of it: the log names both.
func TestWatchdog_LogsTimeoutAndPingInterval(t *testing.T) {
	listenNotify(t)
	t.Setenv("WATCHDOG_USEC", "4000000")
	var out bytes.Buffer
	d := &Daemon{log: slog.New(slog.NewTextHandler(&out, nil))}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	d.watchdog(ctx)

	for _, want := range []string{"timeout=4s", "ping_interval=2s"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("log %q lacks %s", out.String(), want)
		}
	}
	if strings.Contains(out.String(), "interval=4s") {
		t.Errorf("log %q calls the timeout an interval", out.String())
	}
}
