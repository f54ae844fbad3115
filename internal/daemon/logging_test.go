package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/mqspool/mqspool/internal/config"
)

func TestLimitRepeats_SuppressesIdenticalWarnings(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(LimitRepeats(slog.NewTextHandler(&buf, nil), time.Hour)).With("component", "eventloop")
	err := errors.New("connection refused")

	for i := range 5 {
		log.Warn("connect failed", "url", "mqtt://a:1883", "err", err, "backoff_ms", 100*i)
	}
	log.Warn("connect failed", "url", "mqtt://b:1883", "err", err)
	log.Error("message moved to failed/", "seq", 1)
	log.Error("message moved to failed/", "seq", 2)
	for range 3 {
		log.Info("connecting", "url", "mqtt://a:1883")
	}

	out := buf.String()
	if n := strings.Count(out, "url=mqtt://a:1883 err"); n != 1 {
		t.Errorf("identical warning logged %d times, want 1:\n%s", n, out)
	}
	if !strings.Contains(out, "url=mqtt://b:1883") {
		t.Errorf("warning with another url suppressed:\n%s", out)
	}
	if n := strings.Count(out, "message moved to failed/"); n != 2 {
		t.Errorf("errors with distinct seq logged %d times, want 2:\n%s", n, out)
	}
	if n := strings.Count(out, "msg=connecting"); n != 3 {
		t.Errorf("info lines logged %d times, want 3 (never limited):\n%s", n, out)
	}
}

func TestLimitRepeats_CountsSuppressedAfterWindow(t *testing.T) {
	var buf bytes.Buffer
	h := LimitRepeats(slog.NewTextHandler(&buf, nil), time.Hour).(*repeatHandler)
	log := slog.New(h)

	log.Warn("connect failed", "err", "refused")
	log.Warn("connect failed", "err", "refused")
	log.Warn("connect failed", "err", "refused")
	// Age the entry past the window instead of waiting for it.
	h.state.mu.Lock()
	for _, rep := range h.state.seen {
		rep.last = rep.last.Add(-2 * time.Hour)
	}
	h.state.mu.Unlock()
	log.Warn("connect failed", "err", "refused")

	out := buf.String()
	if n := strings.Count(out, "connect failed"); n != 2 {
		t.Fatalf("logged %d times, want 2:\n%s", n, out)
	}
	if !strings.Contains(out, "suppressed_repeats=2") {
		t.Errorf("second line lacks suppressed_repeats=2:\n%s", out)
	}
}

func TestLiveness_Check(t *testing.T) {
	var l liveness
	now := time.Now()
	l.beatLoop(now, time.Second)

	if _, err := l.check(now.Add(time.Second)); err != nil {
		t.Errorf("check within the bound: %v", err)
	}
	overdue, err := l.check(now.Add(time.Second + beatGrace + time.Millisecond))
	if !errors.Is(err, errLoopOverdue) {
		t.Errorf("check past the bound and grace: %v, want %v", err, errLoopOverdue)
	}
	if overdue != time.Millisecond {
		t.Errorf("check past the bound and grace: overdue %s, want 1ms", overdue)
	}
	l.pickupEnded.Store(true)
	if _, err := l.check(now); err == nil || !strings.Contains(err.Error(), "pickup") {
		t.Errorf("check after the pickup ended: %v, want an error naming the pickup", err)
	}
}

func TestRedactURL(t *testing.T) {
	got := redactURL("mqtts://user:secret@broker:8883")
	if strings.Contains(got, "secret") {
		t.Errorf("redactURL kept the password: %s", got)
	}
}

func TestLimitRepeats_ConnectStartsAnOutageAfresh(t *testing.T) {
	var buf bytes.Buffer
	h := LimitRepeats(slog.NewTextHandler(&buf, nil), time.Hour)
	start := time.Now()

	logAt(t, h, start, slog.LevelWarn, "disconnected, reconnecting", "err", "refused")
	logAt(t, h, start.Add(time.Second), slog.LevelWarn, "disconnected, reconnecting", "err", "refused")
	logAt(t, h, start.Add(2*time.Second), slog.LevelInfo, "connected", "url", "mqtt://b:1")
	logAt(t, h, start.Add(2*time.Second+stableConnection), slog.LevelWarn, "disconnected, reconnecting", "err", "refused")

	if n := strings.Count(buf.String(), "disconnected, reconnecting"); n != 2 {
		t.Errorf("%d disconnect lines, want 2: one per outage\n%s", n, buf.String())
	}
}

// A broker that accepts each connection and closes it at once keeps one
// outage going, so its disconnects are limited like any other repeat.
func TestLimitRepeats_ShortConnectionsKeepOutage(t *testing.T) {
	var buf bytes.Buffer
	h := LimitRepeats(slog.NewTextHandler(&buf, nil), time.Minute)
	at := time.Now()

	for i := range 63 {
		logAt(t, h, at, slog.LevelInfo, "connected", "url", "mqtt://a:1883")
		at = at.Add(100 * time.Millisecond)
		logAt(t, h, at, slog.LevelWarn, "disconnected, reconnecting", "url", "mqtt://a:1883",
			"err", "broker sent disconnect with 0x81 malformed packet", "backoff_ms", 500+10*i)
		at = at.Add(time.Second)
	}

	out := buf.String()
	if n := strings.Count(out, "disconnected, reconnecting"); n != 2 {
		t.Errorf("%d disconnect lines in %s, want 2: one per minute\n%s", n, 63*1100*time.Millisecond, out)
	}
	if !strings.Contains(out, "suppressed_repeats=") {
		t.Errorf("second disconnect line lacks suppressed_repeats:\n%s", out)
	}
	if n := strings.Count(out, "msg=connected"); n != 63 {
		t.Errorf("%d connected lines, want 63 (info is never limited)", n)
	}
}

// logAt logs a line with the time at through h, as a Logger would.
func logAt(t *testing.T, h slog.Handler, at time.Time, level slog.Level, msg string, args ...any) {
	t.Helper()
	r := slog.NewRecord(at, level, msg, 0)
	r.Add(args...)
	if err := h.Handle(context.Background(), r); err != nil {
		t.Fatalf("Handle: %v", err)
	}
}

func TestLogEffectiveConfig_NamesLimitsAndSubscriptions(t *testing.T) {
	var buf bytes.Buffer
	cfg := &config.Config{}
	cfg.Broker.URLs = []string{"mqtt://user:secret@broker:1883"}
	cfg.Broker.Password = "secret"
	cfg.Broker.ReceiveMaximum = 64
	cfg.Subscriptions = []config.Subscription{{Filter: "cmd/#", QoS: 2, Dir: "/var/lib/in"}}
	d := &Daemon{cfg: cfg, log: slog.New(slog.NewTextHandler(&buf, nil))}

	d.logEffectiveConfig()

	out := buf.String()
	for _, want := range []string{"broker.receive_maximum=64", `subscriptions="[cmd/# qos 2 -> /var/lib/in]"`, "broker.password_set=true"} {
		if !strings.Contains(out, want) {
			t.Errorf("effective configuration lacks %s:\n%s", want, out)
		}
	}
	if strings.Contains(out, "secret") {
		t.Errorf("effective configuration shows the password:\n%s", out)
	}
}

func TestLimitRepeats_IgnoresTimingAttributes(t *testing.T) {
	var buf bytes.Buffer
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	log := slog.New(LimitRepeats(slog.NewTextHandler(&buf, nil), time.Hour))

	for i := range 3 {
		log.With("started", start.Add(time.Duration(i)*time.Second)).Warn("drain overran its deadline, stopping now",
			"deadline", time.Duration(i)*time.Second,
			slog.Group("retry", "backoff_ms", 100*i, "at", start.Add(time.Duration(i)*time.Minute)),
			"retry_ms", 10*i, "age_seconds", float64(i))
	}
	log.Warn("drain overran its deadline, stopping now", "deadline", time.Second, slog.Group("retry", "url", "mqtt://b:1"))

	out := buf.String()
	if n := strings.Count(out, "drain overran"); n != 2 {
		t.Errorf("logged %d times, want 2: once, and once for the other group member:\n%s", n, out)
	}
	if !strings.Contains(out, "retry.url=mqtt://b:1") {
		t.Errorf("line with another group member suppressed:\n%s", out)
	}
}

// Go's error for an expired certificate names the current time, so
// without care each connect attempt would log a new line.
func TestLimitRepeats_IgnoresTimesInsideValues(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(LimitRepeats(slog.NewTextHandler(&buf, nil), time.Hour))
	for _, now := range []string{"2026-12-06T01:02:34Z", "2026-12-06T01:02:37.5+01:00"} {
		err := fmt.Errorf("tls: x509: certificate has expired or is not yet valid: current time %s is after 2020-02-01T00:00:00Z", now)
		log.Warn("connect failed", "err", err)
	}

	if n := strings.Count(buf.String(), "connect failed"); n != 1 {
		t.Errorf("the error logged %d times, want 1:\n%s", n, buf.String())
	}
}

// Go's network errors name the local port, which is new on every connect
// attempt, so without care each attempt would log a new line.
func TestLimitRepeats_IgnoresLocalPorts(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(LimitRepeats(slog.NewTextHandler(&buf, nil), time.Hour))
	for _, port := range []int{54410, 54418} {
		err := fmt.Errorf("tls handshake: read tcp 127.0.0.1:%d->127.0.0.1:8883: read: connection reset by peer", port)
		log.Warn("connect failed", "err", err)
	}
	log.Warn("connect failed", "err", "tls handshake: read tcp 127.0.0.1:54410->127.0.0.1:8884: read: connection reset by peer")

	if n := strings.Count(buf.String(), "connect failed"); n != 2 {
		t.Errorf("logged %d times, want 2 (another broker port is another error):\n%s", n, buf.String())
	}
}
