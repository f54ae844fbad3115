package eventloop

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"syscall"
	"testing"
	"time"
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
