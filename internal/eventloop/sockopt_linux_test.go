package eventloop

import (
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A broker that turns keep alive off leaves only TCP to find a dead link,
// so the connected socket gets the probes and the user timeout that a
// socket dialed with keep alive off has.
func TestSocketKeepAlive_SetsOptions(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()

	if err := socketKeepAlive(nc, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	raw, err := nc.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]struct {
		level, opt, value int
	}{
		"SO_KEEPALIVE":     {unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
		"TCP_KEEPIDLE":     {unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, 30},
		"TCP_KEEPINTVL":    {unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, 10},
		"TCP_KEEPCNT":      {unix.IPPROTO_TCP, unix.TCP_KEEPCNT, 3},
		"TCP_USER_TIMEOUT": {unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, 60000},
	}
	for name, o := range want {
		var got int
		var getErr error
		raw.Control(func(fd uintptr) { got, getErr = unix.GetsockoptInt(int(fd), o.level, o.opt) })
		if getErr != nil {
			t.Errorf("getsockopt %s: %v", name, getErr)
		} else if got != o.value {
			t.Errorf("%s = %d, want %d", name, got, o.value)
		}
	}
}

// Server Keep Alive 0 turns MQTT keep alive off for the connection, and
// the loop then has TCP keepalive watch the socket.
func TestKeepAlive_ServerZeroWatchesSocket(t *testing.T) {
	zero := uint16(0)
	b := newFakeBroker(t, brokerScript{serverKeepAlive: &zero})
	opts := testOptions(b)
	logs := &lockedBuffer{}
	opts.Logger = slog.New(slog.NewTextHandler(logs, nil))
	r := start(t, opts, newMemSource(), &testJournal{}, nil)

	waitFor(t, 3*time.Second, "connack", func() bool { return r.countEvents(EventConnected) == 1 })
	if !strings.Contains(logs.String(), "TCP keepalive watches the link") {
		t.Errorf("no TCP keepalive after Server Keep Alive 0, log:\n%s", logs.String())
	}
}
