package eventloop

import (
	"time"

	"github.com/mqspool/mqspool/internal/message"
	"github.com/mqspool/mqspool/internal/state"
)

// connected takes over an accepted connection: it reads the broker's
// limits, settles the session, subscribes, publishes the birth message and
// reports the connection.
func (l *Loop) connected(c *connection, ack *connackPacket, cleanStart bool) {
	l.connGen++
	c.gen = l.connGen
	l.conn = c
	l.wire.Store(c)
	if cleanStart || !ack.SessionPresent {
		l.lostGen.Store(c.gen)
	}
	l.latestGen.Store(c.gen)
	l.liveGen.Store(c.gen)
	l.incomingOpen, l.incomingDropped, l.unknownPubrels = 0, 0, 0
	clear(l.droppedTopics)
	l.dropAll = false
	l.srcEmpty = false // a Ready signal may have been missed while offline
	l.applyLimits(c, ack)

	switch {
	case cleanStart:
		l.startSession()
	case !ack.SessionPresent:
		l.loseSession()
	default:
		l.resumeSession()
	}
	if l.everUp {
		l.stats.update(func(s *Stats) { s.Reconnects++ })
	}
	l.everUp = true
	l.stable.arm(stableAfter)
	l.keepAlive.start(c.keepAlive)

	l.log.Info("connected", "url", c.url, "session_present", ack.SessionPresent,
		"session_expiry", l.sessionExpiry(c, ack), "receive_maximum", l.receiveMax, "maximum_packet_size", ack.MaximumPacketSize,
		"maximum_qos", ack.MaximumQoS, "retain_available", ack.RetainAvailable,
		"keep_alive_seconds", int(c.keepAlive/time.Second), "resend", len(l.resend))
	l.stats.update(func(s *Stats) {
		s.Connected, s.URL, s.SessionPresent, s.LastError = true, c.url, ack.SessionPresent, ""
	})
	l.isolation.shared = false
	l.syncSubscriptions(ack.SessionPresent, ack.SubscriptionIDs)
	l.birthPending = l.opts.Birth != nil
	l.emit(Event{Kind: EventConnected, Connected: &Connected{
		URL:               c.url,
		SessionPresent:    ack.SessionPresent,
		ReceiveMaximum:    uint16(l.receiveMax),
		MaximumPacketSize: ack.MaximumPacketSize,
		MaximumQoS:        ack.MaximumQoS,
		RetainAvailable:   ack.RetainAvailable,
		TopicAliasMaximum: ack.TopicAliasMaximum,
		KeepAlive:         c.keepAlive,
	}})
}

// sessionExpiry returns the session expiry in force: the broker's, when
// its CONNACK has one, else the one the CONNECT sent, in whole seconds. A
// broker that shortens it discards the session after a shorter outage.
// Then the messages of open QoS 2 flows past PUBREC are published again
// and may arrive twice, and messages for the subscriptions sent during
// the outage are lost, so each shortening is logged once.
func (l *Loop) sessionExpiry(c *connection, ack *connackPacket) time.Duration {
	requested := l.opts.SessionExpiry.Truncate(time.Second)
	if ack.SessionExpiry < 0 {
		l.sessionShortened = false
		return requested
	}
	expiry := time.Duration(ack.SessionExpiry) * time.Second
	if expiry >= requested {
		l.sessionShortened = false
		return expiry
	}
	if !l.sessionShortened || expiry != l.shortSession {
		l.shortSession, l.sessionShortened = expiry, true
		l.log.Warn("broker shortened the session expiry, so an outage longer than that loses the session: "+
			"QoS 2 messages past PUBREC are then published again and may arrive twice, and messages for the "+
			"subscriptions sent during the outage are lost", "url", c.url, "session_expiry", expiry,
			"configured", requested, "hint", "raise the broker's limit on session expiry, or set "+
				"broker.session_expiry to the broker's value to accept it")
	}
	return expiry
}

// applyLimits reads the limits of this CONNACK. Every connection starts
// from the defaults, so a limit a later CONNACK omits no longer applies.
func (l *Loop) applyLimits(c *connection, ack *connackPacket) {
	l.receiveMax = 65535
	if ack.ReceiveMaximum > 0 {
		l.receiveMax = int(ack.ReceiveMaximum)
	}
	c.keepAlive = l.opts.KeepAlive
	if l.opts.KeepAliveOff {
		c.keepAlive = 0
	}
	if ack.ServerKeepAlive >= 0 {
		c.keepAlive = time.Duration(ack.ServerKeepAlive) * time.Second
	}
	if c.keepAlive == 0 && !l.opts.KeepAliveOff {
		l.watchSocket(c)
	}
	c.writeTimeout = c.keepAlive
	if c.writeTimeout == 0 {
		c.writeTimeout = l.opts.ConnectTimeout
	}
}

// watchSocket turns on TCP keepalive for a connection whose broker turned
// MQTT keep alive off with Server Keep Alive 0. The socket was dialed for
// keep alive on, without the probes that find a dead peer otherwise.
func (l *Loop) watchSocket(c *connection) {
	idle := l.opts.KeepAlive
	err := socketKeepAlive(c.netConn, idle)
	if err != nil {
		l.log.Warn("broker turned keep alive off and setting TCP keepalive failed, so a dead link may go "+
			"unnoticed until the operating system gives up", "url", c.url, "err", err)
		return
	}
	l.log.Info("broker turned keep alive off (Server Keep Alive 0), TCP keepalive watches the link instead",
		"url", c.url, "idle", idle)
}

// startSession handles the CONNACK of a Clean Start 1 CONNECT. Flows left
// in the state belong to no broker session, so their messages are
// published again as new messages.
func (l *Loop) startSession() {
	l.replayOpenFlows()
	l.record(state.Change{Kind: state.ChangeSessionStarted})
	l.session = true
}

// loseSession handles Session Present 0 on a resume: the broker forgot the
// flows, so no PUBREL or DUP PUBLISH may refer to them. Their messages are
// published again as new messages before anything newer.
func (l *Loop) loseSession() {
	l.log.Warn("broker lost the session, publishing open messages again", "outgoing_flows", len(l.st.Outgoing))
	l.replayOpenFlows()
	l.record(state.Change{Kind: state.ChangeSessionLost})
}

// replayOpenFlows queues the message of every open flow for a new
// publish, in spool order with the earlier replays. That includes flows
// at StagePubrel: a broker that forwards a QoS 2 message only on PUBREL,
// as mosquitto does, lost the message with the session.
func (l *Loop) replayOpenFlows() {
	for _, f := range l.st.Outgoing {
		l.queueReplay(f.Seq)
		if f.Stage == state.StagePubrel {
			l.reported[f.Seq] = struct{}{}
		}
	}
	l.flights.clear()
	clear(l.incomingWaiting)
}

// resumeSession queues every open flow for resending, in send order.
func (l *Loop) resumeSession() {
	l.resend = l.resend[:0]
	for _, f := range l.sortedFlows() {
		l.resend = append(l.resend, f.PacketID)
	}
}

// publishBirth publishes the birth message as QoS 1 retained, within the
// broker's limits. It is not journaled: the next connection sends it again.
func (l *Loop) publishBirth() {
	l.birthPending = false
	m := *l.opts.Birth
	m.QoS, m.Retain = 1, true
	l.fitLimits(&m)
	p := &publishPacket{Message: m}
	if limit := l.conn.limits.MaximumPacketSize; limit > 0 {
		// Any packet identifier encodes to the same two bytes.
		size := len(l.codec.appendPublish(nil, &publishPacket{PacketID: 1, Message: m}))
		if uint64(size) > uint64(limit) {
			l.log.Error("birth message not sent, because its PUBLISH packet exceeds the broker's Maximum Packet Size: "+
				"shorten status.topic or raise the broker's limit", "topic", m.Topic, "bytes", size, "maximum_packet_size", limit)
			return
		}
	}
	if m.QoS > 0 {
		id, err := l.allocate()
		if err != nil {
			l.log.Error("birth message skipped", "err", err)
			return
		}
		p.PacketID = id
		l.birthIDs[id] = true
	}
	l.writePacket(p)
}

// birthNeedsQuota reports whether the birth message goes out with QoS 1,
// and so counts against the broker's Receive Maximum until its PUBACK.
func (l *Loop) birthNeedsQuota() bool { return l.conn.limits.MaximumQoS > 0 }

// fitLimits lowers QoS and clears retain to what this connection's broker
// supports, and reports whether it changed anything.
func (l *Loop) fitLimits(m *message.Message) bool {
	limits := l.conn.limits
	changed := false
	if m.QoS > limits.MaximumQoS {
		m.QoS = limits.MaximumQoS
		changed = true
	}
	if m.Retain && !limits.RetainAvailable {
		m.Retain = false
		changed = true
	}
	return changed
}
