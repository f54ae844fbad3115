package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/mqspool/mqspool/internal/control"
)

// The files in failed/ and the messages the broker rejected since the
// start are two counts, so their lines must not share the word failed.
func TestPrintStatus_FailedCountsApart(t *testing.T) {
	var out bytes.Buffer
	printStatus(&out, &control.Status{FailedFiles: 1, FailedBytes: 10, Failed: 0, Published: 6, Acknowledged: 6})
	text := out.String()

	var failedLines []string
	for _, line := range strings.Split(text, "\n") {
		if strings.Contains(line, "failed") {
			failedLines = append(failedLines, line)
		}
	}
	if len(failedLines) != 1 || !strings.HasPrefix(failedLines[0], "failed/:") {
		t.Errorf("lines with \"failed\": %q, want only the failed/ line", failedLines)
	}
	if want := "since start:     published 6, acknowledged 6, rejected by the broker or over its limits 0"; !strings.Contains(text, want) {
		t.Errorf("status lacks %q:\n%s", want, text)
	}
}

// The time to drain is unknown while disconnected, whatever the rate
// measured before, and a queue of one is singular.
func TestPrintStatus_DrainWhileDisconnected(t *testing.T) {
	var out bytes.Buffer
	printStatus(&out, &control.Status{QueueMessages: 1, QueueBytes: 10, RateOut: 143.9, DrainETASecs: 0.01})
	text := out.String()

	for _, want := range []string{"time to drain:   unknown (disconnected)", "queue:           1 message,", "not connected yet"} {
		if !strings.Contains(text, want) {
			t.Errorf("status lacks %q:\n%s", want, text)
		}
	}
}

// Messages in flight with no rate measured yet, as in the first seconds,
// are not a stall, which "not sending" would suggest.
func TestPrintStatus_DrainBeforeRateMeasured(t *testing.T) {
	cases := []struct {
		inflight int
		want     string
	}{
		{1, "time to drain:   unknown (no rate measured yet)"},
		{0, "time to drain:   unknown (not sending)"},
	}
	for _, tc := range cases {
		var out bytes.Buffer
		printStatus(&out, &control.Status{Connected: true, QueueMessages: 3, Inflight: tc.inflight})

		if text := out.String(); !strings.Contains(text, tc.want) {
			t.Errorf("inflight %d: status lacks %q:\n%s", tc.inflight, tc.want, text)
		}
	}
}

// A connection that the daemon closed itself, as at a stop, leaves no
// error, and the status must not claim it never connected.
func TestPrintStatus_ClosedWithoutError(t *testing.T) {
	var out bytes.Buffer
	printStatus(&out, &control.Status{Broker: "mqtt://127.0.0.1:1883", Stopping: true})
	text := out.String()

	if strings.Contains(text, "not connected yet") {
		t.Errorf("status claims no connection yet after one was closed:\n%s", text)
	}
	if want := "mqspool closed the connection to mqtt://127.0.0.1:1883"; !strings.Contains(text, want) {
		t.Errorf("status lacks %q:\n%s", want, text)
	}
}

// Files held back in new/ and messages dropped for room show only when
// there are some.
func TestPrintStatus_WaitingAndDropped(t *testing.T) {
	var out bytes.Buffer
	printStatus(&out, &control.Status{SpoolFull: true, WaitingFiles: 5, DroppedOverflow: 1})
	text := out.String()
	for _, want := range []string{"waiting:         5 files held back in new/",
		"dropped:         1 oldest message deleted by spool.overflow drop-oldest"} {
		if !strings.Contains(text, want) {
			t.Errorf("status lacks %q:\n%s", want, text)
		}
	}

	out.Reset()
	printStatus(&out, &control.Status{})
	if text := out.String(); strings.Contains(text, "waiting:") || strings.Contains(text, "dropped:") {
		t.Errorf("status shows empty counts:\n%s", text)
	}
}

// A database moved aside at start gets a line that names the command to
// recover its messages.
func TestPrintStatus_DamagedDatabase(t *testing.T) {
	var out bytes.Buffer
	printStatus(&out, &control.Status{DamagedDatabase: "/var/lib/mqspool/spool.db.corrupt-1"})
	want := "mqspool spool salvage /var/lib/mqspool/spool.db.corrupt-1"
	if !strings.Contains(out.String(), want) {
		t.Errorf("status lacks %q:\n%s", want, out.String())
	}
}
