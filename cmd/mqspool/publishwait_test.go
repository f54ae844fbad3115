package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mqspool/mqspool/internal/control"
)

// stoppingDaemon is a control handler that replies to the first wait
// request as a daemon that begins to stop, and to later ones with result.
type stoppingDaemon struct {
	waits  atomic.Int32
	result control.WaitResult
}

func (d *stoppingDaemon) Status() control.Status     { return control.Status{} }
func (d *stoppingDaemon) Pause()                     {}
func (d *stoppingDaemon) Resume()                    {}
func (d *stoppingDaemon) Reconnect() error           { return nil }
func (d *stoppingDaemon) Throttle(rate string) error { return nil }
func (d *stoppingDaemon) Wait(ctx context.Context, file string) control.WaitResult {
	if d.waits.Add(1) == 1 {
		return control.WaitResult{State: control.WaitStopped, Reason: "the daemon is stopping"}
	}
	return d.result
}

func listenControl(t *testing.T, h control.Handler) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ctl.sock")
	srv, err := control.Listen(path, h, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	t.Cleanup(func() { srv.Close() })
	return path
}

func TestAskWait_AsksAgainAfterStop(t *testing.T) {
	d := &stoppingDaemon{result: control.WaitResult{State: control.WaitDelivered, Messages: 1}}
	socket := listenControl(t, d)

	res, err := askWait(context.Background(), socket, "a.msg", time.Now().Add(5*time.Second), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if res.State != control.WaitDelivered {
		t.Errorf("result %+v, want delivered from the second request", res)
	}
	if n := d.waits.Load(); n != 2 {
		t.Errorf("%d wait requests, want 2", n)
	}
}

func TestAskWait_StopThenDeadlineTimesOut(t *testing.T) {
	d := &stoppingDaemon{result: control.WaitResult{State: control.WaitStopped, Reason: "the daemon is stopping"}}
	socket := listenControl(t, d)

	res, err := askWait(context.Background(), socket, "a.msg", time.Now().Add(500*time.Millisecond), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if res.State != control.WaitTimedOut || res.Reason != "the daemon stopped before the acknowledgement" {
		t.Errorf("result %+v, want timed out because the daemon stopped", res)
	}
}

// recordingDaemon returns result for every wait request and counts them.
type recordingDaemon struct {
	stoppingDaemon
}

func (d *recordingDaemon) Wait(ctx context.Context, file string) control.WaitResult {
	d.waits.Add(1)
	return d.result
}

func TestAskWait_PastDeadlineStillAsks(t *testing.T) {
	d := &recordingDaemon{stoppingDaemon{result: control.WaitResult{State: control.WaitDelivered, Messages: 1}}}
	socket := listenControl(t, d)

	res, err := askWait(context.Background(), socket, "a.msg", time.Now().Add(-time.Millisecond), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if res.State != control.WaitDelivered {
		t.Errorf("result %+v, want the daemon's delivered", res)
	}
	if n := d.waits.Load(); n != 1 {
		t.Errorf("%d wait requests, want 1", n)
	}
}

func TestAskWait_PastDeadlineNoDaemonTimesOut(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "ctl.sock")
	res, err := askWait(context.Background(), socket, "a.msg", time.Now().Add(-time.Millisecond), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if res.State != control.WaitTimedOut || res.Reason != "no daemon listened on "+socket {
		t.Errorf("result %+v, want timed out because no daemon listened", res)
	}
}

func TestAskWait_NotesMissingDaemonOnce(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "none.sock")
	var stderr strings.Builder

	res, err := askWait(context.Background(), socket, "a.msg", time.Now().Add(700*time.Millisecond), &stderr)
	if err != nil {
		t.Fatal(err)
	}
	if res.State != control.WaitTimedOut {
		t.Errorf("result %+v, want timed out", res)
	}
	if n := strings.Count(stderr.String(), "no daemon listens on "+socket+" yet"); n != 1 {
		t.Errorf("stderr %q notes the missing daemon %d times, want once", stderr.String(), n)
	}
}

// listenBusy serves a control socket that turns the first busyFor
// connections away as a daemon at its maximum of connections does, and
// replies to later wait requests with delivered.
func listenBusy(t *testing.T, busyFor int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ctl.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for n := 0; ; n++ {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			resp := control.Response{Busy: true, Error: "daemon has 256 control connections open"}
			if busyFor >= 0 && n >= busyFor {
				var req control.Request
				json.NewDecoder(conn).Decode(&req)
				resp = control.Response{Wait: &control.WaitResult{State: control.WaitDelivered, Messages: 1}}
			}
			json.NewEncoder(conn).Encode(resp)
			conn.Close()
		}
	}()
	return path
}

func TestAskWait_AsksAgainWhileBusy(t *testing.T) {
	socket := listenBusy(t, 3)
	var stderr strings.Builder

	res, err := askWait(context.Background(), socket, "a.msg", time.Now().Add(5*time.Second), &stderr)
	if err != nil {
		t.Fatalf("askWait: %v, want the result once the daemon serves the request", err)
	}
	if res.State != control.WaitDelivered {
		t.Errorf("result %+v, want delivered", res)
	}
	if n := strings.Count(stderr.String(), "maximum of control connections"); n != 1 {
		t.Errorf("stderr %q notes the busy socket %d times, want once", stderr.String(), n)
	}
}

func TestAskWait_BusyUntilDeadlineTimesOut(t *testing.T) {
	socket := listenBusy(t, -1)

	res, err := askWait(context.Background(), socket, "a.msg", time.Now().Add(500*time.Millisecond), io.Discard)
	if err != nil {
		t.Fatalf("askWait: %v, want a timeout result, since the message stays queued", err)
	}
	if res.State != control.WaitTimedOut {
		t.Errorf("state %q, want %q", res.State, control.WaitTimedOut)
	}
	if !strings.Contains(res.Reason, "maximum of control connections") {
		t.Errorf("reason %q does not name the busy control socket", res.Reason)
	}
}
