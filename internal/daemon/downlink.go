package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mqspool/mqspool/internal/config"
	"github.com/mqspool/mqspool/internal/control"
	"github.com/mqspool/mqspool/internal/eventloop"
	"github.com/mqspool/mqspool/internal/inbox"
	"github.com/mqspool/mqspool/internal/spool"
)

// downlink writes the publishes of the configured subscriptions into
// their inboxes. Its observe runs on the goroutine that polls the event
// loop and only hands messages to the inboxes' workers, so a slow disk
// never delays keep alive.
type downlink struct {
	log     *slog.Logger
	spool   *spool.Spool
	subs    []eventloop.Subscription // the configured list, Identifier i+1
	inboxes []*inbox.Inbox           // inboxes[i] belongs to subs[i]
}

// newDownlink opens the inboxes of cfg.Subscriptions. An inbox that
// cannot be created yet is logged and retried by its worker, so it holds
// only its own subscription's messages and not the whole daemon. An inbox
// directory that another process has locked is an error.
func newDownlink(cfg *config.Config, sp *spool.Spool, log *slog.Logger) (*downlink, error) {
	dl := &downlink{log: log.With("component", "downlink"), spool: sp, subs: loopSubscriptions(cfg.Subscriptions)}
	for _, s := range cfg.Subscriptions {
		in, err := inbox.Open(inbox.Options{
			Dir:       s.Dir,
			Filter:    s.Filter,
			MaxFiles:  s.MaxFiles,
			MaxBytes:  int64(s.MaxBytes),
			QueueSize: 2*cfg.Broker.ReceiveMaximum + 64,
			Logger:    dl.log,
		})
		if err != nil {
			dl.close()
			return nil, fmt.Errorf("subscription %q: %w", s.Filter, err)
		}
		if st := in.Stats(); st.WriteError == "" {
			dl.log.Info("inbox opened", "filter", s.Filter, "dir", s.Dir, "qos", s.QoS,
				"backlog_files", st.BacklogFiles, "max_files", s.MaxFiles, "max_bytes", int64(s.MaxBytes))
		} else {
			dl.log.Warn("inbox not usable yet, acknowledgements held until it is", "filter", s.Filter,
				"dir", s.Dir, "err", st.WriteError)
		}
		dl.inboxes = append(dl.inboxes, in)
	}
	return dl, nil
}

// close releases the inboxes' directory locks.
func (dl *downlink) close() {
	for _, in := range dl.inboxes {
		if err := in.Close(); err != nil {
			dl.log.Warn("release inbox lock", "dir", in.Dir(), "err", err)
		}
	}
}

// loopSubscriptions converts the configured subscriptions for the event
// loop. Identifier i+1 lets the broker name the subscription a PUBLISH
// matched, so overlapping filters still reach the right inbox.
func loopSubscriptions(subs []config.Subscription) []eventloop.Subscription {
	out := make([]eventloop.Subscription, 0, len(subs))
	for i, s := range subs {
		out = append(out, eventloop.Subscription{
			Filter:            s.Filter,
			QoS:               byte(s.QoS),
			NoLocal:           s.NoLocal,
			RetainAsPublished: s.RetainAsPublished,
			RetainHandling:    byte(s.RetainHandling),
			Identifier:        i + 1,
		})
	}
	return out
}

// sessionSubscriptions reads the subscriptions the broker session held
// when the daemon last learned them. An unreadable record returns nil,
// which subscribes everything again on a resumed session.
func (dl *downlink) sessionSubscriptions() []eventloop.Subscription {
	data, err := dl.spool.SessionSubscriptions()
	if err != nil || len(data) == 0 {
		return nil
	}
	var subs []eventloop.Subscription
	if err := json.Unmarshal(data, &subs); err != nil {
		dl.log.Warn("stored session subscriptions unreadable, subscribing again", "err", err)
		return nil
	}
	return subs
}

// start runs the inboxes' workers and returns the function that stops
// them and waits. Messages still queued then are not acknowledged, so the
// broker sends them again.
func (dl *downlink) start() (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, in := range dl.inboxes {
		wg.Go(func() { in.Run(ctx) })
	}
	return func() {
		cancel()
		wg.Wait()
		dl.close()
	}
}

// stopWaiting makes each inbox decline the messages that wait for room
// or for a usable directory, so that the drain does not wait for a
// consumer. The broker sends them again after the restart.
func (dl *downlink) stopWaiting() {
	for _, in := range dl.inboxes {
		in.StopWaiting()
	}
}

// heldSummary returns, for the systemd status line, how many inboxes hold
// their acknowledgements because they are full or cannot be written, or
// "" when none does.
func (dl *downlink) heldSummary() string {
	full, unusable := 0, 0
	for _, in := range dl.inboxes {
		st := in.Stats()
		switch {
		case st.WriteError != "":
			unusable++
		case st.Full:
			full++
		}
	}
	var parts []string
	if full > 0 {
		parts = append(parts, fmt.Sprintf("%d %s full", full, plural(full, "inbox", "inboxes")))
	}
	if unusable > 0 {
		parts = append(parts, fmt.Sprintf("%d %s unusable", unusable, plural(unusable, "inbox", "inboxes")))
	}
	if len(parts) == 0 {
		return ""
	}
	return strings.Join(parts, ", ") + ", acknowledgements held"
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// observe handles the events that concern the downlink.
func (dl *downlink) observe(ev eventloop.Event) {
	switch ev.Kind {
	case eventloop.EventIncoming:
		dl.deliver(ev.Incoming)
	case eventloop.EventSubscribed:
		dl.saveSession(ev.Subscribed)
	}
}

// deliver hands one PUBLISH to the inbox of each subscription it
// matched. With several inboxes, the acknowledgement waits for all of
// them (see sharedAck).
func (dl *downlink) deliver(m *eventloop.Incoming) {
	targets := dl.route(m)
	if len(targets) == 0 {
		// TODO: a PUBLISH that matches no configured filter (a
		// subscription removed while the UNSUBSCRIBE was pending) is
		// acknowledged without being stored.
		dl.log.Warn("incoming publish matches no subscription, acknowledged without storing", "topic", m.Message.Topic)
		m.Release()
		return
	}
	var ack *sharedAck
	if len(targets) > 1 {
		ack = newSharedAck(len(targets), m.Release, m.Decline)
	}
	receivedAt := time.Now()
	for _, target := range targets {
		d := inbox.Delivery{
			Message:                m.Message,
			PacketID:               m.PacketID,
			Dup:                    m.Dup,
			SubscriptionIdentifier: target.identifier,
			ReceivedAt:             receivedAt,
			Release:                m.Release,
			Decline:                m.Decline,
			Redelivered:            m.Redelivered,
		}
		if ack != nil {
			d.Release, d.Decline = ack.part()
			d.DeclinedElsewhere = ack.declined
		}
		dl.inboxes[target.index].Enqueue(d)
	}
}

// routeTarget is one inbox that a PUBLISH goes to.
type routeTarget struct {
	index      int // into subs and inboxes
	identifier int // the Subscription Identifier to record; 0 for none
}

// route returns the subscriptions that m goes to: each one whose
// Subscription Identifier the broker sent, else the first subscription
// whose filter matches the topic. It returns none when no filter matches.
// An identifier whose filter does not match the topic is ignored: it can
// be left over from a list in another order, before the broker's session
// was brought up to date.
func (dl *downlink) route(m *eventloop.Incoming) []routeTarget {
	var targets []routeTarget
	for _, id := range m.SubscriptionIdentifiers {
		if id < 1 || id > len(dl.subs) || !inbox.Match(dl.subs[id-1].Filter, m.Message.Topic) {
			continue
		}
		target := routeTarget{index: id - 1, identifier: id}
		if !slices.Contains(targets, target) {
			targets = append(targets, target)
		}
	}
	if len(targets) > 0 {
		return targets
	}
	for i, s := range dl.subs {
		if inbox.Match(s.Filter, m.Message.Topic) {
			return []routeTarget{{index: i}}
		}
	}
	return nil
}

// saveSession stores the broker session's subscriptions, so that a
// resumed session is sent only what changed. This bbolt commit runs on
// the polling goroutine, once per connection that subscribed.
func (dl *downlink) saveSession(s *eventloop.Subscribed) {
	data, err := json.Marshal(s.Session)
	if err == nil {
		err = dl.spool.SaveSessionSubscriptions(data)
	}
	if err != nil {
		dl.log.Error("session subscriptions not stored; the next resumed session sends the changes again", "err", err)
	}
}

// status returns one entry per subscription for the control socket.
func (dl *downlink) status(rejected []eventloop.SubscriptionError) []control.SubscriptionStatus {
	out := make([]control.SubscriptionStatus, 0, len(dl.inboxes))
	for i, in := range dl.inboxes {
		st := in.Stats()
		entry := control.SubscriptionStatus{
			Filter:       dl.subs[i].Filter,
			Dir:          in.Dir(),
			Received:     st.Received,
			Duplicates:   st.Duplicates,
			Dropped:      st.Dropped,
			Failed:       st.Failed,
			BacklogFiles: st.BacklogFiles,
			BacklogBytes: st.BacklogBytes,
			BacklogStale: st.BacklogStale,
			Full:         st.Full,
			Error:        st.WriteError,
			Skipped:      st.Skipped,
		}
		for _, r := range rejected {
			if r.Filter == entry.Filter {
				entry.Rejected = r.Reason
			}
		}
		out = append(out, entry)
	}
	return out
}
