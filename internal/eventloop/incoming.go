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
		if w, ok := l.incomingWaiting[id]; ok {
			w.connectionGen = l.connGen // PUBREC follows its Release, on this connection
			l.incomingWaiting[id] = w
			return
		}
	}
	size := p.Message.Size()
	if qos > 0 && (l.draining || l.topicDropped(p.Message.Topic) || l.incomingFull(size)) {
		l.dropIncoming(id, p.Message.Topic)
		return
	}

	release, decline := func() {}, func() {}
	if qos > 0 {
		l.incomingOpen++
		l.incomingHeld++
		l.incomingBytes += size
		c := command{kind: cmdRelease, packetID: id, qos: qos, connectionGen: l.connGen, size: size}
		if qos == 2 {
			l.incomingFlows++
			c.flow = l.incomingFlows
			l.incomingWaiting[id] = waitingFlow{flow: c.flow, connectionGen: l.connGen}
		}
		var once sync.Once
		release = func() { once.Do(func() { l.send(c) }) }
		declined := c
		declined.kind, declined.topic = cmdDecline, p.Message.Topic
		decline = func() { once.Do(func() { l.send(declined) }) }
	}
	l.emit(Event{Kind: EventIncoming, Incoming: &Incoming{
		PacketID:                id,
		Dup:                     p.Dup,
		Message:                 p.Message,
		SubscriptionIdentifiers: p.SubscriptionIdentifiers,
		Release:                 release,
		Decline:                 decline,
		Redelivered:             l.redeliveredSince(l.connGen),
	}})
}

// waitingFlow is an incoming QoS 2 flow whose message the caller has not
// released yet.
type waitingFlow struct {
	flow          uint64 // counted in Loop.incomingFlows, so a release matches only its own flow
	connectionGen uint64 // the last connection the broker sent the PUBLISH on
}

// redeliveredSince returns Incoming.Redelivered for a message that
// arrived on connection gen.
func (l *Loop) redeliveredSince(gen uint64) func() (bool, bool) {
	return func() (bool, bool) {
		switch {
		case l.liveGen.Load() == gen:
			return false, true // still on its own connection
		case l.latestGen.Load() == gen:
			return false, false // ended, and no new connection yet
		default:
			return l.lostGen.Load() <= gen, true
		}
	}
}

// incomingFull reports whether a QoS 1 or 2 message of size bytes would
// take the unreleased incoming messages, of this connection and earlier
// ones, past MaxIncoming or MaxIncomingBytes. Below the Receive Maximum
// of this connection a message is always taken: a broker that keeps to it
// is never refused, whatever the size of its messages and whatever older
// copies wait for the caller.
func (l *Loop) incomingFull(size int) bool {
	if l.incomingOpen < int(l.opts.ReceiveMaximum) {
		return false
	}
	return l.incomingHeld >= l.opts.MaxIncoming || l.incomingBytes+size > l.opts.MaxIncomingBytes
}

// dropIncoming drops a QoS 1 or 2 PUBLISH without acknowledging it,
// because the messages the caller has not released yet fill what the
// loop holds, or because the loop is draining. mosquitto 2.0 sends its
// whole backlog, far beyond the Receive Maximum, when it resumes a
// session, and keeping it all would let the broker decide how much
// memory the daemon uses. The broker sends the message again on the next
// connection, which the loop opens once the messages it took are
// released (see releaseIncoming).
func (l *Loop) dropIncoming(id uint16, topic string) {
	if l.draining {
		return // the next start's connection gets it
	}
	l.noteDropped(topic)
	if l.incomingDropped == 1 {
		l.log.Warn("broker sent more messages than the loop can hold; the rest arrive again after a reconnect",
			"receive_maximum", l.opts.ReceiveMaximum, "held", l.incomingHeld, "held_bytes", l.incomingBytes,
			"packet_id", id)
	}
}

// releaseIncoming acknowledges a message the caller stored. QoS 2 is
// journaled first, so a redelivery after a crash gets PUBREC again
// without a second event. A message whose connection ended is not
// acknowledged on the next one until the broker sends it again there. A
// QoS 2 release whose flow ended with a lost session is dropped, even
// when a new flow has taken its packet identifier since.
func (l *Loop) releaseIncoming(c command) {
	l.incomingHeld--
	l.incomingBytes -= c.size
	current := c.connectionGen == l.connGen && l.conn != nil
	if current {
		l.incomingOpen--
	}
	// The last release may come from an earlier connection, such as a
	// copy the inbox skipped; the refused messages are this one's.
	var after func(bool)
	if l.conn != nil && l.incomingHeld == 0 && l.incomingDropped > 0 && !l.draining {
		after = l.reconnectForDropped(l.connGen)
	}

	if c.qos == 1 {
		if current {
			l.queueWrite(l.encodeAck(kindPuback, c.packetID, 0), after)
		} else if after != nil {
			after(true)
		}
		return
	}
	w, ok := l.incomingWaiting[c.packetID]
	if !ok || w.flow != c.flow {
		// The session ended since: the broker forgot this flow.
		if after != nil {
			after(true)
		}
		return
	}
	delete(l.incomingWaiting, c.packetID)
	l.record(state.Change{Kind: state.ChangeIncomingStored, PacketID: c.packetID, QoS: 2})
	if w.connectionGen == l.connGen && l.conn != nil {
		l.queueWrite(l.encodeAck(kindPubrec, c.packetID, 0), after)
		return
	}
	// The PUBLISH came on a connection that has ended, and the broker has
	// not sent it again on this one. PUBREC waits for that resend, which
	// handleIncoming acknowledges as a stored flow. With mosquitto 2.0.11
	// restarted with persistence, an earlier PUBREC was logged by the
	// broker as for an unknown packet identifier, and the message later
	// came again as a new flow and was stored twice.
	if after != nil {
		after(true)
	}
}

// maxDroppedTopics bounds the topics remembered as dropped on one
// connection. Past it every QoS 1 and 2 message of the connection is
// dropped.
const maxDroppedTopics = 4096

// noteDropped counts a message of this connection that was dropped or
// declined and remembers its topic.
func (l *Loop) noteDropped(topic string) {
	l.incomingDropped++
	l.stats.update(func(s *Stats) { s.IncomingDeferred++ })
	if l.dropAll {
		return
	}
	if len(l.droppedTopics) >= maxDroppedTopics {
		l.dropAll = true
		return
	}
	if l.droppedTopics == nil {
		l.droppedTopics = make(map[string]struct{})
	}
	l.droppedTopics[topic] = struct{}{}
}

// topicDropped reports whether a message on topic was dropped on this
// connection. A later message on it is dropped too: stored, it would come
// before the dropped one, which the broker sends again only after the
// reconnect. Messages on other topics are still taken, because order
// holds per topic.
func (l *Loop) topicDropped(topic string) bool {
	if l.incomingDropped == 0 {
		return false
	}
	if l.dropAll {
		return true
	}
	_, ok := l.droppedTopics[topic]
	return ok
}

// declineIncoming stops holding a message that the caller gave up
// without storing it, such as one waiting for room in a full inbox when
// the daemon stops. Its acknowledgement is never sent, so the broker keeps
// it in flight. The loop counts it as dropped, and the broker sends it
// again on a later connection. That connection is opened at once when nothing
// else is held any more, unless the loop is draining.
func (l *Loop) declineIncoming(c command) {
	l.incomingHeld--
	l.incomingBytes -= c.size
	if w, ok := l.incomingWaiting[c.packetID]; ok && c.qos == 2 && w.flow == c.flow {
		delete(l.incomingWaiting, c.packetID)
	}
	if l.conn == nil || l.draining {
		return
	}
	if c.connectionGen == l.connGen {
		l.noteDropped(c.topic)
	}
	if l.incomingHeld == 0 && l.incomingDropped > 0 {
		l.reconnectForDropped(l.connGen)(true)
	}
}

// reconnectForDropped returns the action that, once the last
// acknowledgement is written, requests a new connection, so that the
// broker sends the refused messages again. It runs as a command, so
// the connection is not dropped while its writes are being flushed.
func (l *Loop) reconnectForDropped(gen uint64) func(bool) {
	refused := l.incomingDropped
	return func(bool) {
		l.log.Info("reconnecting so that the broker sends the dropped messages again", "dropped", refused)
		l.send(command{kind: cmdReconnect, connectionGen: gen})
	}
}

// onIncomingPubrel ends an incoming QoS 2 flow: PUBCOMP is written once
// the release is durable.
func (l *Loop) onIncomingPubrel(p *ackPacket) {
	if _, stored := slices.BinarySearch(l.st.IncomingQoS2, p.PacketID); !stored {
		l.unknownPubrels++
		if l.unknownPubrels == 1 {
			l.log.Warn("pubrel for unknown packet identifier, sent PUBCOMP 0x92; "+
				"more on this connection are logged at debug level", "packet_id", p.PacketID)
		} else {
			l.log.Debug("pubrel for unknown packet identifier", "packet_id", p.PacketID)
		}
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
	l.emitAfterCommit(Outcome{Seq: seq, Kind: Dropped, Reason: reason})
}
