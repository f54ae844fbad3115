package eventloop

import (
	"errors"
	"io"
	"syscall"
	"time"
)

// Two clients that connect with one client id take the broker session
// from each other in turn. Their QoS 2 packet identifiers then meet in the
// one session, and the broker treats a PUBLISH of one as a resend of the
// other's and does not deliver it. Gateways cloned from one image, with
// one /etc/machine-id or one spool.db, do this. An MQTT 5 broker ends the
// older connection with DISCONNECT 0x8E (session taken over), whose error
// names the fix. mosquitto 2.0 closes it without a DISCONNECT packet, so
// the loop notices a broker that keeps closing connections it accepted
// and logs that a shared client id is a likely cause.
const (
	// silentCloses is how many connections in a row the broker must
	// close within silentCloseWindow for the warning.
	silentCloses      = 3
	silentCloseWindow = time.Minute
	// silentCloseLogEvery limits the warning while the closes go on.
	silentCloseLogEvery = 10 * time.Minute
)

// closeWatch counts the connections that the broker closed without a
// DISCONNECT, in a row.
type closeWatch struct {
	ends   []time.Time // the last ends in a row, at most silentCloses
	logged time.Time
}

// note records how a connection ended at now and reports whether the
// broker has now closed silentCloses connections in a row within
// silentCloseWindow and the warning is due.
func (w *closeWatch) note(now time.Time, cause error) bool {
	if !silentClose(cause) {
		w.reset()
		return false
	}
	if len(w.ends) == silentCloses {
		w.ends = append(w.ends[:0], w.ends[1:]...)
	}
	w.ends = append(w.ends, now)
	if len(w.ends) < silentCloses || now.Sub(w.ends[0]) > silentCloseWindow {
		return false
	}
	if !w.logged.IsZero() && now.Sub(w.logged) < silentCloseLogEvery {
		return false
	}
	w.logged = now
	return true
}

// reset starts the count again. A failed connect calls it: a broker that
// restarts refuses connects for a while, and one that takes turns with
// another client never does.
func (w *closeWatch) reset() { w.ends = w.ends[:0] }

// silentClose reports whether cause is the broker closing or resetting
// the connection without a DISCONNECT packet.
func silentClose(cause error) bool {
	return errors.Is(cause, io.EOF) || errors.Is(cause, syscall.ECONNRESET)
}

// watchCloses warns when the broker keeps closing connections that it
// accepted, which another client with the same client id causes.
func (l *Loop) watchCloses(cause error) {
	if l.draining || l.shutdownRequested() || !l.closes.note(l.clock.Now(), cause) {
		return
	}
	l.log.Error("the broker keeps closing connections soon after accepting them; another client using the same client id "+
		"makes brokers do that, and costs QoS 2 messages: give each gateway its own broker.client_id (the broker's log names the cause)",
		"client_id", l.opts.ClientID, "closes", silentCloses, "within", silentCloseWindow)
}
