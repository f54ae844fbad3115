package eventloop

import (
	"errors"
	"fmt"
	"io"
	"syscall"
	"time"

	"github.com/mqspool/mqspool/internal/state"
)

// A broker may end the connection on a message instead of rejecting it
// with a reason code: mosquitto does on a malformed string, and some cloud
// brokers do on a topic the client may not publish to. Sent again after
// each reconnect, such a message would stop the queue for ever. So after
// the broker ended a connection while PUBLISH packets were outstanding,
// the loop isolates. A broker that closes the socket while later packets
// sit unread in its receive buffer makes the kernel send a reset, so a
// reset starts isolation too, but only an orderly end counts against a
// message. On each connection it first waits for the SUBACKs
// and the birth message's PUBACK. Then it sends one message at a time,
// QoS 0 included, until a QoS 1 or 2 message is acknowledged. A message
// whose PUBLISH was the only packet outstanding when the broker ended the
// connection, isolateStrikes connections in a row, goes to failed/.
const (
	// isolateStrikes is how many connection ends in a row a message must
	// have caused, sent alone, before it goes to failed/.
	isolateStrikes = 3
	// strikeWithin bounds the time from writing the lone PUBLISH to the
	// end of the connection for the end to count against the message. A
	// broker that refuses a message ends the connection at once, one
	// round trip after the write.
	strikeWithin = 2 * time.Second
)

// isolation is the state of the search for a message that ends the
// connection.
type isolation struct {
	active bool // send one message at a time

	// The lone PUBLISH written on the current connection: its packet
	// identifier, the connection and when. A QoS 0 PUBLISH written on the
	// connection sets shared, since the broker may have ended the
	// connection on it instead.
	writtenID  uint16
	writtenGen uint64
	written    time.Time
	shared     bool

	suspect uint64 // the message that was alone at the last ends
	strikes int    // connection ends in a row with suspect alone
}

// disconnectError is the end of a connection by the broker's DISCONNECT.
type disconnectError struct {
	code   byte
	reason string // the Reason String property, if any
}

func (e *disconnectError) Error() string {
	msg := "broker sent disconnect with " + reasonName(e.code, "disconnect")
	if e.reason != "" {
		msg += ": " + e.reason
	}
	if e.code == 0x8E {
		msg += ": another client connected with the same client id; give each gateway its own broker.client_id"
	}
	return msg
}

// brokerClosed reports whether cause is an end of the connection that the
// broker chose and that may be a message's fault. That is an orderly close
// of the socket (end of file), or a DISCONNECT whose reason is not about
// the broker itself, such as 0x81 malformed packet. A reset does not
// count, because middleboxes and lost links reset connections too.
func brokerClosed(cause error) bool {
	var d *disconnectError
	if errors.As(cause, &d) {
		return !serverSideDisconnect(d.code)
	}
	return errors.Is(cause, io.EOF)
}

// mayBeRefusal reports whether cause may be the broker refusing one of
// the packets outstanding: an end that brokerClosed counts, or a reset. A
// broker that closes the socket while the client's later PUBLISH packets
// are still unread makes the kernel send a reset instead of an orderly
// close.
func mayBeRefusal(cause error) bool {
	return brokerClosed(cause) || errors.Is(cause, syscall.ECONNRESET) || errors.Is(cause, syscall.EPIPE)
}

// serverSideDisconnect reports DISCONNECT reasons about the broker or the
// session rather than a packet: server busy, shutting down, keep alive
// timeout, session taken over, receive maximum exceeded, rate limits,
// administrative action, use another server, server moved, connection
// rate exceeded.
func serverSideDisconnect(code byte) bool {
	switch code {
	case 0x89, 0x8B, 0x8D, 0x8E, 0x93, 0x96, 0x97, 0x98, 0x9C, 0x9D, 0x9F:
		return true
	}
	return false
}

// noteConnectionEnd looks at a connection end before its state is
// cleared: it starts isolation, or counts the end against the message
// that was alone on the wire and fails that message after
// isolateStrikes ends. It reports whether it counted the end against a
// message.
func (l *Loop) noteConnectionEnd(cause error) bool {
	if l.draining || l.shutdownRequested() {
		return false
	}
	iso := &l.isolation
	if !iso.active {
		if mayBeRefusal(cause) && l.publishOnWire() {
			iso.active = true
			l.log.Warn("connection ended by the broker or a reset with publishes outstanding; sending one message at a time until one is acknowledged",
				"inflight", l.onWire.len(), "err", cause)
		}
		return false
	}
	f, ok := l.loneFlow()
	if !ok || !brokerClosed(cause) || l.clock.Now().Sub(iso.written) > strikeWithin {
		// Not an end that points at one message, so the ends in a row
		// start again.
		// NOTE: a PINGREQ or an incoming message's acknowledgement written
		// after the lone PUBLISH can turn the broker's close into a reset,
		// so on a busy downlink a refused message may not collect strikes.
		iso.suspect, iso.strikes = 0, 0
		return false
	}

	if iso.suspect != f.Seq {
		iso.suspect, iso.strikes = f.Seq, 0
	}
	iso.strikes++
	l.log.Warn("broker ended the connection while one message was outstanding",
		"seq", f.Seq, "packet_id", f.PacketID, "times", iso.strikes, "err", cause)
	if iso.strikes < isolateStrikes {
		return true
	}
	reason := fmt.Sprintf("the broker ended the connection %d times in a row when this message was the only packet outstanding "+
		"(last: %v): fix the message or the broker's rules for it, then requeue it", iso.strikes, cause)
	l.log.Error("message ends every connection, moving it to failed/", "seq", f.Seq, "packet_id", f.PacketID)
	iso.suspect, iso.strikes = 0, 0
	// The journal records the failure before the outcome is emitted, as
	// for a rejection by reason code. The packet identifier is free again.
	// For QoS 2 that is safe because a broker that had stored this PUBLISH
	// must acknowledge a resend on the same identifier with PUBREC (MQTT 5.0
	// section 4.3.3), not by ending the connection. So a broker that ended
	// the connection on the resend did not store the message.
	// NOTE: a broker that breaks that rule, storing the message once and
	// ending the connection on its resends, would take a later message on
	// the same identifier in the same session for a duplicate.
	l.endFlow(f, state.ChangeFailed, reason, 0)
	return true
}

// publishOnWire reports whether a PUBLISH of an open flow is outstanding.
func (l *Loop) publishOnWire() bool {
	found := false
	l.onWire.each(func(id uint16, _ uint64) bool {
		f, ok := l.st.Flow(id)
		found = ok && f.Stage == state.StagePublish
		return !found
	})
	return found
}

// loneFlow returns the flow whose PUBLISH, written on the current
// connection, is the only packet outstanding on it: no other flow, no
// SUBSCRIBE or birth message waiting for its acknowledgement, and no
// QoS 0 PUBLISH written beside it.
func (l *Loop) loneFlow() (state.Flow, bool) {
	iso := &l.isolation
	if l.onWire.len() != 1 || len(l.birthIDs) > 0 || len(l.subIDs) > 0 || iso.shared ||
		iso.writtenGen != l.connGen || l.onWire.get(iso.writtenID) == 0 {
		return state.Flow{}, false
	}
	f, ok := l.st.Flow(iso.writtenID)
	if !ok || f.Stage != state.StagePublish {
		return state.Flow{}, false
	}
	return f, true
}

// isolationBlocks reports whether isolation keeps the pump from sending
// a message now: until the SUBACKs and the birth message's PUBACK are in,
// and while another packet is outstanding. A PUBREL carries no message,
// so the PUBRELs of a resumed session go out together, each without
// waiting for the PUBCOMP of the one before, unless a PUBLISH is
// outstanding.
func (l *Loop) isolationBlocks() bool {
	if !l.isolation.active {
		return false
	}
	if len(l.subIDs) > 0 || len(l.birthIDs) > 0 {
		return true
	}
	if l.onWire.len() == 0 {
		return false
	}
	// A PUBLISH goes out only when nothing else is outstanding, so when
	// one is outstanding it is the only packet on the wire.
	return !l.nextResendIsPubrel() || (l.onWire.len() == 1 && l.publishOnWire())
}

// nextResendIsPubrel reports whether the next packet to resend is the
// PUBREL of a QoS 2 flow.
func (l *Loop) nextResendIsPubrel() bool {
	if len(l.resend) == 0 {
		return false
	}
	f, ok := l.st.Flow(l.resend[0])
	return ok && f.Stage == state.StagePubrel
}

// noteIsolatedWrite records a PUBLISH written during isolation: flow is
// its packet identifier, or 0 for a QoS 0 message.
func (l *Loop) noteIsolatedWrite(flow uint16) {
	iso := &l.isolation
	if !iso.active {
		return
	}
	if flow == 0 {
		iso.shared = true
		return
	}
	iso.writtenID, iso.writtenGen, iso.written = flow, l.connGen, l.clock.Now()
}

// endIsolationFor ends isolation on the acknowledgement of message seq,
// unless the broker acknowledged seq before it lost the session: such a
// message was published again ahead of the suspect and tells nothing about
// it, and ending isolation for each would cost a connection apiece.
func (l *Loop) endIsolationFor(seq uint64) {
	if _, again := l.reported[seq]; again {
		return
	}
	l.endIsolation()
}

// endIsolation returns to the full window once the broker acknowledged a
// message.
func (l *Loop) endIsolation() {
	if !l.isolation.active {
		return
	}
	l.isolation = isolation{}
	l.log.Info("broker acknowledged a message again; sending at the full window")
}
