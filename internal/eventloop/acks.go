package eventloop

import (
	"slices"
	"time"

	"github.com/mqspool/mqspool/internal/state"
)

// handleAck dispatches PUBACK, PUBREC, PUBREL and PUBCOMP.
func (l *Loop) handleAck(p *ackPacket) {
	switch p.Kind {
	case kindPuback:
		l.onPuback(p)
	case kindPubrec:
		l.onPubrec(p)
	case kindPubcomp:
		l.onPubcomp(p)
	case kindPubrel:
		l.onIncomingPubrel(p)
	}
}

func (l *Loop) onPuback(p *ackPacket) {
	if l.birthIDs[p.PacketID] {
		delete(l.birthIDs, p.PacketID)
		if !ackSucceeded(p.ReasonCode) {
			l.log.Warn("birth message rejected", "packet_id", p.PacketID, "reason", reasonName(p.ReasonCode, "puback"))
		}
		return
	}
	f, ok := l.st.Flow(p.PacketID)
	if !ok || f.QoS != 1 {
		l.log.Warn("puback for no open qos 1 flow, ignored", "packet_id", p.PacketID)
		return
	}
	l.concludeFlow(f, p, state.ChangeAcked)
}

// onPubrec moves a QoS 2 flow to StagePubrel and writes PUBREL once that
// is durable. The message counts as delivered from here, but it stays in
// the spool until PUBCOMP, in case the broker loses the session first.
func (l *Loop) onPubrec(p *ackPacket) {
	f, ok := l.st.Flow(p.PacketID)
	switch {
	case !ok || f.QoS != 2:
		l.log.Warn("pubrec for no open qos 2 flow", "packet_id", p.PacketID)
		l.queueWrite(l.encodeAck(kindPubrel, p.PacketID, 0x92), nil)
		return
	case f.Stage == state.StagePubrel:
		l.queueWrite(l.encodeAck(kindPubrel, p.PacketID, 0), nil)
		return
	case p.ReasonCode >= 0x80:
		l.concludeFlow(f, p, state.ChangeCompleted)
		return
	}

	l.endIsolationFor(f.Seq)
	fl := l.flights.get(f.PacketID)
	l.record(state.Change{Kind: state.ChangePubrec, PacketID: f.PacketID, Seq: f.Seq, QoS: f.QoS, Order: f.Order})
	l.queueWrite(l.encodeAck(kindPubrel, f.PacketID, 0), nil)
	outcome := Outcome{Seq: f.Seq, Kind: Delivered, ReasonCode: p.ReasonCode, Latency: l.latency(fl)}
	l.emitAfterCommit(outcome)
}

func (l *Loop) onPubcomp(p *ackPacket) {
	f, ok := l.st.Flow(p.PacketID)
	if !ok || f.Stage != state.StagePubrel {
		l.log.Warn("pubcomp for no flow awaiting it, ignored", "packet_id", p.PacketID)
		return
	}
	if p.ReasonCode != 0 {
		l.log.Warn("pubcomp with failure reason, flow ended", "packet_id", p.PacketID, "reason", reasonName(p.ReasonCode, "pubcomp"))
	}
	l.endFlight(f.PacketID)
	l.takeOffWire(f.PacketID)
	l.record(state.Change{Kind: state.ChangeCompleted, PacketID: f.PacketID, Seq: f.Seq, QoS: f.QoS, Order: f.Order})
}

// concludeFlow ends a flow at StagePublish by the reason code of its PUBACK
// or failed PUBREC: success records kind, a permanent rejection sends the
// message to failed/, any other code publishes it again later as a new
// message.
func (l *Loop) concludeFlow(f state.Flow, p *ackPacket, kind state.ChangeKind) {
	l.endIsolationFor(f.Seq)
	code := p.ReasonCode
	if ackSucceeded(code) {
		latency := l.endFlight(f.PacketID)
		delete(l.retryAttempts, f.Seq)
		l.takeOffWire(f.PacketID)
		l.record(state.Change{Kind: kind, PacketID: f.PacketID, Seq: f.Seq, QoS: f.QoS, Order: f.Order})
		outcome := Outcome{Seq: f.Seq, Kind: Delivered, ReasonCode: code, Latency: latency}
		l.emitAfterCommit(outcome)
		return
	}

	reason := "broker rejected the message with " + reasonName(code, p.packetName())
	if p.ReasonString != "" {
		reason += ": " + p.ReasonString
	}
	switch {
	case ackPermanent(code):
		delete(l.retryAttempts, f.Seq)
		l.endFlow(f, state.ChangeFailed, reason, code)
	default:
		l.endFlow(f, state.ChangeReleased, reason, code)
		l.scheduleRetry(f.Seq, reason)
	}
}

// scheduleRetry publishes seq again as a new message after a backoff that
// grows with each transient rejection of the same message.
func (l *Loop) scheduleRetry(seq uint64, reason string) {
	attempt := l.retryAttempts[seq]
	l.retryAttempts[seq] = attempt + 1
	delay := l.retryBackoff.delay(attempt)
	l.log.Warn("message rejected for now, publishing it again later", "seq", seq, "reason", reason, "backoff_ms", delay.Milliseconds())
	l.retries = append(l.retries, retry{seq: seq, due: l.clock.Now().Add(delay)})
	l.armRetryTimer()
}

// retriesDue moves the messages whose delay passed to the replay queue.
func (l *Loop) retriesDue() {
	l.retryTimer.fired()
	now := l.clock.Now()
	l.retries = slices.DeleteFunc(l.retries, func(r retry) bool {
		if r.due.After(now) {
			return false
		}
		l.queueReplay(r.seq)
		return true
	})
	l.armRetryTimer()
}

func (l *Loop) armRetryTimer() {
	if len(l.retries) == 0 {
		l.retryTimer.stop()
		return
	}
	next := l.retries[0].due
	for _, r := range l.retries[1:] {
		if r.due.Before(next) {
			next = r.due
		}
	}
	l.retryTimer.arm(max(next.Sub(l.clock.Now()), time.Millisecond))
}

// encodeAck encodes PUBACK, PUBREC, PUBREL or PUBCOMP. These packets have
// fixed fields and always encode.
func (l *Loop) encodeAck(kind ackKind, id uint16, code byte) []byte {
	return l.codec.appendAck(l.packetBuffer(), kind, id, code)
}
