package harness

import (
	"errors"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// NotifySocket is a unixgram socket standing in for systemd's
// NOTIFY_SOCKET: it records every sd_notify datagram it receives.
type NotifySocket struct {
	Path string

	conn *net.UnixConn
	mu   sync.Mutex // guards msgs
	msgs []string
	done chan struct{}
}

// ListenNotify creates the socket in a temporary directory and records
// datagrams until the test ends.
func ListenNotify(t testing.TB) *NotifySocket {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatalf("listen on notify socket %s: %v", path, err)
	}
	n := &NotifySocket{Path: path, conn: conn, done: make(chan struct{})}
	go n.read()
	t.Cleanup(func() {
		conn.Close()
		<-n.done
	})
	return n
}

func (n *NotifySocket) read() {
	defer close(n.done)
	buf := make([]byte, 4096)
	for {
		k, _, err := n.conn.ReadFromUnix(buf)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			continue
		}
		n.mu.Lock()
		n.msgs = append(n.msgs, string(buf[:k]))
		n.mu.Unlock()
	}
}

// Messages returns the datagrams received so far, in order.
func (n *NotifySocket) Messages() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.msgs...)
}

// Index returns the position of the first datagram with a line equal to
// line, or with a line starting with it when line ends in "=", or -1.
func (n *NotifySocket) Index(line string) int {
	for i, m := range n.Messages() {
		for _, l := range strings.Split(m, "\n") {
			if l == line || (strings.HasSuffix(line, "=") && strings.HasPrefix(l, line)) {
				return i
			}
		}
	}
	return -1
}

// Count returns how many datagrams have a line equal to line.
func (n *NotifySocket) Count(line string) int {
	c := 0
	for _, m := range n.Messages() {
		for _, l := range strings.Split(m, "\n") {
			if l == line {
				c++
			}
		}
	}
	return c
}
