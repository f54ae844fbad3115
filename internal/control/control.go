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
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Commands accepted on the socket.
const (
	CommandStatus    = "status"
	CommandPause     = "pause"
	CommandResume    = "resume"
	CommandReconnect = "reconnect"
	CommandThrottle  = "throttle"
)

// Request is one command. Rate is set for throttle, in the syntax of
// "mqspool ctl throttle".
type Request struct {
	Command string `json:"command"`
	Rate    string `json:"rate,omitempty"`
}

// Response answers a Request: Error is empty on success.
type Response struct {
	Error  string  `json:"error,omitempty"`
	Status *Status `json:"status,omitempty"`
}

// Status is what "mqspool status" shows.
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
	LastError      string  `json:"last_error,omitempty"`
	DrainETASecs   float64 `json:"time_to_drain_seconds"`
	Reconnects     uint64  `json:"reconnects"`
	Published      uint64  `json:"published"`
	Acknowledged   uint64  `json:"acknowledged"`
	Failed         uint64  `json:"failed"`
	UptimeSecs     float64 `json:"uptime_seconds"`
}

// Handler carries out commands for the server.
type Handler interface {
	Status() Status
	Pause()
	Resume()
	Reconnect()
	Throttle(rate string) error
}

// requestTimeout bounds one exchange on either side, so a stuck peer
// cannot hold a connection or a client forever.
const requestTimeout = 5 * time.Second

// Server listens on the control socket.
type Server struct {
	path    string
	handler Handler
	log     *slog.Logger
	ln      net.Listener
	wg      sync.WaitGroup
}

// Listen creates the socket at path with mode 0660, replacing a stale
// socket file left by a process that is gone.
func Listen(path string, h Handler, log *slog.Logger) (*Server, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("create control socket directory: %w", err)
	}
	if err := removeStale(path); err != nil {
		return nil, err
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on control socket %s: %w: set control.socket to a writable path", path, err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		ln.Close()
		return nil, fmt.Errorf("set mode of control socket %s: %w", path, err)
	}
	return &Server{path: path, handler: h, log: log, ln: ln}, nil
}

// removeStale deletes a socket file that no process accepts on. A live
// socket means another daemon runs with the same control.socket.
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
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("control socket %s is in use by another mqspool: stop it or set control.socket", path)
	}
	return os.Remove(path)
}

// Serve accepts connections until Close.
func (s *Server) Serve() {
	for {
		conn, err := s.ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				s.log.Error("control socket accept failed", "err", err)
			}
			return
		}
		s.wg.Go(func() { s.serveConn(conn) })
	}
}

// Close stops accepting, waits for open exchanges and removes the socket.
func (s *Server) Close() error {
	err := s.ln.Close()
	s.wg.Wait()
	os.Remove(s.path)
	return err
}

func (s *Server) serveConn(conn net.Conn) {
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(requestTimeout))

	var req Request
	line, err := bufio.NewReader(io.LimitReader(conn, 4096)).ReadBytes('\n')
	if err == nil {
		err = json.Unmarshal(line, &req)
	}
	if err != nil {
		s.log.Warn("control request unreadable", "err", err)
		json.NewEncoder(conn).Encode(Response{Error: "request is not one JSON line: " + err.Error()})
		return
	}

	resp := s.dispatch(req)
	if resp.Error == "" && req.Command != CommandStatus {
		s.log.Info("control command", "command", req.Command, "rate", req.Rate)
	}
	if err := json.NewEncoder(conn).Encode(resp); err != nil {
		s.log.Warn("control response not sent", "command", req.Command, "err", err)
	}
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
		h.Reconnect()
	case CommandThrottle:
		if err := h.Throttle(req.Rate); err != nil {
			return Response{Error: err.Error()}
		}
	default:
		return Response{Error: fmt.Sprintf("unknown command %q: use status, pause, resume, reconnect or throttle", req.Command)}
	}
	return Response{}
}

// ErrNoDaemon is returned by Send when nothing listens on the socket.
var ErrNoDaemon = errors.New("no mqspool daemon is listening")

// Send sends one request to the daemon at path and returns its response.
func Send(ctx context.Context, path string, req Request) (Response, error) {
	d := net.Dialer{Timeout: requestTimeout}
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return Response{}, fmt.Errorf("%w on %s: %w: start it, or pass the config whose control.socket it uses", ErrNoDaemon, path, err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(requestTimeout))

	if err := json.NewEncoder(conn).Encode(req); err != nil {
		return Response{}, fmt.Errorf("send %s request: %w", req.Command, err)
	}
	var resp Response
	if err := json.NewDecoder(conn).Decode(&resp); err != nil {
		return Response{}, fmt.Errorf("read %s response: %w", req.Command, err)
	}
	if resp.Error != "" {
		return resp, errors.New(resp.Error)
	}
	return resp, nil
}
