package eventloop

import (
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
)

// manualClock is a Clock that moves only when the test calls advance.
type manualClock struct {
	mu     sync.Mutex // guards now and timers
	now    time.Time
	timers []*manualTimer
}

type manualTimer struct {
	clock    *manualClock
	c        chan time.Time
	deadline time.Time
	armed    bool
}

func newManualClock() *manualClock { return &manualClock{now: time.Unix(1_000_000, 0)} }

func (c *manualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *manualClock) NewTimer(d time.Duration) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &manualTimer{clock: c, c: make(chan time.Time, 1), deadline: c.now.Add(d), armed: true}
	c.timers = append(c.timers, t)
	return t
}

// advance moves the clock and fires every timer that came due.
func (c *manualClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	for _, t := range c.timers {
		if t.armed && !t.deadline.After(c.now) {
			t.armed = false
			t.c <- c.now
		}
	}
}

func (t *manualTimer) C() <-chan time.Time { return t.c }

// Stop disarms the timer and drains its channel, as time.Timer does since
// Go 1.23.
func (t *manualTimer) Stop() bool {
	t.clock.mu.Lock()
	defer t.clock.mu.Unlock()
	wasArmed := t.armed
	t.armed = false
	select {
	case <-t.c:
	default:
	}
	return wasArmed
}

func (t *manualTimer) Reset(d time.Duration) bool {
	wasArmed := t.Stop()
	t.clock.mu.Lock()
	defer t.clock.mu.Unlock()
	t.deadline = t.clock.now.Add(d)
	t.armed = true
	return wasArmed
}

func TestClock_KeepAliveFollowsInjectedClock(t *testing.T) {
	b := newFakeBroker(t, brokerScript{})
	clock := newManualClock()
	opts := testOptions(b)
	opts.KeepAlive = time.Second
	opts.Clock = clock
	r := start(t, opts, newMemSource(), &testJournal{}, nil)
	waitFor(t, 3*time.Second, "connack", func() bool { return r.countEvents(EventConnected) == 1 })

	time.Sleep(1500 * time.Millisecond)
	if n := len(b.received(packets.PINGREQ)); n != 0 {
		t.Fatalf("%d PINGREQ after 1.5 s of real time with the clock stopped, want 0", n)
	}
	clock.advance(time.Second)
	waitFor(t, 3*time.Second, "pingreq after the clock moved", func() bool { return len(b.received(packets.PINGREQ)) == 1 })
	if n := b.connections(); n != 1 {
		t.Errorf("%d connections, want 1", n)
	}
}
