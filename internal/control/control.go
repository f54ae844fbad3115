// Package control serves the daemon's unix control socket and is the client
// that the status and ctl commands use. Each connection carries one JSON
// request line and one JSON response line.
package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// Commands accepted on the socket.
const (
	CommandStatus    = "status"
	CommandPause     = "pause"
	CommandResume    = "resume"
	CommandReconnect = "reconnect"
	CommandThrottle  = "throttle"
	CommandWait      = "wait"
)

// Request is one command. Rate is set for throttle, in the syntax of
// "mqspool ctl throttle". File and TimeoutMillis are set for wait.
type Request struct {
	Command string `json:"command"`
	Rate    string `json:"rate,omitempty"`
	// File is the name of a file dropped into new/, relative to new/.
	File          string `json:"file,omitempty"`
	TimeoutMillis int64  `json:"timeout_ms,omitempty"`
}

// Response is the reply to a Request. Error is empty on success.
type Response struct {
	Error  string      `json:"error,omitempty"`
	Status *Status     `json:"status,omitempty"`
	Wait   *WaitResult `json:"wait,omitempty"`
	// Busy is set when the daemon turned the connection away because it
	// serves its maximum of connections already. The request did not run.
	Busy bool `json:"busy,omitempty"`
}

// States of a [WaitResult].
const (
	// WaitDelivered: the broker acknowledged every message of the file.
	WaitDelivered = "delivered"
	// WaitRejected: the file or one of its messages was moved to failed/.
	WaitRejected = "rejected"
	// WaitDropped: a message expired or was dropped while offline.
	WaitDropped = "dropped"
	// WaitTimedOut: the timeout passed first.
	WaitTimedOut = "timed_out"
	// WaitStopped: the daemon began to stop first.
	WaitStopped = "stopped"
)

// WaitResult is the end of a wait request for one file.
type WaitResult struct {
	State    string `json:"state"`
	Reason   string `json:"reason,omitempty"`
	Messages int    `json:"messages,omitempty"`
}

// Status is the daemon state that "mqspool status" prints.
type Status struct {
	Connected      bool    `json:"connected"`
	Broker         string  `json:"broker"`
	SessionPresent bool    `json:"session_present"`
	ClientID       string  `json:"client_id"`
	QueueMessages  int64   `json:"queue_messages"`
	QueueBytes     int64   `json:"queue_bytes"`
	OldestAgeSecs  float64 `json:"oldest_age_seconds"`
	Inflight       int     `json:"inflight"`
	RateIn         float64 `json:"rate_in_per_second"`
	RateOut        float64 `json:"rate_out_per_second"`
	Paused         bool    `json:"paused"`
	Throttle       string  `json:"throttle"`
	DiskPressure   bool    `json:"disk_pressure"`
	SpoolFull      bool    `json:"spool_full"`
	FailedFiles    int     `json:"failed_files"`
	FailedBytes    int64   `json:"failed_bytes"`
	StaleTmpFiles  int     `json:"stale_tmp_files"`
	// WaitingFiles counts the files in new/ held back by a full spool,
	// disk pressure or a store error.
	WaitingFiles int `json:"waiting_files"`
	// DroppedOverflow counts the messages that spool.overflow drop-oldest
	// deleted since the database was created.
	DroppedOverflow uint64 `json:"dropped_overflow"`
	// FailedError is the reason failed/ cannot take files, if it cannot.
	FailedError string `json:"failed_error,omitempty"`
	// FailedKept counts the messages kept in the spool since the start
	// because failed/ could not take them. They are sent again after the
	// next start.
	FailedKept uint64 `json:"failed_kept,omitempty"`
	// IntakeError is the last error of the spool directory's intake, and
	// IntakeErrorAgeSecs how long ago it happened.
	IntakeError        string  `json:"intake_last_error,omitempty"`
	IntakeErrorAgeSecs float64 `json:"intake_last_error_age_seconds,omitempty"`
	// PartialFile is the long .jsonl file being stored in parts, if any.
	PartialFile *PartialFile `json:"partial_file,omitempty"`
	// DamagedDatabase is the path the start moved a damaged spool.db to,
	// whose messages "mqspool spool salvage" recovers, or empty.
	DamagedDatabase string `json:"damaged_database_renamed_to,omitempty"`
	// SpoolDirLockedElsewhere is true while another daemon holds the lock
	// of the spool directory at the path, so this one takes no new files.
	SpoolDirLockedElsewhere bool   `json:"spool_dir_locked_elsewhere,omitempty"`
	LastError               string `json:"last_error"` // empty when there was none
	// Stopping is true while the daemon drains before it exits.
	Stopping     bool    `json:"stopping"`
	DrainETASecs float64 `json:"time_to_drain_seconds"`
	Reconnects   uint64  `json:"reconnects"`
	Published    uint64  `json:"published"`
	Acknowledged uint64  `json:"acknowledged"`
	Failed       uint64  `json:"failed"`
	UptimeSecs   float64 `json:"uptime_seconds"`
	// Subscriptions has one entry per downlink subscription.
	Subscriptions []SubscriptionStatus `json:"subscriptions,omitempty"`
}

// PartialFile counts the messages of a long .jsonl file that are in the
// spool while the file is stored in parts.
type PartialFile struct {
	Path   string `json:"path"`
	Stored int    `json:"stored_messages"`
	Total  int    `json:"total_messages"`
}

// Handler carries out commands for the server.
type Handler interface {
	Status() Status
	Pause()
	Resume()
	// Reconnect returns an error when the daemon does not reconnect, such
	// as while it stops.
	Reconnect() error
	Throttle(rate string) error
	// Wait blocks until the messages of file (relative to new/) are done
	// with, or ctx ends.
	Wait(ctx context.Context, file string) WaitResult
}

// requestTimeout bounds one exchange on either side, so a stuck peer
// cannot hold a connection or a client forever.
const requestTimeout = 5 * time.Second

// maxWait bounds the timeout of one wait request.
const maxWait = 24 * time.Hour

// Server listens on the control socket.
type Server struct {
	path    string
	created os.FileInfo // the socket file as Listen created it
	handler Handler
	log     *slog.Logger
	ln      net.Listener
	wg      sync.WaitGroup
	ctx     context.Context // cancelled by Close, ends waits
	cancel  context.CancelFunc

	// mu orders the wg.Add of each accepted connection before the
	// wg.Wait of Close: a WaitGroup must not grow while it is waited on.
	// It also guards conns.
	mu     sync.Mutex
	closed bool
	// conns are the open connections, whose reads Close ends. full is set
	// from the first connection turned away at maxConns until one is
	// taken again, so that each spell is logged once.
	conns map[net.Conn]struct{}
	full  bool
	// waits counts the wait requests being served.
	waits int
}

// maxConns bounds the open control connections. Each holds a goroutine
// and a file descriptor, and a wait holds them up to its timeout, so a
// client of the socket's group that opens connections without end would
// otherwise use up the daemon's file descriptors.
const maxConns = 256

// maxWaits bounds the wait requests served at once. It is below maxConns,
// so that many "publish --wait" runs leave connections for status and ctl,
// such as the "ctl resume" that lets their messages go out.
const maxWaits = maxConns - 16

// Listen creates the socket at path with mode 0660, replacing a stale
// socket file left by a process that is gone.
func Listen(path string, h Handler, log *slog.Logger) (*Server, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, withSocketFix(path, fmt.Errorf("create control socket directory: %w", err))
	}
	if err := removeStale(path); err != nil {
		return nil, err
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, withSocketFix(path, fmt.Errorf("listen on control socket %s: %w", path, err))
	}
	if err := os.Chmod(path, 0o660); err != nil {
		ln.Close()
		return nil, fmt.Errorf("set mode of control socket %s: %w", path, err)
	}
	// Close removes the socket file itself, and only while it is still
	// this listener's: another daemon may have taken the path since.
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	created, _ := os.Lstat(path)
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{path: path, created: created, handler: h, log: log, ln: ln, ctx: ctx, cancel: cancel,
		conns: map[net.Conn]struct{}{}}, nil
}

// withSocketFix appends to err, a failure to create the control socket
// at path, the fix that fits its cause.
func withSocketFix(path string, err error) error {
	var fix string
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		fix = "another process listens on it: stop that process, or set control.socket to another path"
	case errors.Is(err, fs.ErrNotExist):
		fix = fmt.Sprintf("its directory %s is missing: create it (RuntimeDirectory= in the unit), "+
			"or set control.socket to a path in an existing directory", filepath.Dir(path))
	case errors.Is(err, fs.ErrPermission), errors.Is(err, syscall.EROFS):
		fix = "this user may not create it there: set control.socket to a path in a writable directory"
	default:
		fix = "check control.socket"
	}
	return fmt.Errorf("%w: %s", err, fix)
}

// ErrSocketInUse reports a control socket on which another process
// accepts connections.
var ErrSocketInUse = errors.New("in use by another process, most likely another mqspool daemon")

// Claim takes the lock file beside the control socket at path, so that
// of two daemons started at once with one control.socket only one listens
// there. It returns [ErrSocketInUse] when another daemon holds the lock or
// a process accepts connections on path. When the lock file cannot be
// created or locked, for example because another user owns it, it returns
// a nil file and an error wrapping [ErrNoSocketLock]: the daemon may then
// run without the lock, and should log the error. The lock lasts until the
// file is closed or the process ends.
func Claim(path string) (*os.File, error) {
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, inUse(path)
	}
	lockPath := path + ".lock"
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, noLock(lockPath, err)
	}
	f, err := os.OpenFile(lockPath, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, noLock(lockPath, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, inUse(path)
		}
		return nil, noLock(lockPath, os.NewSyscallError("flock", err))
	}
	return f, nil
}

// ErrNoSocketLock reports a lock file beside the control socket that
// could not be created or locked.
var ErrNoSocketLock = errors.New("control socket lock unavailable")

func noLock(lockPath string, err error) error {
	return fmt.Errorf("%w: %s: %w: let the daemon's user create and write it, or remove it", ErrNoSocketLock, lockPath, err)
}

func inUse(path string) error {
	return fmt.Errorf("control socket %s is %w: give each daemon its own control.socket", path, ErrSocketInUse)
}

// removeStale deletes a socket file that no process accepts on, which
// the kernel shows by refusing the connection. A live socket means
// another daemon runs with the same control.socket. Any other failure to
// connect, such as a full backlog or a socket this user may not open,
// leaves the file alone, because a daemon may still listen on it.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("inspect control socket %s: %w", path, err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("control socket path %s exists and is not a socket: remove it or set control.socket", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	switch {
	case err == nil:
		c.Close()
		return fmt.Errorf("control socket %s is in use by another mqspool: stop it or set control.socket", path)
	case errors.Is(err, fs.ErrNotExist):
		// Removed since the Lstat above.
		return nil
	case !errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("control socket %s exists and connecting to it failed: %w: another process may "+
			"listen on it: stop it, or remove the file if none does, or set control.socket to another path", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return withSocketFix(path, fmt.Errorf("remove stale control socket: %w", err))
	}
	return nil
}

// First and maximum wait after a failed accept, such as one for too many
// open files, before Serve tries again.
const (
	acceptRetryMin = 5 * time.Millisecond
	acceptRetryMax = time.Second
)

// Serve accepts connections until Close. A failed accept is retried after
// a growing wait, so that a moment without free file descriptors does not
// close the socket for the rest of the daemon's life.
func (s *Server) Serve() {
	var retry time.Duration
	for {
		conn, err := s.ln.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			retry = min(max(2*retry, acceptRetryMin), acceptRetryMax)
			s.log.Error("control socket accept failed, retrying", "err", err, "retry_in", retry)
			time.Sleep(retry)
			continue
		}
		retry = 0
		// The deadline is set before Close can see the connection, so
		// that it does not replace the one Close sets.
		conn.SetDeadline(time.Now().Add(requestTimeout))
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			conn.Close()
			return
		}
		if len(s.conns) >= maxConns {
			s.turnAway(conn)
			s.mu.Unlock()
			continue
		}
		s.full = false
		s.conns[conn] = struct{}{}
		s.wg.Go(func() { s.serveConn(conn) })
		s.mu.Unlock()
	}
}

// turnAway writes an error response to a connection over maxConns and
// closes it. The response fits the socket's buffer, and the deadline set at accept
// bounds the write all the same.
func (s *Server) turnAway(conn net.Conn) {
	if !s.full {
		s.full = true
		s.log.Warn("control socket turns connections away: too many open", "open", len(s.conns),
			"max", maxConns, "hint", "find the client that opens connections without closing them")
	}
	json.NewEncoder(conn).Encode(Response{Busy: true, Error: fmt.Sprintf(
		"daemon has %d control connections open, the most it serves at once: retry later", maxConns)})
	conn.Close()
}

// Close stops accepting, ends running waits and the reads of clients that
// have not sent their request yet, waits for open exchanges and removes
// the socket.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	for conn := range s.conns {
		conn.SetReadDeadline(time.Now())
	}
	s.mu.Unlock()
	err := s.ln.Close()
	s.cancel()
	s.wg.Wait()
	if current, statErr := os.Lstat(s.path); statErr == nil && s.created != nil && os.SameFile(s.created, current) {
		os.Remove(s.path)
	}
	return err
}

func (s *Server) serveConn(conn net.Conn) {
	defer func() {
		s.mu.Lock()
		delete(s.conns, conn)
		s.mu.Unlock()
		conn.Close()
	}()

	req, err := readRequest(conn)
	if err != nil {
		s.log.Warn("control request unreadable", "err", err)
		json.NewEncoder(conn).Encode(Response{Error: err.Error()})
		return
	}

	if req.Command == CommandWait {
		if !s.startWait() {
			json.NewEncoder(conn).Encode(Response{Busy: true, Error: fmt.Sprintf(
				"daemon serves %d wait requests, the most it serves at once: retry later", maxWaits)})
			return
		}
		defer s.endWait()
		conn.SetDeadline(time.Now().Add(waitTimeout(req) + requestTimeout))
	}
	resp := s.dispatch(req)
	if resp.Error == "" && req.Command != CommandStatus && req.Command != CommandWait {
		s.log.Info("control command", "command", req.Command, "rate", req.Rate)
	}
	if err := json.NewEncoder(conn).Encode(resp); err != nil {
		s.log.Warn("control response not sent", "command", req.Command, "err", err)
	}
}

// startWait counts a wait request in, unless maxWaits are served.
func (s *Server) startWait() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.waits >= maxWaits {
		return false
	}
	s.waits++
	return true
}

func (s *Server) endWait() {
	s.mu.Lock()
	s.waits--
	s.mu.Unlock()
}

// maxRequestBytes bounds a request line, newline included.
const maxRequestBytes = 4096

// readRequest reads one JSON request line from r. A last line without its
// newline is taken too, as sent by a client that closed its side after
// writing.
func readRequest(r io.Reader) (Request, error) {
	line, err := bufio.NewReader(io.LimitReader(r, maxRequestBytes)).ReadBytes('\n')
	switch {
	case errors.Is(err, io.EOF) && len(line) == maxRequestBytes:
		return Request{}, fmt.Errorf("request is longer than %d bytes: send one JSON object on one line", maxRequestBytes)
	case errors.Is(err, io.EOF) && len(line) == 0:
		return Request{}, errors.New("request is empty: send one JSON object on one line")
	case err != nil && !errors.Is(err, io.EOF):
		return Request{}, fmt.Errorf("read request: %w", err)
	}
	var req Request
	if err := json.Unmarshal(line, &req); err != nil {
		return Request{}, fmt.Errorf("request is not one JSON line: %w", err)
	}
	return req, nil
}

func (s *Server) dispatch(req Request) Response {
	h := s.handler
	switch req.Command {
	case CommandStatus:
		st := h.Status()
		return Response{Status: &st}
	case CommandPause:
		h.Pause()
	case CommandResume:
		h.Resume()
	case CommandReconnect:
		if err := h.Reconnect(); err != nil {
			return Response{Error: err.Error()}
		}
	case CommandThrottle:
		if err := h.Throttle(req.Rate); err != nil {
			return Response{Error: err.Error()}
		}
	case CommandWait:
		if !filepath.IsLocal(req.File) || req.TimeoutMillis <= 0 {
			return Response{Error: fmt.Sprintf("wait needs a file name inside new/ and a positive timeout, got %q and %d ms", req.File, req.TimeoutMillis)}
		}
		ctx, cancel := context.WithTimeout(s.ctx, waitTimeout(req))
		defer cancel()
		res := h.Wait(ctx, req.File)
		return Response{Wait: &res}
	default:
		return Response{Error: fmt.Sprintf("unknown command %q: use status, pause, resume, reconnect, throttle or wait", req.Command)}
	}
	return Response{}
}

// waitTimeout returns the request's timeout, at most maxWait. The bound
// is checked in milliseconds, because a larger count of them overflows a
// time.Duration and could turn negative.
func waitTimeout(req Request) time.Duration {
	if req.TimeoutMillis >= maxWait.Milliseconds() {
		return maxWait
	}
	return time.Duration(req.TimeoutMillis) * time.Millisecond
}

// ErrNoDaemon is returned by Send when nothing listens on the socket.
var ErrNoDaemon = errors.New("no mqspool daemon is listening")

// ErrBusy is returned by Send when the daemon turned the connection away
// because it serves its maximum of connections. The request did not run.
var ErrBusy = errors.New("control socket busy")

// Send sends one request to the daemon at path and returns its response.
func Send(ctx context.Context, path string, req Request) (Response, error) {
	d := net.Dialer{Timeout: requestTimeout}
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return Response{}, fmt.Errorf("%w on %s: %w: start it, or pass the config whose control.socket it uses", ErrNoDaemon, path, err)
	}
	defer conn.Close()
	deadline := requestTimeout
	if req.Command == CommandWait {
		deadline += waitTimeout(req)
	}
	conn.SetDeadline(time.Now().Add(deadline))

	// A daemon that turns the connection away writes its response before
	// it reads and closes, so a failed write may still leave it to read.
	writeErr := json.NewEncoder(conn).Encode(req)
	var resp Response
	if err := json.NewDecoder(conn).Decode(&resp); err != nil {
		if writeErr != nil {
			return Response{}, fmt.Errorf("send %s request: %w", req.Command, writeErr)
		}
		return Response{}, fmt.Errorf("read %s response: %w", req.Command, err)
	}
	if resp.Busy {
		return resp, fmt.Errorf("%w: %s", ErrBusy, resp.Error)
	}
	if resp.Error != "" {
		return resp, errors.New(resp.Error)
	}
	return resp, nil
}
