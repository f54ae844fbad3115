package eventloop

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/mqspool/mqspool/internal/message"
	"github.com/mqspool/mqspool/internal/state"
)

// pump sends resends and new requests until the window, the throttle or
// the source stops it. It returns true when it stopped only because of
// its budget, so the caller polls again without blocking.
func (l *Loop) pump() bool {
	for range pumpBudget {
		if l.conn == nil || l.closed || !l.pumpOne() {
			return false
		}
	}
	return true
}

// pumpOne sends one packet and reports whether to continue. Resends come
// before anything new, the birth message included.
func (l *Loop) pumpOne() bool {
	if l.isolation.active && l.birthPending {
		l.publishBirth() // first, so that its PUBACK is in before a message goes out
		return true
	}
	if l.isolationBlocks() {
		return false
	}
	if len(l.resend) > 0 {
		return l.resendNext()
	}
	if l.birthPending {
		if l.birthNeedsQuota() && l.inflight() >= l.window() {
			return false // a resend still uses the broker's Receive Maximum
		}
		l.publishBirth()
		return true
	}
	if !l.wantsRequests() {
		return false
	}
	req, ok := l.nextRequest()
	if !ok {
		return false
	}
	return l.publishNew(req)
}

// wantsRequests reports whether new requests may be taken now.
func (l *Loop) wantsRequests() bool {
	return !l.paused && !l.draining && len(l.resend) == 0 && !l.throttleWait.armed
}

// nextRequest returns, in this order, a message to publish again, a held
// request, or the next request of the source.
func (l *Loop) nextRequest() (Request, bool) {
	for len(l.replay) > 0 {
		seq := l.replay[0]
		l.replay = l.replay[1:]
		req, err := l.src.Load(seq)
		if err != nil {
			l.replayLoadFailed(seq, err)
			continue
		}
		l.replayed = true
		return req, true
	}
	l.replayed = false
	if l.held != nil {
		req := *l.held
		l.held = nil
		return req, true
	}
	if l.srcEmpty {
		return Request{}, false
	}
	req, ok, err := l.src.Next()
	if err != nil {
		// Try again after a pause instead of spinning on a failing source.
		l.log.Error("read next request", "err", err, "retry_ms", l.opts.MinDelay.Milliseconds())
		l.stats.update(func(s *Stats) { s.LastError = err.Error() })
		l.throttleWait.arm(l.opts.MinDelay)
		return Request{}, false
	}
	if !ok {
		l.srcEmpty = true
	}
	return req, ok
}

// replayLoadFailed logs a message of the replay queue that could not be
// loaded. A message past PUBREC that is gone was deleted at PUBREC by an
// earlier version, which is expected after an upgrade.
func (l *Loop) replayLoadFailed(seq uint64, err error) {
	if _, delivered := l.reported[seq]; delivered {
		delete(l.reported, seq)
		l.log.Info("message past PUBREC is no longer stored, not publishing it again", "seq", seq, "err", err)
		return
	}
	l.log.Error("load message to publish again", "seq", seq, "err", err)
}

// hold keeps req, the last request from nextRequest, to be sent first
// when sending is possible again. A request from the replay queue goes
// back into the queue: the queue comes before a held request, which may
// be newer, and a request held before a reconnect queued the replay
// must not be replaced.
func (l *Loop) hold(req Request) {
	if l.replayed {
		l.queueReplay(req.Seq)
		l.recyclePayload(req)
		return
	}
	l.held = &req
}

// publishNew publishes req as a new message and reports whether the pump
// may continue.
func (l *Loop) publishNew(req Request) bool {
	m := req.Message
	remaining, expired := l.remainingExpiry(req)
	if expired {
		l.expire(req)
		return true
	}
	m.ExpirySeconds = remaining
	if err := m.Validate(true); err != nil {
		// Stored before its fields were checked, by an older version or
		// a caller of the loop. The broker would end every connection on
		// it, and the messages behind it would wait for ever.
		l.failMessage(req.Seq, "message cannot be sent: "+err.Error(), 0)
		l.recyclePayload(req)
		return true
	}
	downgraded := l.fitLimits(&m)
	if downgraded && l.opts.OnBrokerLimit == LimitReject {
		l.failMessage(req.Seq, limitReason(l.conn.limits.MaximumQoS, l.conn.limits.RetainAvailable, req.Message), 0)
		return true
	}
	if m.QoS > 0 && l.inflight() >= l.window() {
		l.hold(req)
		return false
	}
	if d := l.throttleDelay(m.Size()); d > 0 {
		l.hold(req)
		l.throttleWait.arm(d)
		return false
	}
	if downgraded {
		// Counted once it goes out, not each time it waits for the window.
		l.log.Warn("message downgraded to broker limits", "seq", req.Seq, "qos", m.QoS, "retain", m.Retain)
		l.stats.update(func(s *Stats) { s.Downgraded++ })
	}

	// Check the size before a packet identifier is taken. Any identifier
	// encodes to the same two bytes, so sendNewFlow writes the allocated
	// one over the placeholder instead of encoding again.
	p := &l.encoding
	*p = publishPacket{Message: m}
	if m.QoS > 0 {
		p.PacketID = 1
	}
	data, ok := l.encodeForSend(req.Seq, p)
	*p = publishPacket{}
	switch {
	case !ok:
	case m.QoS == 0:
		l.sendQoS0(req.Seq, data)
	case !l.sendNewFlow(req, m.QoS, data):
		return false // req is held and sent later
	}
	l.recyclePayload(req)
	return true
}

// recyclePayload hands the payload of req back to a source that reuses
// it. The caller must not read req's payload afterwards.
func (l *Loop) recyclePayload(req Request) {
	if r, ok := l.src.(PayloadRecycler); ok && req.Message.Payload != nil {
		r.Recycle(req.Message.Payload)
	}
}

// encodeForSend encodes p and checks it against the broker's Maximum
// Packet Size. A message that cannot be sent goes to failed/.
func (l *Loop) encodeForSend(seq uint64, p *publishPacket) ([]byte, bool) {
	data := l.codec.appendPublish(l.packetBuffer(), p)
	if reason := l.conn.oversized(len(data)); reason != "" {
		l.failMessage(seq, reason, 0)
		l.spare.Put(data)
		return nil, false
	}
	return data, true
}

// sendQoS0 writes a QoS 0 message, then records it delivered. A message
// whose write never happened is published again, or dropped when QoS 0
// messages are not kept offline.
func (l *Loop) sendQoS0(seq uint64, data []byte) {
	l.enqueue(pendingWrite{data: data, qos0Seq: seq})
}

// qos0Done concludes the QoS 0 message seq once its write happened or
// was given up.
func (l *Loop) qos0Done(seq uint64, written bool) {
	switch {
	case written:
		l.stats.update(func(s *Stats) { s.Published++ })
		l.record(state.Change{Kind: state.ChangeDelivered, Seq: seq})
		l.emitAfterCommit(Outcome{Seq: seq, Kind: Delivered})
	case l.opts.DropQoS0Offline:
		l.dropQoS0(seq)
	default:
		l.queueReplay(seq)
	}
}

// queueReplay adds seq to the messages to publish again. The queue is
// kept in spool order, whatever queued each message: a QoS 0 write that
// never happened, a flow the broker's session lost, a retry that is due.
// So a message is never published again after a newer one from the queue.
func (l *Loop) queueReplay(seq uint64) {
	i, found := slices.BinarySearch(l.replay, seq)
	if !found {
		l.replay = slices.Insert(l.replay, i, seq)
	}
}

// sendNewFlow takes a packet identifier, writes it into data, the encoded
// PUBLISH, journals the flow and writes the PUBLISH once the journal made
// it durable.
func (l *Loop) sendNewFlow(req Request, qos byte, data []byte) bool {
	id, err := l.allocate()
	if err != nil {
		l.spare.Put(data)
		l.hold(req)
		return false
	}
	if err := l.codec.setPublishPacketID(data, id); err != nil {
		l.failMessage(req.Seq, fmt.Sprintf("message cannot be encoded: %v", err), 0)
		l.spare.Put(data)
		return true
	}

	l.record(state.Change{Kind: state.ChangeSent, PacketID: id, Seq: req.Seq, QoS: qos, Order: l.st.NextOrder})
	l.flights.set(id, l.newFlight(flight{seq: req.Seq, qos: qos, firstSent: l.clock.Now()}))
	l.putOnWire(id)
	l.queuePublish(data, id, req.Seq)
	return true
}

// putOnWire counts id against the window and starts its ack timeout.
func (l *Loop) putOnWire(id uint16) {
	l.onWire.set(id, l.ackTicks+1)
	l.stats.update(func(s *Stats) { s.Inflight = l.onWire.len() })
}

func (l *Loop) takeOffWire(id uint16) {
	l.onWire.delete(id)
	l.stats.update(func(s *Stats) { s.Inflight = l.onWire.len() })
}

// resendNext resends the next open flow after a reconnect with session
// present: PUBLISH with DUP set and the same packet identifier, or
// PUBREL. It reports whether the pump may continue.
func (l *Loop) resendNext() bool {
	id := l.resend[0]
	f, ok := l.st.Flow(id)
	if !ok {
		l.resend = l.resend[1:]
		return true
	}
	limit := l.window()
	if f.Stage == state.StagePubrel {
		limit = l.fullWindow() // isolationBlocks decides when a PUBREL may go
	}
	if l.inflight() >= limit {
		return false
	}
	l.resend = l.resend[1:]
	if f.Stage == state.StagePubrel {
		l.putOnWire(id)
		l.queueWrite(l.encodeAck(kindPubrel, id, 0), nil)
		return true
	}

	req, err := l.src.Load(f.Seq)
	if err != nil {
		// TODO: a message the source cannot load is failed, so the journal
		// gets a ChangeFailed for a message it may no longer hold.
		l.log.Error("load message to resend", "packet_id", id, "seq", f.Seq, "err", err)
		l.endFlow(f, state.ChangeFailed, fmt.Sprintf("message could not be loaded for resending: %v", err), 0)
		return true
	}
	fl := l.flights.get(id)
	if fl == nil {
		fl = l.newFlight(flight{seq: f.Seq, qos: f.QoS, written: true})
		l.flights.set(id, fl)
	}
	m := req.Message
	if err := m.Validate(true); err != nil {
		l.endFlow(f, state.ChangeFailed, "message cannot be sent: "+err.Error(), 0)
		l.recyclePayload(req)
		return true
	}
	m.QoS = f.QoS
	remaining, _ := l.remainingExpiry(req)
	m.ExpirySeconds = max(remaining, min(m.ExpirySeconds, 1))
	if !l.conn.limits.RetainAvailable {
		m.Retain = false
	}
	p := &publishPacket{PacketID: id, Dup: fl.written, Message: m}
	data := l.codec.appendPublish(l.packetBuffer(), p)
	l.recyclePayload(req)
	if reason := l.conn.oversized(len(data)); reason != "" {
		l.endFlow(f, state.ChangeFailed, reason, 0)
		l.spare.Put(data)
		return true
	}
	l.putOnWire(id)
	l.queuePublish(data, id, f.Seq)
	return true
}

// endFlow ends flow f with a ChangeFailed or ChangeReleased and reports a
// failure to the caller.
func (l *Loop) endFlow(f state.Flow, kind state.ChangeKind, reason string, code byte) {
	latency := l.endFlight(f.PacketID)
	l.takeOffWire(f.PacketID)
	l.record(state.Change{Kind: kind, PacketID: f.PacketID, Seq: f.Seq, QoS: f.QoS, Order: f.Order, Reason: reason})
	if kind == state.ChangeFailed {
		// The quarantine logs the message once it is in failed/.
		l.log.Debug("message failed", "seq", f.Seq, "packet_id", f.PacketID, "reason", reason)
		l.emitAfterCommit(Outcome{Seq: f.Seq, Kind: Failed, Reason: reason, ReasonCode: code, Latency: latency})
	}
}

// failMessage moves a message that never got a flow to failed/.
func (l *Loop) failMessage(seq uint64, reason string, code byte) {
	l.log.Debug("message failed", "seq", seq, "reason", reason)
	l.record(state.Change{Kind: state.ChangeFailed, Seq: seq, Reason: reason})
	l.emitAfterCommit(Outcome{Seq: seq, Kind: Failed, Reason: reason, ReasonCode: code})
}

// newFlight returns a flight holding v, reusing one that endFlight
// freed.
func (l *Loop) newFlight(v flight) *flight {
	if n := len(l.freeFlights); n > 0 {
		fl := l.freeFlights[n-1]
		l.freeFlights = l.freeFlights[:n-1]
		*fl = v
		return fl
	}
	fl := new(flight)
	*fl = v
	return fl
}

// endFlight removes the flight of id, if any, keeps it for reuse and
// returns the time since its first send, for Outcome.Latency.
func (l *Loop) endFlight(id uint16) time.Duration {
	fl := l.flights.get(id)
	if fl == nil {
		return 0
	}
	l.flights.delete(id)
	latency := l.latency(fl)
	*fl = flight{}
	l.freeFlights = append(l.freeFlights, fl)
	return latency
}

// latency returns the time since the first send of a flow, or zero.
func (l *Loop) latency(fl *flight) time.Duration {
	if fl == nil || fl.firstSent.IsZero() {
		return 0
	}
	return max(l.clock.Now().Sub(fl.firstSent), 0)
}

// remainingExpiry returns the Message Expiry Interval left after the time
// the request waited, and whether it has run out. Age is taken from the
// clock, so a clock set backwards yields age zero, never a longer life.
func (l *Loop) remainingExpiry(req Request) (seconds uint32, expired bool) {
	total := req.Message.ExpirySeconds
	if total == 0 {
		return 0, false
	}
	var age time.Duration
	if !req.Enqueued.IsZero() {
		age = max(l.clock.Now().Sub(req.Enqueued), 0)
	}
	left := time.Duration(total)*time.Second - age
	if left <= 0 {
		return 0, true
	}
	return uint32((left + time.Second - 1) / time.Second), false
}

// expire drops a message whose Message Expiry Interval passed.
func (l *Loop) expire(req Request) {
	l.log.Info("message expired before it was sent", "seq", req.Seq, "expiry_seconds", req.Message.ExpirySeconds)
	reason := fmt.Sprintf("message expiry interval of %d seconds passed before it was sent", req.Message.ExpirySeconds)
	l.record(state.Change{Kind: state.ChangeExpired, Seq: req.Seq, Reason: reason})
	l.emitAfterCommit(Outcome{Seq: req.Seq, Kind: Expired, Reason: reason})
}

// throttleDelay takes size bytes and one message from the limiters, or
// returns how long to wait and takes nothing.
func (l *Loop) throttleDelay(size int) time.Duration {
	if l.msgLimit == nil && l.byteLimit == nil {
		return 0
	}
	now := l.clock.Now()
	var delay time.Duration
	var reservations []interface{ CancelAt(time.Time) }
	if l.msgLimit != nil {
		r := l.msgLimit.ReserveN(now, 1)
		reservations = append(reservations, r)
		delay = max(delay, r.DelayFrom(now))
	}
	if l.byteLimit != nil && size > 0 {
		if size > l.byteLimit.Burst() {
			l.byteLimit.SetBurstAt(now, size)
		}
		r := l.byteLimit.ReserveN(now, size)
		reservations = append(reservations, r)
		delay = max(delay, r.DelayFrom(now))
	}
	if delay > 0 {
		for _, r := range reservations {
			r.CancelAt(now)
		}
	}
	return delay
}

// limitReason explains a message rejected because it is over the broker's
// Maximum QoS or uses retain where Retain Available is 0. It names only
// the limits the message is over, then in sentences of their own the fix
// of its .msg file in failed/, and the keys and the policy for later
// messages.
func limitReason(maxQoS byte, retainAvailable bool, m message.Message) string {
	var over, headers, keys, sources []string
	if m.QoS > maxQoS {
		over = append(over, fmt.Sprintf("qos %d, over the broker's Maximum QoS of %d", m.QoS, maxQoS))
		headers = append(headers, fmt.Sprintf("QoS to %d", maxQoS))
		keys = append(keys, "lower publish.qos")
		sources = append(sources, "qos")
	}
	if m.Retain && !retainAvailable {
		over = append(over, "retain set, but the broker's Retain Available is 0")
		headers = append(headers, "Retain to false")
		keys = append(keys, "clear publish.retain")
		sources = append(sources, "retain")
	}
	return fmt.Sprintf("message has %s. To send it, set %s in its .msg file in failed/ and move that file "+
		"into new/. For later messages, %s (or the %s of their route or source file), "+
		"or set publish.on_broker_limit to downgrade",
		strings.Join(over, ", and "), strings.Join(headers, " and "),
		strings.Join(keys, " and "), strings.Join(sources, " and "))
}

// maxPacketBytes is the largest packet MQTT can encode: one byte of fixed
// header, a Remaining Length of at most four bytes and at most 268435455
// bytes after it.
const maxPacketBytes = 1 + 4 + 268435455

// packetLimit returns the largest packet the client may send on c: the
// broker's Maximum Packet Size, or MQTT's own limit when the CONNACK has
// none.
func (c *connection) packetLimit() int {
	if limit := c.limits.MaximumPacketSize; limit > 0 && uint64(limit) < maxPacketBytes {
		return int(limit)
	}
	return maxPacketBytes
}

// oversized returns why a PUBLISH packet of size bytes cannot be sent on
// c, or "" when it can. Without a Maximum Packet Size from the broker,
// MQTT's own limit applies, which a message near the largest
// publish.max_message_bytes can pass once its topic and properties count.
func (c *connection) oversized(size int) string {
	if limit := c.limits.MaximumPacketSize; limit > 0 && uint64(size) > uint64(limit) {
		return packetSizeReason(size, limit)
	}
	if size > maxPacketBytes {
		return fmt.Sprintf("publish packet of %d bytes exceeds the largest packet MQTT can encode, %d bytes: "+
			"make the message smaller, and set publish.max_message_bytes a little below 256MiB to reject "+
			"such files when they are taken from new/", size, maxPacketBytes)
	}
	return ""
}

// packetSizeReason explains a message whose PUBLISH packet of size bytes
// is over the broker's Maximum Packet Size of limit bytes.
func packetSizeReason(size int, limit uint32) string {
	return fmt.Sprintf("publish packet of %d bytes exceeds the broker's Maximum Packet Size of %d bytes: "+
		"make the message smaller or raise the broker's limit, and set publish.max_message_bytes "+
		"a little below the limit to reject such files when they are taken from new/", size, limit)
}
