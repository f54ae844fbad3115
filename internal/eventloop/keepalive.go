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
// The window timer runs for one keep alive period. It restarts without a
// ping only when the window saw traffic in both directions: a client that
// only sends (QoS 0) or only receives still pings every period, so a
// half-open connection is found from either side. After a PINGREQ the
// PINGRESP must come within half a period. Detection therefore takes at
// most 1.5 periods after the last packet received.
type keepAlive struct {
	period  time.Duration // 0: keep alive is off
	window  timer
	pingDue timer // runs while a PINGREQ waits for its PINGRESP

	sawIn, sawOut bool
	pingPending   bool
}

func newKeepAlive(c Clock) keepAlive {
	return keepAlive{window: timer{clock: c}, pingDue: timer{clock: c}}
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

func (k *keepAlive) sent()     { k.sawOut = true }
func (k *keepAlive) received() { k.sawIn = true }

// pingresp records the answer to the outstanding PINGREQ.
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
	k.window.arm(k.period)
	if ping {
		k.pingPending = true
		k.pingDue.arm(k.period / 2)
	}
	return ping, nil
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
