package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// fakeHandler records commands and returns fixed results.
type fakeHandler struct {
	mu       sync.Mutex // guards commands
	commands []string
	waitFor  time.Duration // how long Wait blocks unless ctx ends
}

func (h *fakeHandler) record(c string) {
	h.mu.Lock()
	h.commands = append(h.commands, c)
	h.mu.Unlock()
}

func (h *fakeHandler) Status() Status { return Status{Connected: true, QueueMessages: 7} }
func (h *fakeHandler) Pause()         { h.record("pause") }
func (h *fakeHandler) Resume()        { h.record("resume") }
func (h *fakeHandler) Reconnect() error {
	h.record("reconnect")
	return nil
}

func (h *fakeHandler) Throttle(rate string) error {
	if rate == "bad" {
		return errors.New("rate \"bad\" is invalid")
	}
	h.record("throttle " + rate)
	return nil
}

func (h *fakeHandler) Wait(ctx context.Context, file string) WaitResult {
	select {
	case <-time.After(h.waitFor):
		return WaitResult{State: WaitDelivered, Messages: 1}
	case <-ctx.Done():
		return WaitResult{State: WaitTimedOut}
	}
}

func serve(t *testing.T, h Handler) (*Server, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ctl.sock")
	srv, err := Listen(path, h, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	t.Cleanup(func() { srv.Close() })
	return srv, path
}

func TestServer_Commands(t *testing.T) {
	h := &fakeHandler{}
	_, path := serve(t, h)
	ctx := context.Background()

	resp, err := Send(ctx, path, Request{Command: CommandStatus})
	if err != nil || resp.Status == nil || resp.Status.QueueMessages != 7 {
		t.Fatalf("status: %+v, %v", resp, err)
	}
	for _, req := range []Request{{Command: CommandPause}, {Command: CommandResume}, {Command: CommandReconnect}, {Command: CommandThrottle, Rate: "5/s"}} {
		if _, err := Send(ctx, path, req); err != nil {
			t.Errorf("%s: %v", req.Command, err)
		}
	}
	if got := strings.Join(h.commands, ","); got != "pause,resume,reconnect,throttle 5/s" {
		t.Errorf("handler saw %q", got)
	}
	if _, err := Send(ctx, path, Request{Command: CommandThrottle, Rate: "bad"}); err == nil {
		t.Error("throttle bad returned no error")
	}
	if _, err := Send(ctx, path, Request{Command: "explode"}); err == nil || !strings.Contains(err.Error(), "unknown command") {
		t.Errorf("unknown command: %v", err)
	}
}

func TestServer_Wait(t *testing.T) {
	h := &fakeHandler{waitFor: 50 * time.Millisecond}
	_, path := serve(t, h)
	ctx := context.Background()

	resp, err := Send(ctx, path, Request{Command: CommandWait, File: "a.msg", TimeoutMillis: 5000})
	if err != nil || resp.Wait == nil || resp.Wait.State != WaitDelivered {
		t.Fatalf("wait: %+v, %v", resp, err)
	}
	for _, req := range []Request{
		{Command: CommandWait, File: "../etc/passwd", TimeoutMillis: 1000},
		{Command: CommandWait, File: "a.msg"},
	} {
		if _, err := Send(ctx, path, req); err == nil {
			t.Errorf("wait %q timeout %d returned no error", req.File, req.TimeoutMillis)
		}
	}
}

func TestServer_WaitHugeTimeout(t *testing.T) {
	h := &fakeHandler{waitFor: 50 * time.Millisecond}
	_, path := serve(t, h)

	// 1e13 ms is about 317 years, more than a time.Duration holds in
	// nanoseconds, so it must be cut to the longest wait, not wrap around.
	for _, ms := range []int64{1e13, math.MaxInt64} {
		resp, err := Send(context.Background(), path, Request{Command: CommandWait, File: "a.msg", TimeoutMillis: ms})
		if err != nil {
			t.Errorf("wait with timeout %d ms: %v", ms, err)
			continue
		}
		if resp.Wait == nil || resp.Wait.State != WaitDelivered {
			t.Errorf("wait with timeout %d ms: %+v, want delivered", ms, resp.Wait)
		}
	}
}

func TestServer_WaitLongerThanRequestTimeout(t *testing.T) {
	if testing.Short() {
		t.Skip("waits past the 5s exchange timeout")
	}
	h := &fakeHandler{waitFor: requestTimeout + time.Second}
	_, path := serve(t, h)
	resp, err := Send(context.Background(), path, Request{Command: CommandWait, File: "a.msg", TimeoutMillis: 10000})
	if err != nil || resp.Wait == nil || resp.Wait.State != WaitDelivered {
		t.Fatalf("wait of %s: %+v, %v", h.waitFor, resp, err)
	}
}

func TestServer_CloseEndsWait(t *testing.T) {
	h := &fakeHandler{waitFor: time.Hour}
	srv, path := serve(t, h)
	done := make(chan WaitResult, 1)
	go func() {
		resp, _ := Send(context.Background(), path, Request{Command: CommandWait, File: "a.msg", TimeoutMillis: 3600000})
		if resp.Wait != nil {
			done <- *resp.Wait
		}
		close(done)
	}()
	time.Sleep(100 * time.Millisecond) // let the request arrive
	closed := make(chan struct{})
	go func() { srv.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close blocked on a running wait")
	}
	<-done
}

func TestListen_StaleAndLiveSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ctl.sock")
	// A socket file that no process accepts on is replaced.
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("stale socket file missing: %v", err)
	}
	srv, err := Listen(path, &fakeHandler{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("listen over a stale socket: %v", err)
	}
	go srv.Serve()
	defer srv.Close()

	// A live one is not taken over.
	if _, err := Listen(path, &fakeHandler{}, slog.New(slog.NewTextHandler(io.Discard, nil))); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("listen over a live socket: %v, want in use", err)
	}
}

// A daemon whose backlog is full makes a connect fail with EAGAIN, not
// ECONNREFUSED, so its socket is not taken for a stale one.
func TestListen_FullBacklogNotTakenOver(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ctl.sock")
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	// Nothing accepts, so connections queue until the backlog is full.
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		c, err := net.Dial("unix", path)
		if errors.Is(err, syscall.EAGAIN) {
			break
		}
		if err != nil || i == 64 {
			t.Fatalf("fill the backlog: connection %d: %v, want EAGAIN after a few", i, err)
		}
		defer c.Close()
	}

	_, err = Listen(path, &fakeHandler{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil {
		t.Fatal("Listen took over the socket of a listener with a full backlog")
	}
	if !strings.Contains(err.Error(), "another process may listen on it") {
		t.Errorf("error %q does not say that a process may listen on it", err)
	}
	if _, err := os.Lstat(path); err != nil {
		t.Errorf("socket file of the live listener: %v, want it kept", err)
	}
}

func TestWithSocketFix_FollowsCause(t *testing.T) {
	const path = "/run/mqspool/mqspool.sock"
	bind := func(errno syscall.Errno) error {
		return &net.OpError{Op: "listen", Net: "unix", Err: os.NewSyscallError("bind", errno)}
	}
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"in use", bind(syscall.EADDRINUSE), "another process listens on it"},
		{"no directory", bind(syscall.ENOENT), "its directory /run/mqspool is missing"},
		{"permission", bind(syscall.EACCES), "set control.socket to a path in a writable directory"},
		{"read-only", bind(syscall.EROFS), "set control.socket to a path in a writable directory"},
		{"other", bind(syscall.EINVAL), "check control.socket"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := withSocketFix(path, tt.err)
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
			if tt.name != "permission" && tt.name != "read-only" && strings.Contains(err.Error(), "writable") {
				t.Errorf("error %q blames write permission", err)
			}
			if !errors.Is(err, tt.err) {
				t.Errorf("error %q does not wrap the cause", err)
			}
		})
	}
}

func TestSend_NoDaemon(t *testing.T) {
	_, err := Send(context.Background(), filepath.Join(t.TempDir(), "none.sock"), Request{Command: CommandStatus})
	if !errors.Is(err, ErrNoDaemon) {
		t.Errorf("err %v, want ErrNoDaemon", err)
	}
}

// The fields that the documentation lists as always present are in the
// JSON even when they are zero, so scripts need not test for them.
func TestStatus_JSONAlwaysHasDocumentedFields(t *testing.T) {
	data, err := json.Marshal(Status{})
	if err != nil {
		t.Fatal(err)
	}
	var fields map[string]any
	if err := json.Unmarshal(data, &fields); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"connected", "queue_messages", "last_error", "time_to_drain_seconds", "failed_files", "uptime_seconds"} {
		if _, ok := fields[key]; !ok {
			t.Errorf("status JSON of a zero Status lacks %s: %s", key, data)
		}
	}
}

// Every field that docs/operations.md lists for "mqspool status --json"
// keeps its name, because scripts read the fields by name.
func TestStatus_JSONFieldNames(t *testing.T) {
	data, err := json.Marshal(Status{})
	if err != nil {
		t.Fatal(err)
	}
	var fields map[string]any
	if err := json.Unmarshal(data, &fields); err != nil {
		t.Fatal(err)
	}
	documented := []string{
		"connected", "broker", "session_present", "client_id", "queue_messages", "queue_bytes",
		"oldest_age_seconds", "inflight", "rate_in_per_second", "rate_out_per_second", "paused",
		"throttle", "disk_pressure", "spool_full", "failed_files", "failed_bytes", "stale_tmp_files",
		"waiting_files", "dropped_overflow", "last_error", "stopping", "time_to_drain_seconds",
		"reconnects", "published", "acknowledged", "failed", "uptime_seconds",
	}
	for _, key := range documented {
		if _, ok := fields[key]; !ok {
			t.Errorf("status JSON lacks the documented field %s: %s", key, data)
		}
	}
}

// A lock file that cannot be created does not stop the daemon: Claim
// returns ErrNoSocketLock, which the daemon logs before it runs on.
func TestClaim_LockFileUnavailable(t *testing.T) {
	notDir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	lockIsDir := filepath.Join(t.TempDir(), "ctl.sock")
	if err := os.Mkdir(lockIsDir+".lock", 0o700); err != nil {
		t.Fatal(err)
	}

	for _, path := range []string{filepath.Join(notDir, "ctl.sock"), lockIsDir} {
		f, err := Claim(path)
		if f != nil {
			t.Errorf("Claim(%s) returned a lock", path)
		}
		if !errors.Is(err, ErrNoSocketLock) {
			t.Errorf("Claim(%s) = %v, want ErrNoSocketLock", path, err)
		}
		if errors.Is(err, ErrSocketInUse) {
			t.Errorf("Claim(%s) = %v, want no ErrSocketInUse", path, err)
		}
	}
}

// The lock ends with its file, so the next daemon can take the socket.
func TestClaim_HeldUntilClosed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ctl.sock")
	f, err := Claim(path)
	if err != nil || f == nil {
		t.Fatalf("Claim = %v, %v, want a lock", f, err)
	}

	if _, err := Claim(path); !errors.Is(err, ErrSocketInUse) {
		t.Errorf("second Claim = %v, want ErrSocketInUse", err)
	}
	f.Close()
	g, err := Claim(path)
	if err != nil || g == nil {
		t.Fatalf("Claim after the close = %v, %v, want a lock", g, err)
	}
	g.Close()
}

// failingListener fails its first fails accepts with EMFILE, as a process
// out of file descriptors does.
type failingListener struct {
	net.Listener
	mu    sync.Mutex // guards fails
	fails int
}

func (l *failingListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	fail := l.fails > 0
	if fail {
		l.fails--
	}
	l.mu.Unlock()
	if fail {
		return nil, &net.OpError{Op: "accept", Net: "unix", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

func TestServer_AcceptErrorKeepsServing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ctl.sock")
	srv, err := Listen(path, &fakeHandler{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	srv.ln = &failingListener{Listener: srv.ln, fails: 3}
	served := make(chan struct{})
	go func() {
		srv.Serve()
		close(served)
	}()

	resp, err := Send(context.Background(), path, Request{Command: CommandStatus})
	if err != nil {
		t.Fatalf("status after failed accepts: %v", err)
	}
	if resp.Status == nil {
		t.Fatal("status after failed accepts has no status")
	}

	srv.Close()
	select {
	case <-served:
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after Close")
	}
}

// exchange writes raw to the control socket at path, closes the writing
// side and returns the response.
func exchange(t *testing.T, path string, raw []byte) Response {
	t.Helper()
	conn, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(requestTimeout))
	if _, err := conn.Write(raw); err != nil {
		t.Fatal(err)
	}
	conn.(*net.UnixConn).CloseWrite()
	var resp Response
	if err := json.NewDecoder(conn).Decode(&resp); err != nil {
		t.Fatalf("read response to %.40q: %v", raw, err)
	}
	return resp
}

func TestServer_RequestLineLimits(t *testing.T) {
	_, path := serve(t, &fakeHandler{})

	long := append([]byte(`{"command":"status"}`), bytes.Repeat([]byte(" "), maxRequestBytes)...)
	resp := exchange(t, path, append(long, '\n'))
	if !strings.Contains(resp.Error, "longer than 4096 bytes") {
		t.Errorf("long line: error %q, want one that names the 4096-byte limit", resp.Error)
	}

	resp = exchange(t, path, nil)
	if !strings.Contains(resp.Error, "request is empty") {
		t.Errorf("empty request: error %q, want request is empty", resp.Error)
	}

	resp = exchange(t, path, []byte(`{"command":"status"}`))
	if resp.Error != "" {
		t.Errorf("request without newline: error %q, want none", resp.Error)
	}
	if resp.Status == nil {
		t.Error("request without newline: no status in the response")
	}

	exact := append([]byte(`{"command":"status"}`), bytes.Repeat([]byte(" "), maxRequestBytes-21)...)
	resp = exchange(t, path, append(exact, '\n'))
	if resp.Status == nil {
		t.Errorf("request of exactly %d bytes: error %q, want a status", maxRequestBytes, resp.Error)
	}
}

func TestServer_CloseEndsIdleClient(t *testing.T) {
	srv, path := serve(t, &fakeHandler{})
	conn, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// A request on a second connection shows that the server has
	// accepted the first one, which sends nothing.
	if _, err := Send(context.Background(), path, Request{Command: CommandStatus}); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	srv.Close()
	if took := time.Since(start); took > requestTimeout/2 {
		t.Errorf("Close took %s with a client that sent nothing, want it to end the read at once", took)
	}
}

// A daemon that stops removes its socket file, but not one that another
// daemon has created at the same path since.
func TestServer_CloseKeepsOtherSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ctl.sock")
	srv, err := Listen(path, &fakeHandler{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	other, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()

	srv.Close()
	if _, err := os.Lstat(path); err != nil {
		t.Errorf("the other daemon's socket is gone after the first one stopped: %v", err)
	}
}

// Close removes the socket file it created.
func TestServer_CloseRemovesOwnSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ctl.sock")
	srv, err := Listen(path, &fakeHandler{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	srv.Close()
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket file left after Close (lstat: %v)", err)
	}
}

// A client that opens connections without end is turned away at
// maxConns with an error, and the socket serves again once some close.
func TestServer_TooManyConnections(t *testing.T) {
	_, path := serve(t, &fakeHandler{})
	idle := make([]net.Conn, 0, maxConns)
	t.Cleanup(func() {
		for _, c := range idle {
			c.Close()
		}
	})
	for range maxConns {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		idle = append(idle, c)
	}

	_, err := Send(context.Background(), path, Request{Command: CommandStatus})
	if err == nil || !strings.Contains(err.Error(), "control connections open") {
		t.Fatalf("request over the limit: %v, want an error naming the limit", err)
	}
	for _, c := range idle[:8] {
		c.Close()
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		_, err = Send(context.Background(), path, Request{Command: CommandStatus})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after closing idle connections: %v, want status", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// countingWaits is a handler whose Wait counts its calls and blocks until
// ctx ends.
type countingWaits struct {
	fakeHandler
	calls atomic.Int32
}

func (h *countingWaits) Wait(ctx context.Context, file string) WaitResult {
	h.calls.Add(1)
	<-ctx.Done()
	return WaitResult{State: WaitTimedOut}
}

// As many wait requests as the socket takes connections still leave
// room for status and ctl, such as the resume that lets them end.
func TestServer_WaitsLeaveRoomForCommands(t *testing.T) {
	h := &countingWaits{}
	srv, path := serve(t, h)
	var wg sync.WaitGroup
	t.Cleanup(func() {
		srv.Close()
		wg.Wait()
	})
	for range maxConns {
		wg.Go(func() {
			Send(context.Background(), path, Request{Command: CommandWait, File: "a.msg", TimeoutMillis: 60000})
		})
	}
	deadline := time.Now().Add(5 * time.Second)
	for h.calls.Load() < maxConns-16 {
		if time.Now().After(deadline) {
			t.Fatalf("%d waits served after 5s", h.calls.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)

	var err error
	for range 10 {
		if _, err = Send(context.Background(), path, Request{Command: CommandResume}); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Errorf("resume while waits fill the socket: %v, want it served", err)
	}
	if _, err := Send(context.Background(), path, Request{Command: CommandStatus}); err != nil {
		t.Errorf("status while waits fill the socket: %v, want it served", err)
	}
	_, err = Send(context.Background(), path, Request{Command: CommandWait, File: "b.msg", TimeoutMillis: 60000})
	if !errors.Is(err, ErrBusy) {
		t.Errorf("one more wait: %v, want ErrBusy", err)
	}
}
