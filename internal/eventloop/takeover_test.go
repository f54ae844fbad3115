package eventloop

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"

	"github.com/mqspool/mqspool/internal/message"
)

func TestCloseWatch_WarnsOnClosesInARow(t *testing.T) {
	var w closeWatch
	start := time.Unix(1000, 0)
	eof := fmt.Errorf("read from broker: %w", io.EOF)
	reset := fmt.Errorf("read from broker: %w", syscall.ECONNRESET)

	if w.note(start, eof) || w.note(start.Add(time.Second), reset) {
		t.Fatal("warned before the third close")
	}
	if !w.note(start.Add(2*time.Second), eof) {
		t.Fatal("no warning at the third close in a row within a minute")
	}
	if w.note(start.Add(3*time.Second), eof) {
		t.Error("warned again within silentCloseLogEvery")
	}
	later := start.Add(silentCloseLogEvery + time.Minute)
	w.note(later, eof)
	w.note(later.Add(time.Second), eof)
	if !w.note(later.Add(2*time.Second), eof) {
		t.Error("no warning once silentCloseLogEvery passed")
	}
}

func TestCloseWatch_OtherEndsStartAgain(t *testing.T) {
	var w closeWatch
	start := time.Unix(1000, 0)
	w.note(start, io.EOF)
	w.note(start.Add(time.Second), io.EOF)
	if w.note(start.Add(2*time.Second), errors.New("acknowledgement overdue")) {
		t.Error("warned on an end that is not a close by the broker")
	}
	if w.note(start.Add(3*time.Second), io.EOF) {
		t.Error("warned on the first close after another end")
	}

	// A failed connect between closes, as while a broker restarts,
	// starts the count again.
	var restarts closeWatch
	restarts.note(start, io.EOF)
	restarts.note(start.Add(time.Second), io.EOF)
	restarts.reset()
	if restarts.note(start.Add(2*time.Second), io.EOF) {
		t.Error("warned on closes with a failed connect between them")
	}

	// Closes spread over more than a minute are not in a row.
	var slow closeWatch
	for i := range 3 {
		if slow.note(start.Add(time.Duration(i)*40*time.Second), io.EOF) {
			t.Errorf("warned at close %d, 40s apart", i+1)
		}
	}
}

func TestDisconnectError_TakenOverNamesClientID(t *testing.T) {
	msg := (&disconnectError{code: 0x8E}).Error()
	if !strings.Contains(msg, "session taken over") || !strings.Contains(msg, "broker.client_id") {
		t.Errorf("DISCONNECT 0x8E error %q, want the reason and broker.client_id", msg)
	}
}

// lockedLog is a log destination that the loop's goroutine writes while
// the test reads it.
type lockedLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (w *lockedLog) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

func (w *lockedLog) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// A broker that closes the connection on one message closes it again at
// each try while isolation finds the message. Those closes point at the
// message, not at another client with the same client id.
func TestCloseWatch_IsolationDoesNotWarn(t *testing.T) {
	b := newFakeBroker(t, brokerScript{
		endOn:          func(p *packets.Publish) (byte, bool) { return 0, string(p.Payload) == "poison" },
		sessionPresent: func(conn int) bool { return conn > 0 },
	})
	src := newMemSource()
	src.add(message.Message{Topic: "t", QoS: 1, Payload: []byte("a")},
		message.Message{Topic: "t", QoS: 1, Payload: []byte("poison")},
		message.Message{Topic: "t", QoS: 1, Payload: []byte("b")})
	var logged lockedLog
	opts := testOptions(b)
	opts.MinDelay, opts.MaxDelay = 10*time.Millisecond, 50*time.Millisecond
	opts.Logger = slog.New(slog.NewTextHandler(&logged, nil))
	r := start(t, opts, src, &testJournal{}, nil)

	waitFor(t, 10*time.Second, "three outcomes", func() bool { return len(r.outcomes()) == 3 })
	if o := r.outcomes()[2]; o.Kind != Failed {
		t.Fatalf("poison message: outcome %v %q, want Failed", o.Kind, o.Reason)
	}
	if strings.Contains(logged.String(), "same client id") {
		t.Errorf("closes on a refused message logged as a shared client id:\n%s", logged.String())
	}
}

// A broker that restarts closes the connection and then refuses connects
// until it is up again. Closes with a failed connect between them are not
// in a row, however close together they come.
func TestCloseWatch_RestartsDoNotWarn(t *testing.T) {
	b := newFakeBroker(t, brokerScript{})
	var logged lockedLog
	opts := testOptions(b)
	opts.MinDelay, opts.MaxDelay = 10*time.Millisecond, 20*time.Millisecond
	opts.Logger = slog.New(slog.NewTextHandler(&logged, nil))
	r := start(t, opts, newMemSource(), &testJournal{}, nil)
	waitFor(t, 5*time.Second, "the first connection", func() bool { return r.l.Stats().Connected })

	// The waits allow for a connect attempt that hangs until
	// ConnectTimeout on a loaded machine.
	for range 3 {
		n := b.connections()
		b.set(func(s *brokerScript) { s.connackCode = 0x88 })
		b.dropConnections()
		waitFor(t, 15*time.Second, "a refused connect", func() bool { return b.connections() > n })
		b.set(func(s *brokerScript) { s.connackCode = 0 })
		waitFor(t, 15*time.Second, "a connection after the restart", func() bool {
			return b.connections() > n+1 && r.l.Stats().Connected
		})
	}
	if strings.Contains(logged.String(), "same client id") {
		t.Errorf("closes by a restarting broker logged as a shared client id:\n%s", logged.String())
	}
}
