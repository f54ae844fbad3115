package eventloop

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestBackoff_DelayBounds(t *testing.T) {
	minDelay, maxDelay := 500*time.Millisecond, 30*time.Second
	b := newBackoff(minDelay, maxDelay)
	for n := range 70 {
		ceiling := maxDelay
		if n < 6 {
			ceiling = minDelay << n
		}
		for range 200 {
			d := b.delay(n)
			if d < minDelay || d > ceiling {
				t.Fatalf("retry %d waited %s, want within [%s, %s]", n, d, minDelay, ceiling)
			}
		}
	}
}

func TestBackoff_Extremes(t *testing.T) {
	b := newBackoff(time.Second, 10*time.Second)
	b.rand = func(n int64) int64 { return n - 1 }
	if d := b.delay(0); d != time.Second {
		t.Errorf("first retry at most %s, want exactly the min delay 1s", d)
	}
	if d := b.delay(2); d != 4*time.Second {
		t.Errorf("third retry at most %s, want 4s", d)
	}
	if d := b.delay(40); d != 10*time.Second {
		t.Errorf("late retry at most %s, want the max delay 10s", d)
	}
	b.rand = func(int64) int64 { return 0 }
	if d := b.delay(40); d != time.Second {
		t.Errorf("late retry at least %s, want the min delay 1s", d)
	}
}

func TestBackoff_AttemptsSpacedAndJittered(t *testing.T) {
	// A listener that accepts and closes at once: every connect fails.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var accepts []time.Time
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepts = append(accepts, time.Now())
			c.Close()
		}
	}()

	opts := testOptions(&fakeBroker{ln: ln})
	opts.MinDelay, opts.MaxDelay = 100*time.Millisecond, 400*time.Millisecond
	lines := &countingHandler{}
	opts.Logger = slog.New(lines)
	r := start(t, opts, newMemSource(), &testJournal{}, nil)
	time.Sleep(2 * time.Second)
	r.stop(t)
	ln.Close()
	<-done

	// One line per failed attempt, plus the line when the loop stops.
	if n := int(lines.n.Load()); n > len(accepts)+2 {
		t.Errorf("%d log lines at info or above for %d attempts, want at most one per attempt", n, len(accepts))
	}

	if len(accepts) < 4 || len(accepts) > 15 {
		t.Fatalf("%d attempts in 2 s, want between 4 and 15 with delays of 100ms to 400ms", len(accepts))
	}
	distinct := map[time.Duration]bool{}
	for i := 1; i < len(accepts); i++ {
		gap := accepts[i].Sub(accepts[i-1])
		if gap < opts.MinDelay-5*time.Millisecond {
			t.Errorf("attempts %d and %d only %s apart, want at least %s", i-1, i, gap, opts.MinDelay)
		}
		distinct[gap.Round(10*time.Millisecond)] = true
	}
	if len(distinct) < 2 {
		t.Errorf("all gaps equal, want jitter")
	}
}

func TestBackoff_CloseRightAfterConnackCountsAsFailure(t *testing.T) {
	b := newFakeBroker(t, brokerScript{closeAfterConnack: true})
	opts := testOptions(b)
	opts.MinDelay, opts.MaxDelay = 50*time.Millisecond, 800*time.Millisecond
	start(t, opts, newMemSource(), &testJournal{}, nil)
	time.Sleep(2500 * time.Millisecond)

	accepts := b.acceptTimes()
	// Without growth, 50ms apart would give about 50 attempts. With it the
	// delays average about 425ms once they reach the maximum, so about 10
	// attempts; 20 or more are out of reach of the random draws.
	if len(accepts) >= 20 {
		t.Errorf("%d connects in 2.5 s, want the backoff to grow when the broker closes right after CONNACK", len(accepts))
	}
	first := accepts[1].Sub(accepts[0])
	var longest time.Duration
	for i := 2; i < len(accepts); i++ {
		longest = max(longest, accepts[i].Sub(accepts[i-1]))
	}
	if longest <= 2*first {
		t.Errorf("longest gap %s not over twice the first gap %s, want growing delays", longest, first)
	}
}

// A connection that lasts a few hundred milliseconds is no more a success
// than one closed at once, so the delays must still grow. The random
// draw is fixed at its maximum, so each delay is its ceiling.
func TestBackoff_CloseSoonAfterConnackCountsAsFailure(t *testing.T) {
	const lasted = 300 * time.Millisecond
	b := newFakeBroker(t, brokerScript{closeAfter: lasted})
	opts := testOptions(b)
	opts.MinDelay, opts.MaxDelay = 50*time.Millisecond, 800*time.Millisecond
	l, err := New(opts, newMemSource(), &testJournal{}, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	l.backoff.rand = func(n int64) int64 { return n - 1 }
	run(t, l, true)

	// Growing delays of 50, 100, 200 and 400 ms give gaps of about 350,
	// 400, 500 and 700 ms. Delays reset after each connection give gaps
	// of about 350 ms.
	deadline := time.Now().Add(6 * time.Second)
	for len(b.acceptTimes()) < 5 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	accepts := b.acceptTimes()
	if len(accepts) < 5 {
		t.Fatalf("%d connects in 6 s, want 5", len(accepts))
	}
	first := accepts[1].Sub(accepts[0])
	fourth := accepts[4].Sub(accepts[3])
	if fourth < first+200*time.Millisecond {
		t.Errorf("fourth gap %s, first gap %s: want the delay to grow when the broker closes %s after CONNACK",
			fourth, first, lasted)
	}
}

func TestBackoff_ConnackRejectionWaitsLong(t *testing.T) {
	b := newFakeBroker(t, brokerScript{connackCode: 0x86})
	opts := testOptions(b)
	opts.MinDelay, opts.MaxDelay = 20*time.Millisecond, 500*time.Millisecond
	start(t, opts, newMemSource(), &testJournal{}, nil)
	time.Sleep(1200 * time.Millisecond)

	accepts := b.acceptTimes()
	if len(accepts) > 5 {
		t.Errorf("%d connects in 1.2 s after bad credentials, want at most 5 (at least 250ms apart)", len(accepts))
	}
	for i := 1; i < len(accepts); i++ {
		if gap := accepts[i].Sub(accepts[i-1]); gap < opts.MaxDelay/2-5*time.Millisecond {
			t.Errorf("retry %s after a rejection for bad credentials, want at least half the max delay %s", gap, opts.MaxDelay)
		}
	}
}

func TestBackoff_RejectedJitteredNearMax(t *testing.T) {
	b := newBackoff(500*time.Millisecond, 30*time.Second)
	b.rand = func(int64) int64 { return 0 }
	if d := b.rejected(); d != 15*time.Second {
		t.Errorf("shortest wait after a rejection %s, want half the max delay 15s", d)
	}
	b.rand = func(n int64) int64 { return n - 1 }
	if d := b.rejected(); d != 30*time.Second {
		t.Errorf("longest wait after a rejection %s, want the max delay 30s", d)
	}

	b = newBackoff(20*time.Second, 30*time.Second)
	b.rand = func(int64) int64 { return 0 }
	if d := b.rejected(); d != 20*time.Second {
		t.Errorf("shortest wait after a rejection %s, want the min delay 20s above half the max", d)
	}
	b = newBackoff(time.Second, time.Second)
	if d := b.rejected(); d != time.Second {
		t.Errorf("wait after a rejection with equal delays %s, want 1s", d)
	}
}

func TestConnectTimeout_SilentBroker(t *testing.T) {
	// A listener that accepts and never answers CONNECT.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	conns := make(chan net.Conn, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns <- c
		}
	}()

	opts := testOptions(&fakeBroker{ln: ln})
	opts.ConnectTimeout = 300 * time.Millisecond
	r := start(t, opts, newMemSource(), &testJournal{}, nil)
	waitFor(t, 3*time.Second, "timeout error", func() bool { return r.l.Stats().LastError != "" })
	// Read before the stop, which may end a later attempt with an error
	// of its own.
	if got := r.l.Stats().LastError; !strings.Contains(got, "timed out") {
		t.Errorf("last error %q, want a connect timeout", got)
	}
	began := time.Now()
	r.stop(t)
	if took := time.Since(began); took > time.Second {
		t.Errorf("Close took %s during connect attempts, want it to abandon them", took)
	}
	ln.Close()
	<-done
	close(conns)
	for c := range conns {
		c.Close()
	}
}

// countingHandler counts log records at info level or above.
type countingHandler struct{ n atomic.Int64 }

func (h *countingHandler) Enabled(_ context.Context, level slog.Level) bool {
	return level >= slog.LevelInfo
}

func (h *countingHandler) Handle(context.Context, slog.Record) error {
	h.n.Add(1)
	return nil
}

func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countingHandler) WithGroup(string) slog.Handler      { return h }

func TestConnect_TriesURLsInTurn(t *testing.T) {
	dead := newFakeBroker(t, brokerScript{})
	deadURL := dead.url()
	dead.close() // nothing listens there any more
	b := newFakeBroker(t, brokerScript{})
	opts := testOptions(b)
	opts.URLs = []string{deadURL, b.url()}
	r := start(t, opts, newMemSource(), &testJournal{}, nil)

	waitFor(t, 3*time.Second, "connack from the second url", func() bool { return r.countEvents(EventConnected) == 1 })
	if got := r.l.Stats().URL; got != b.url() {
		t.Errorf("connected to %q, want the second url %q", got, b.url())
	}
}

// Gateways that lost the same broker must not reconnect in lockstep: the
// delays drawn for one attempt differ and stay within its bounds.
func TestBackoff_DelaysOfOneAttemptDiffer(t *testing.T) {
	b := newBackoff(100*time.Millisecond, 10*time.Second)
	const attempt, draws = 3, 50
	ceiling := b.min << attempt
	seen := map[time.Duration]bool{}
	for range draws {
		d := b.delay(attempt)
		if d < b.min || d > ceiling {
			t.Fatalf("delay %s of attempt %d outside [%s, %s]", d, attempt, b.min, ceiling)
		}
		seen[d] = true
	}
	if len(seen) < draws/2 {
		t.Errorf("%d distinct delays in %d draws of attempt %d, want them spread by jitter", len(seen), draws, attempt)
	}
}
