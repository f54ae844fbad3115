package eventloop

import (
	"fmt"
	"slices"
)

// maxSubscriptionIdentifier is the largest Subscription Identifier MQTT 5
// allows (a variable byte integer of at most four bytes).
const maxSubscriptionIdentifier = 268435455

// subRequest is a SUBSCRIBE or UNSUBSCRIBE waiting for its ack.
type subRequest struct {
	subscribe   []Subscription
	unsubscribe []string
}

// syncSubscriptions brings the broker's session to the configured
// subscriptions. Without session present everything is subscribed; with
// it, only what changed since the session's last known list. A broker
// without Subscription Identifiers gets none.
func (l *Loop) syncSubscriptions(sessionPresent, identifiers bool) {
	if !sessionPresent {
		l.subSession = nil
	}
	want := slices.Clone(l.opts.Subscriptions)
	if !identifiers {
		for i := range want {
			want[i].Identifier = 0
		}
	}
	add, remove := diffSubscriptions(l.subSession, want)
	l.subRejected = nil
	l.sendUnsubscribes(remove)
	l.sendSubscribes(add)
	if len(l.subIDs) == 0 && len(l.subRejected) > 0 && l.conn != nil {
		// Every subscription left to send was too large, so no SUBACK
		// will report the rejections.
		l.subscriptionsSettled()
	}
}

// sendSubscribes writes SUBSCRIBE packets for subs, each within the
// broker's Maximum Packet Size. The Subscription Identifier belongs to
// the whole SUBSCRIBE, so each subscription with one goes alone, and the
// rest share as few packets as fit. A failed write ends the connection,
// and the packets after it are not sent.
func (l *Loop) sendSubscribes(subs []Subscription) {
	c := l.conn
	if c == nil {
		return
	}
	limit := c.packetLimit()
	tooLarge := func(s Subscription, size int) { l.subscribeTooLarge(c, s, size) }
	var batches [][]Subscription
	var plain []Subscription
	for _, s := range subs {
		if s.Identifier == 0 {
			plain = append(plain, s)
			continue
		}
		header := subscribeHeaderBytes(s.Identifier)
		batches = append(batches, splitToFit([]Subscription{s}, header, subscribeEntryBytes, limit, tooLarge)...)
	}
	batches = append(batches, splitToFit(plain, subscribeHeaderBytes(0), subscribeEntryBytes, limit, tooLarge)...)
	for _, batch := range batches {
		if l.conn != c {
			return
		}
		l.sendSubRequest(subRequest{subscribe: batch})
	}
}

// sendUnsubscribes writes UNSUBSCRIBE packets for filters, each within
// the broker's Maximum Packet Size. A failed write ends the connection,
// and the packets after it are not sent.
func (l *Loop) sendUnsubscribes(filters []string) {
	c := l.conn
	if c == nil {
		return
	}
	tooLarge := func(filter string, size int) { l.unsubscribeTooLarge(c, filter, size) }
	for _, batch := range splitToFit(filters, unsubscribeHeaderBytes, unsubscribeEntryBytes, c.packetLimit(), tooLarge) {
		if l.conn != c {
			return
		}
		l.sendSubRequest(subRequest{unsubscribe: batch})
	}
}

// subscribeTooLarge logs and reports a subscription whose SUBSCRIBE
// packet of size bytes exceeds the Maximum Packet Size of c's broker even
// alone. It is not sent, like a subscription the broker rejects, and the
// next connection tries it again.
func (l *Loop) subscribeTooLarge(c *connection, s Subscription, size int) {
	limit := c.limits.MaximumPacketSize
	l.log.Error("subscription not sent, because its SUBSCRIBE packet exceeds the broker's Maximum Packet Size: "+
		"shorten the filter or raise the broker's limit", "url", c.url, "filter", s.Filter, "bytes", size,
		"maximum_packet_size", limit)
	reason := fmt.Sprintf("SUBSCRIBE packet of %d bytes exceeds the broker's Maximum Packet Size of %d bytes, "+
		"so it was not sent", size, limit)
	l.subRejected = append(l.subRejected, SubscriptionError{Filter: s.Filter, Reason: reason})
}

// unsubscribeTooLarge logs a filter whose UNSUBSCRIBE packet of size
// bytes exceeds the Maximum Packet Size of c's broker even alone. The
// filter stays in the session, as after a rejected UNSUBSCRIBE, so the
// next connection tries again.
func (l *Loop) unsubscribeTooLarge(c *connection, filter string, size int) {
	l.log.Warn("unsubscribe not sent, because its UNSUBSCRIBE packet exceeds the broker's Maximum Packet Size, "+
		"so the broker keeps sending messages for the filter", "url", c.url, "filter", filter, "bytes", size,
		"maximum_packet_size", c.limits.MaximumPacketSize)
}

// diffSubscriptions returns the entries of want that have is missing or
// holds with other options, and the filters of have that want lacks.
func diffSubscriptions(have, want []Subscription) (add []Subscription, remove []string) {
	for _, w := range want {
		i := slices.IndexFunc(have, func(h Subscription) bool { return h.Filter == w.Filter })
		if i < 0 || have[i] != w {
			add = append(add, w)
		}
	}
	for _, h := range have {
		if !slices.ContainsFunc(want, func(w Subscription) bool { return w.Filter == h.Filter }) {
			remove = append(remove, h.Filter)
		}
	}
	return add, remove
}

// sendSubRequest writes one SUBSCRIBE or UNSUBSCRIBE.
func (l *Loop) sendSubRequest(r subRequest) {
	id, err := l.allocate()
	if err != nil {
		l.log.Error("subscribe skipped", "err", err)
		return
	}
	l.subIDs[id] = r
	if len(r.unsubscribe) > 0 {
		l.log.Info("unsubscribing", "filters", r.unsubscribe)
		l.writePacket(&unsubscribePacket{PacketID: id, Filters: r.unsubscribe})
		return
	}
	p := &subscribePacket{PacketID: id, Subscriptions: r.subscribe}
	if len(r.subscribe) == 1 {
		p.Identifier = r.subscribe[0].Identifier
	}
	l.writePacket(p)
}

// onSuback records the accepted subscriptions and logs the refused ones.
func (l *Loop) onSuback(p *subackPacket) {
	r, ok := l.subIDs[p.PacketID]
	if !ok {
		return
	}
	delete(l.subIDs, p.PacketID)
	for i, s := range r.subscribe {
		code := byte(0x80)
		if i < len(p.ReasonCodes) {
			code = p.ReasonCodes[i]
		}
		if code >= 0x80 {
			reason := reasonName(code, "suback")
			l.log.Error("subscription rejected", "filter", s.Filter, "reason", reason)
			l.subRejected = append(l.subRejected, SubscriptionError{Filter: s.Filter, Reason: reason})
			continue
		}
		l.log.Info("subscribed", "filter", s.Filter, "granted_qos", code, "identifier", s.Identifier)
		l.forgetSubscription(s.Filter)
		l.subSession = append(l.subSession, s)
	}
	l.subscriptionsSettled()
}

// onUnsuback drops the filters the broker removed. A refused
// UNSUBSCRIBE leaves the filter known, so the next connection tries again.
func (l *Loop) onUnsuback(p *unsubackPacket) {
	r, ok := l.subIDs[p.PacketID]
	if !ok {
		return
	}
	delete(l.subIDs, p.PacketID)
	for i, filter := range r.unsubscribe {
		if i < len(p.ReasonCodes) && p.ReasonCodes[i] >= 0x80 {
			l.log.Warn("unsubscribe rejected", "filter", filter, "reason", reasonName(p.ReasonCodes[i], "unsuback"))
			continue
		}
		l.forgetSubscription(filter)
	}
	l.subscriptionsSettled()
}

func (l *Loop) forgetSubscription(filter string) {
	l.subSession = slices.DeleteFunc(l.subSession, func(s Subscription) bool { return s.Filter == filter })
}

// subscriptionsSettled reports the session's subscriptions once no
// SUBSCRIBE or UNSUBSCRIBE waits for its ack.
func (l *Loop) subscriptionsSettled() {
	if len(l.subIDs) > 0 {
		return
	}
	rejected := slices.Clone(l.subRejected)
	l.stats.update(func(s *Stats) { s.RejectedSubscriptions = rejected })
	l.emit(Event{Kind: EventSubscribed, Subscribed: &Subscribed{
		Session:  slices.Clone(l.subSession),
		Rejected: slices.Clone(rejected),
	}})
}

// splitToFit splits items, in order, into batches whose packet of header
// bytes plus the bytes of each item is at most limit bytes. An item whose
// packet exceeds limit even alone is left out and passed to tooLarge with
// the size of that packet. Sizes count the whole packet, fixed header
// included, as Maximum Packet Size does.
func splitToFit[T any](items []T, header int, itemBytes func(T) int, limit int, tooLarge func(T, int)) [][]T {
	var batches [][]T
	var batch []T
	remaining := header
	for _, item := range items {
		n := itemBytes(item)
		if alone := packetBytes(header + n); alone > limit {
			tooLarge(item, alone)
			continue
		}
		if len(batch) > 0 && packetBytes(remaining+n) > limit {
			batches = append(batches, batch)
			batch, remaining = nil, header
		}
		batch = append(batch, item)
		remaining += n
	}
	if len(batch) > 0 {
		batches = append(batches, batch)
	}
	return batches
}

// packetBytes returns the size of a packet whose Remaining Length is
// remaining: the type byte, the Remaining Length itself and what follows.
func packetBytes(remaining int) int {
	return 1 + variableByteIntegerLength(remaining) + remaining
}

// subscribeHeaderBytes returns the variable header length of a SUBSCRIBE:
// the packet identifier and the properties with their length, which hold
// the Subscription Identifier unless identifier is 0. This and the other
// sizes below are those of the MQTT 5 codec, and
// TestSubscribePacketBytes_MatchesCodec compares them with its output.
func subscribeHeaderBytes(identifier int) int {
	properties := 0
	if identifier > 0 {
		properties = 1 + variableByteIntegerLength(identifier)
	}
	return 2 + variableByteIntegerLength(properties) + properties
}

// subscribeEntryBytes returns the bytes s adds to a SUBSCRIBE payload:
// the filter with its length prefix and the subscription options byte.
func subscribeEntryBytes(s Subscription) int { return 2 + len(s.Filter) + 1 }

// unsubscribeHeaderBytes is the variable header length of an UNSUBSCRIBE:
// the packet identifier and a property length of 0.
const unsubscribeHeaderBytes = 2 + 1

// unsubscribeEntryBytes returns the bytes filter adds to an UNSUBSCRIBE
// payload: the filter with its length prefix.
func unsubscribeEntryBytes(filter string) int { return 2 + len(filter) }
