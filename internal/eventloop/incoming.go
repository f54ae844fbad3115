package eventloop

import (
	"slices"
	"sync"

	"github.com/mqspool/mqspool/internal/state"
)

// handleIncoming turns a PUBLISH from the broker into an event. Its
// PUBACK or PUBREC waits until the caller calls Release. A QoS 2 packet
// identifier that is already stored gets PUBREC again without a new event.
func (l *Loop) handleIncoming(p *publishPacket) {
	id, qos := p.PacketID, p.Message.QoS
	if qos == 2 {
		if _, stored := slices.BinarySearch(l.st.IncomingQoS2, id); stored {
			l.queueWrite(l.encodeAck(kindPubrec, id, 0), nil)
			return
		}
		if l.incomingWaiting[id] {
			return // the caller has it; PUBREC follows its Release
		}
		l.incomingWaiting[id] = true
	}

	release := func() {}
	if qos > 0 {
		var once sync.Once
		c := command{kind: cmdRelease, packetID: id, qos: qos, connectionGen: l.connGen}
		release = func() { once.Do(func() { l.send(c) }) }
	}
	l.emit(Event{Kind: EventIncoming, Incoming: &Incoming{
		PacketID:                id,
		Dup:                     p.Dup,
		Message:                 p.Message,
		SubscriptionIdentifiers: p.SubscriptionIdentifiers,
		Release:                 release,
	}})
}

// releaseIncoming acknowledges a message the caller stored. QoS 2 is
// journaled first, so a redelivery after a crash gets PUBREC again
// without a second event. A QoS 1 message whose connection ended is not
// acknowledged: the broker sends it again.
func (l *Loop) releaseIncoming(c command) {
	if c.qos == 1 {
		if c.connectionGen == l.connGen && l.conn != nil {
			l.queueWrite(l.encodeAck(kindPuback, c.packetID, 0), nil)
		}
		return
	}
	if !l.incomingWaiting[c.packetID] {
		return // the session ended since; the broker forgot this flow
	}
	delete(l.incomingWaiting, c.packetID)
	l.record(state.Change{Kind: state.ChangeIncomingStored, PacketID: c.packetID, QoS: 2})
	l.queueWrite(l.encodeAck(kindPubrec, c.packetID, 0), nil)
}

// onIncomingPubrel ends an incoming QoS 2 flow: PUBCOMP is written once
// the release is durable.
func (l *Loop) onIncomingPubrel(p *ackPacket) {
	if _, stored := slices.BinarySearch(l.st.IncomingQoS2, p.PacketID); !stored {
		l.log.Warn("pubrel for unknown packet identifier", "packet_id", p.PacketID)
		l.queueWrite(l.encodeAck(kindPubcomp, p.PacketID, 0x92), nil)
		return
	}
	l.record(state.Change{Kind: state.ChangeIncomingReleased, PacketID: p.PacketID})
	l.queueWrite(l.encodeAck(kindPubcomp, p.PacketID, 0), nil)
}

// dropOfflineQoS0 drops QoS 0 requests while offline, when configured to.
// The first request of a higher QoS is held for the next connection.
func (l *Loop) dropOfflineQoS0() {
	for range pumpBudget {
		if l.held != nil || l.paused || l.throttleWait.armed {
			return
		}
		req, ok := l.nextRequest()
		if !ok {
			return
		}
		if req.Message.QoS > 0 {
			l.hold(req)
			return
		}
		l.dropQoS0(req.Seq)
	}
}

// dropQoS0 drops a QoS 0 message that could not be written while offline.
func (l *Loop) dropQoS0(seq uint64) {
	const reason = "qos 0 message dropped while offline"
	l.record(state.Change{Kind: state.ChangeExpired, Seq: seq, Reason: reason})
	l.afterCommit(func() { l.emitOutcome(Outcome{Seq: seq, Kind: Dropped, Reason: reason}) })
}
