package eventloop

import (
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
	if len(remove) > 0 {
		l.sendSubRequest(subRequest{unsubscribe: remove})
	}

	// The Subscription Identifier belongs to the whole SUBSCRIBE, so each
	// subscription with one goes alone; the rest share a packet.
	var plain []Subscription
	for _, s := range add {
		if s.Identifier == 0 {
			plain = append(plain, s)
			continue
		}
		l.sendSubRequest(subRequest{subscribe: []Subscription{s}})
	}
	if len(plain) > 0 {
		l.sendSubRequest(subRequest{subscribe: plain})
	}
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
