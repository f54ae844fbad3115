package daemon

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/mqspool/mqspool/internal/config"
)

// RepeatWindow is how long an identical warning or error is suppressed
// after it was logged.
const RepeatWindow = time.Minute

// maxRepeatKeys bounds the memory of the repeat limiter; older keys are
// forgotten first once it is reached.
const maxRepeatKeys = 1024

// NewLogger returns the daemon's logger for cfg, writing to w, with its
// level held in the returned LevelVar so that a reload can change it.
// Identical warnings and errors are limited to one per [RepeatWindow].
func NewLogger(cfg config.Log, w io.Writer) (*slog.Logger, *slog.LevelVar, error) {
	level, err := config.ParseLevel(cfg.Level)
	if err != nil {
		return nil, nil, fmt.Errorf("log.level: %w", err)
	}
	lv := new(slog.LevelVar)
	lv.Set(level)
	opts := &slog.HandlerOptions{Level: lv}
	var h slog.Handler = slog.NewTextHandler(w, opts)
	if cfg.Format == "json" {
		h = slog.NewJSONHandler(w, opts)
	}
	return slog.New(LimitRepeats(h, RepeatWindow)), lv, nil
}

// LimitRepeats wraps h so that a warning or error identical to one logged
// less than window ago is dropped. Identical means the same level,
// message and attributes, leaving out those that only describe timing
// (durations, times, and keys ending in _ms or _seconds), which change
// with every retry. So per-message lines with distinct ids all pass,
// while a connect error repeating through an outage is shown once per
// window. The next line that passes carries suppressed_repeats, the
// number dropped since. The end of a connection that lasted 5 seconds
// also ends the outage, so the next outage's first failure is logged at
// once.
func LimitRepeats(h slog.Handler, window time.Duration) slog.Handler {
	return &repeatHandler{next: h, window: window, state: &repeatState{seen: make(map[string]*repeat)}}
}

type repeatHandler struct {
	next   slog.Handler
	window time.Duration
	prefix string // the attributes and groups added by WithAttrs and WithGroup
	state  *repeatState
}

// repeatState is shared by a handler and the handlers derived from it.
type repeatState struct {
	mu   sync.Mutex // guards seen and connectedAt
	seen map[string]*repeat
	// connectedAt is the time of the last connectedMessage, or zero when
	// no connection is up.
	connectedAt time.Time
}

type repeat struct {
	last       time.Time // when the line was last logged
	suppressed int
}

func (h *repeatHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.next.Enabled(ctx, l)
}

func (h *repeatHandler) Handle(ctx context.Context, r slog.Record) error {
	h.state.track(r)
	if r.Level < slog.LevelWarn {
		return h.next.Handle(ctx, r)
	}
	suppressed, ok := h.state.admit(h.key(r), r.Time, h.window)
	if !ok {
		return nil
	}
	if suppressed > 0 {
		r = r.Clone()
		r.AddAttrs(slog.Int("suppressed_repeats", suppressed))
	}
	return h.next.Handle(ctx, r)
}

// key identifies a line by level, message and every attribute.
func (h *repeatHandler) key(r slog.Record) string {
	var b strings.Builder
	b.WriteString(r.Level.String())
	b.WriteByte('|')
	b.WriteString(r.Message)
	b.WriteString(h.prefix)
	r.Attrs(func(a slog.Attr) bool {
		writeAttr(&b, a)
		return true
	})
	return b.String()
}

// writeAttr appends a to a repeat key, leaving out timing attributes,
// also inside groups.
func writeAttr(b *strings.Builder, a slog.Attr) {
	a.Value = a.Value.Resolve()
	if isTiming(a) {
		return
	}
	b.WriteByte('|')
	if a.Value.Kind() != slog.KindGroup {
		b.WriteString(varying(a.String()))
		return
	}
	b.WriteString(a.Key)
	b.WriteByte('{')
	for _, member := range a.Value.Group() {
		writeAttr(b, member)
	}
	b.WriteByte('}')
}

// timestamp matches an RFC 3339 time inside a value, such as the current
// time in Go's error for an expired certificate ("current time ... is
// after ..."). A repeat key has it replaced, so such an error repeated on
// every connect attempt counts as one.
var timestamp = regexp.MustCompile(`\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})`)

// localPort matches the local port of a connection in Go's network
// errors ("read tcp 127.0.0.1:54410->127.0.0.1:8883: ..."), which is new
// on every connect attempt.
var localPort = regexp.MustCompile(`:\d+->`)

// varying replaces the parts of a value that differ between repeats of
// one error: times and local ports.
func varying(s string) string {
	s = timestamp.ReplaceAllLiteralString(s, "TIME")
	return localPort.ReplaceAllLiteralString(s, ":PORT->")
}

// isTiming reports whether a only describes timing: its value is a
// duration or a time, or its key carries the unit suffix _ms or _seconds,
// as backoff_ms and retry_ms do.
func isTiming(a slog.Attr) bool {
	switch a.Value.Kind() {
	case slog.KindDuration, slog.KindTime:
		return true
	}
	return strings.HasSuffix(a.Key, "_ms") || strings.HasSuffix(a.Key, "_seconds")
}

// The event loop's log messages for an accepted connection, and the
// prefix of those for its end.
const (
	connectedMessage    = "connected"
	disconnectedMessage = "disconnected"
)

// stableConnection is how long a connection must last to end an outage
// for the repeat limiter. A broker that accepts each connection and closes
// it at once would otherwise get one disconnect line per reconnect. It
// equals stableAfter in internal/eventloop, after which the event loop
// resets its reconnect backoff, and the two should stay equal.
const stableConnection = 5 * time.Second

// track follows the connection through the event loop's log lines. The
// end of a connection that lasted stableConnection ends the outage: the
// limiter clears what it has seen, so the disconnect line and the first
// failure after it are logged at once.
func (s *repeatState) track(r slog.Record) {
	connected := r.Message == connectedMessage
	if !connected && !strings.HasPrefix(r.Message, disconnectedMessage) {
		return
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if connected {
		s.connectedAt = r.Time
		return
	}
	if !s.connectedAt.IsZero() && r.Time.Sub(s.connectedAt) >= stableConnection {
		clear(s.seen)
	}
	s.connectedAt = time.Time{}
}

// admit reports whether the line with key may be logged at now, and how
// many identical lines were dropped before it.
func (s *repeatState) admit(key string, now time.Time, window time.Duration) (int, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()

	rep, ok := s.seen[key]
	if ok && now.Sub(rep.last) < window {
		rep.suppressed++
		return 0, false
	}
	if !ok {
		s.forgetOld(now, window)
		rep = &repeat{}
		s.seen[key] = rep
	}
	suppressed := rep.suppressed
	rep.last, rep.suppressed = now, 0
	return suppressed, true
}

// forgetOld drops keys outside the window, and all of them if that is not
// enough to stay within maxRepeatKeys.
func (s *repeatState) forgetOld(now time.Time, window time.Duration) {
	if len(s.seen) < maxRepeatKeys {
		return
	}
	for k, rep := range s.seen {
		if now.Sub(rep.last) >= window {
			delete(s.seen, k)
		}
	}
	if len(s.seen) >= maxRepeatKeys {
		clear(s.seen)
	}
}

func (h *repeatHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *h
	c.next = h.next.WithAttrs(attrs)
	var b strings.Builder
	b.WriteString(h.prefix)
	for _, a := range attrs {
		writeAttr(&b, a)
	}
	c.prefix = b.String()
	return &c
}

func (h *repeatHandler) WithGroup(name string) slog.Handler {
	c := *h
	c.next = h.next.WithGroup(name)
	c.prefix = h.prefix + "|" + name + "."
	return &c
}
