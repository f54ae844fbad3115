package eventloop

import (
	"context"
	"errors"
	"fmt"
	"slices"
)

// ackTicksPerTimeout splits the ack timeout into ticks. A packet times out
// between 1 and 1.25 ack timeouts after it was written, measured only with
// the loop's timers.
const ackTicksPerTimeout = 4

// pumpBudget bounds the requests taken in one step, so timers and incoming
// packets are not starved by a long backlog.
const pumpBudget = 64

// closedChan is always ready; selecting on it makes a select not block.
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// stepOnline sends what may be sent, then waits for one thing to happen.
func (l *Loop) stepOnline(ctx context.Context) {
	busy := l.pump()
	if l.conn == nil || l.closed || len(l.events) > 0 {
		return
	}
	l.armAckTick()
	if l.draining && l.drained() {
		l.completeShutdown()
		return
	}

	var ready, immediate <-chan struct{}
	if l.srcEmpty && l.wantsRequests() {
		ready = l.src.Ready()
	}
	if busy {
		immediate = closedChan
	}
	c := l.conn
	select {
	case <-ctx.Done():
	case <-l.closeCh:
		l.finish()
	case <-l.cmdKick:
	case <-l.journal.done:
	case batch := <-c.packets:
		l.handlePackets(c, batch.packets)
		c.recycle(batch)
	case err := <-c.readErr:
		l.dropConnection(fmt.Errorf("read from broker: %w", err), false)
	case <-l.keepAlive.window.c():
		l.keepAliveWindowEnded()
	case <-l.keepAlive.pingDue.c():
		l.keepAlive.pingDue.fired()
		l.dropConnection(errPingTimeout, false)
	case <-l.ackTick.c():
		l.ackTicked()
	case <-l.stable.c():
		l.stable.fired()
		l.backoff.reset()
	case <-l.throttleWait.c():
		l.throttleWait.fired()
	case <-l.retryTimer.c():
		l.retriesDue()
	case <-l.drain.c():
		l.drain.fired()
		l.log.Warn("drain timed out, shutting down with acknowledgements outstanding", "inflight", l.inflight(),
			"incoming_unreleased", l.incomingHeld)
		l.completeShutdown()
	case <-ready:
		l.srcEmpty = false
	case <-immediate:
	}
}

// handlePackets dispatches the packets of one read in order. Those after
// a packet that ended connection c belong to the old connection and are
// dropped, as unread ones are. The packets arrived together, so the keep
// alive notes traffic once for all of them.
func (l *Loop) handlePackets(c *connection, batch []packet) {
	if slices.ContainsFunc(batch, countsAsTraffic) {
		l.keepAlive.received()
	}
	for _, p := range batch {
		if l.conn != c || l.closed {
			return
		}
		l.handlePacket(p)
	}
}

// countsAsTraffic reports whether p counts as traffic for the keep alive
// window. A PINGRESP does not, because it replies to the previous
// window's PINGREQ, so counting it would halve the ping rate of a client
// that only sends.
func countsAsTraffic(p packet) bool {
	_, ping := p.(*pingrespPacket)
	return !ping
}

// handlePacket dispatches one packet from the broker.
func (l *Loop) handlePacket(p packet) {
	switch p := p.(type) {
	case *ackPacket:
		l.handleAck(p)
	case *publishPacket:
		l.handleIncoming(p)
	case *pingrespPacket:
		l.keepAlive.pingresp()
	case *subackPacket:
		l.onSuback(p)
	case *unsubackPacket:
		l.onUnsuback(p)
	case *disconnectPacket:
		l.dropConnection(&disconnectError{code: p.ReasonCode, reason: p.ReasonString}, false)
	default:
		l.dropConnection(&protocolError{code: reasonProtocolError, err: fmt.Errorf("unexpected %s packet from the broker", p.packetName())}, false)
	}
}

// keepAliveWindowEnded pings or declares the connection dead.
func (l *Loop) keepAliveWindowEnded() {
	ping, err := l.keepAlive.windowEnded()
	if err != nil {
		l.dropConnection(err, false)
		return
	}
	if ping {
		l.writePacket(&pingreqPacket{})
	}
}

// armAckTick runs the ack tick while packets wait for acknowledgement.
func (l *Loop) armAckTick() {
	switch {
	case l.onWire.len() == 0:
		l.ackTick.stop()
	case !l.ackTick.armed:
		l.ackTick.arm(l.opts.AckTimeout / ackTicksPerTimeout)
	}
}

// errAckTimeout ends a connection on which an acknowledgement is overdue.
// MQTT 5 allows no resend on a live connection, so the loop reconnects and
// resends there.
var errAckTimeout = errors.New("acknowledgement timed out")

// ackTicked counts a tick and ends the connection if a packet has waited
// a full ack timeout.
func (l *Loop) ackTicked() {
	l.ackTick.fired()
	l.ackTicks++
	overdue, found := uint16(0), false
	l.onWire.each(func(id uint16, sentAt uint64) bool {
		overdue, found = id, l.ackTicks-(sentAt-1) > ackTicksPerTimeout
		return !found
	})
	if found {
		l.log.Warn("acknowledgement overdue, reconnecting", "packet_id", overdue, "ack_timeout_ms", l.opts.AckTimeout.Milliseconds())
		l.dropConnection(fmt.Errorf("%w: packet identifier %d waited longer than %s", errAckTimeout, overdue, l.opts.AckTimeout), false)
	}
}

// drained reports that nothing waits for the broker, the journal or the
// caller: an incoming message the caller took but has not released yet
// would otherwise be sent again by the broker after the restart.
func (l *Loop) drained() bool {
	return l.onWire.len() == 0 && len(l.resend) == 0 && len(l.writes) == 0 && len(l.birthIDs) == 0 &&
		l.incomingHeld == 0
}

// completeShutdown sends DISCONNECT 0x00 and ends the loop.
func (l *Loop) completeShutdown() {
	if l.conn != nil {
		normal := byte(0x00)
		l.closeConn(&normal)
		l.emit(Event{Kind: EventDisconnected, Err: errShuttingDown})
		l.log.Info("disconnected", "reason", reasonName(0x00, "disconnect"))
	}
	l.finish()
}
