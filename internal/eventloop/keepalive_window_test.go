package eventloop

import (
	"testing"
	"time"
)

// stepClock is a Clock whose Now moves only when the test advances it.
// Its timers are real but never awaited here: the test calls windowEnded
// itself and reads the armed duration back.
type stepClock struct {
	now   time.Time
	armed time.Duration
}

func (c *stepClock) Now() time.Time { return c.now }

func (c *stepClock) NewTimer(d time.Duration) Timer {
	c.armed = d
	return &stepTimer{c: c}
}

type stepTimer struct{ c *stepClock }

func (t *stepTimer) C() <-chan time.Time { return nil }
func (t *stepTimer) Stop() bool          { return true }
func (t *stepTimer) Reset(d time.Duration) bool {
	t.c.armed = d
	return true
}

// A busy sender whose acknowledgements stop right after a window began
// must still ping one period after the last acknowledgement, so the dead
// link is found within 1.5 periods of it, not 2.5.
func TestKeepAlive_WindowCountsFromOldestTraffic(t *testing.T) {
	const period = 10 * time.Second
	c := &stepClock{now: time.Unix(1000, 0)}
	k := newKeepAlive(c)
	k.start(period)

	// Both directions at the start of the window; then only sends.
	c.now = c.now.Add(time.Second)
	k.received()
	k.sent()
	for range 9 {
		c.now = c.now.Add(time.Second)
		k.sent()
	}
	ping, err := k.windowEnded()
	if ping || err != nil {
		t.Fatalf("window with traffic both ways: ping %t err %v, want neither", ping, err)
	}
	if want := time.Second; c.armed != want {
		t.Errorf("next window armed for %s, want %s (one period after the last packet received)", c.armed, want)
	}

	c.now = c.now.Add(c.armed)
	k.sent()
	if ping, _ := k.windowEnded(); !ping {
		t.Fatalf("window with sends only: want a ping")
	}
	if lastIn := time.Unix(1001, 0); c.now.Sub(lastIn) != period {
		t.Errorf("ping sent %s after the last packet received, want %s", c.now.Sub(lastIn), period)
	}
}

// A client that sent long ago must not let a recent receive stretch the
// gap between its own packets past one period.
func TestKeepAlive_WindowBoundBySends(t *testing.T) {
	const period = 10 * time.Second
	c := &stepClock{now: time.Unix(1000, 0)}
	k := newKeepAlive(c)
	k.start(period)

	c.now = c.now.Add(time.Second)
	k.sent()
	c.now = c.now.Add(8 * time.Second)
	k.received()
	c.now = c.now.Add(time.Second)
	if ping, _ := k.windowEnded(); ping {
		t.Fatalf("window with traffic both ways: want no ping")
	}
	if want := time.Second; c.armed != want {
		t.Errorf("next window armed for %s, want %s (one period after the last packet sent)", c.armed, want)
	}
}
