package eventloop

import (
	"errors"
	"time"
)

// Errors that end a connection found dead by the keep alive.
var (
	errPingTimeout    = errors.New("no pingresp within half the keep alive: connection is dead")
	errPingUnanswered = errors.New("previous pingreq still unanswered when the next one was due: connection is dead")
)

// keepAlive decides when to send PINGREQ and when the connection is dead.
//
// The window timer runs for at most one keep alive period. It restarts
// without a ping only when the window saw traffic in both directions: a
// client that only sends (QoS 0) or only receives still pings every
// period, so a half-open connection is found from either side. A restart
// ends the next window one period after the older of the last packet sent
// and the last packet received, not one period after now. Otherwise a
// busy sender whose acknowledgements stopped just after a window began
// would wait almost two periods before pinging. After a PINGREQ the
// PINGRESP must come within half a period. Detection therefore takes at
// most 1.5 periods after the last packet received.
type keepAlive struct {
	clock   Clock
	period  time.Duration // 0: keep alive is off
	window  timer
	pingDue timer // runs while a PINGREQ waits for its PINGRESP

	sawIn, sawOut   bool
	lastIn, lastOut time.Time
	pingPending     bool
}

func newKeepAlive(c Clock) keepAlive {
	return keepAlive{clock: c, window: timer{clock: c}, pingDue: timer{clock: c}}
}

// start arms the window for a new connection.
func (k *keepAlive) start(period time.Duration) {
	k.stop()
	k.period = period
	if period > 0 {
		k.window.arm(period)
	}
}

func (k *keepAlive) stop() {
	k.window.stop()
	k.pingDue.stop()
	k.sawIn, k.sawOut, k.pingPending = false, false, false
}

func (k *keepAlive) sent() {
	k.sawOut = true
	k.lastOut = k.clock.Now()
}

func (k *keepAlive) received() {
	k.sawIn = true
	k.lastIn = k.clock.Now()
}

// pingresp records the PINGRESP to the outstanding PINGREQ.
func (k *keepAlive) pingresp() {
	k.pingPending = false
	k.pingDue.stop()
}

// windowEnded handles the window timer. It returns ping true when a
// PINGREQ must be written now, or an error when the connection is dead.
func (k *keepAlive) windowEnded() (ping bool, err error) {
	k.window.fired()
	if k.pingPending {
		return false, errPingUnanswered
	}
	ping = !(k.sawIn && k.sawOut)
	k.sawIn, k.sawOut = false, false
	k.window.arm(k.nextWindow(ping))
	if ping {
		k.pingPending = true
		k.pingDue.arm(k.period / 2)
	}
	return ping, nil
}

// nextWindow returns the length of the next window: a full period after a
// ping, else a period counted from the older of the last packets sent and
// received.
func (k *keepAlive) nextWindow(ping bool) time.Duration {
	if ping {
		return k.period
	}
	oldest := k.lastIn
	if k.lastOut.Before(oldest) {
		oldest = k.lastOut
	}
	d := k.period - k.clock.Now().Sub(oldest)
	return max(d, time.Millisecond)
}

// timer is a [Timer] that may be unarmed. Its channel is nil while
// unarmed, so a select case on it never fires.
type timer struct {
	clock Clock
	t     Timer
	armed bool
}

func (t *timer) arm(d time.Duration) {
	if t.t == nil {
		t.t = t.clock.NewTimer(d)
	} else {
		t.t.Stop()
		t.t.Reset(d)
	}
	t.armed = true
}

func (t *timer) stop() {
	if t.armed {
		t.t.Stop()
		t.armed = false
	}
}

// fired records that the value on the channel was received.
func (t *timer) fired() { t.armed = false }

func (t *timer) c() <-chan time.Time {
	if !t.armed {
		return nil
	}
	return t.t.C()
}
