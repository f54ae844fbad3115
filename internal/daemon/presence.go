package daemon

import (
	"context"
	"log/slog"
	"time"

	"github.com/mqspool/mqspool/internal/config"
	"github.com/mqspool/mqspool/internal/eventloop"
	"github.com/mqspool/mqspool/internal/message"
)

// offlineTimeout bounds the extra connection that publishes "offline" at
// a clean stop.
const offlineTimeout = 2 * time.Second

// publishOffline publishes the retained "offline" status after a clean
// stop. The event loop ends its connection with DISCONNECT reason 0x00,
// after which the broker discards the Last Will. So the status is sent on
// a short connection of its own, under a client id derived from the
// daemon's, which leaves the daemon's session alone.
//
// TODO: ending the main connection with DISCONNECT reason 0x04
// (disconnect with Will message) would let the broker publish the Will
// instead, without a second connection; the event loop has no option for
// that yet.
func (d *Daemon) publishOffline(hard context.Context) {
	if d.cfg.Status.Topic == "" {
		return
	}
	opts, err := offlineOptions(d.cfg, statusClientID(d.clientIDValue), d.log.With("component", "status"))
	if err != nil {
		d.log.Warn("offline status not published", "topic", d.cfg.Status.Topic, "err", err)
		return
	}

	m := message.Message{Topic: d.cfg.Status.Topic, Payload: []byte("offline"), QoS: 1, Retain: true}
	_, err = eventloop.PublishAll(hard, opts, []eventloop.Request{{Seq: 1, Message: m}}, offlineTimeout)
	if err != nil {
		d.log.Warn("offline status not published", "topic", d.cfg.Status.Topic, "err", err)
		return
	}
	d.log.Info("offline status published", "topic", d.cfg.Status.Topic)
}

// offlineOptions returns the options of the status connection. It only
// publishes, so it has no Birth, Will or subscriptions: a subscription
// there would take messages that nothing stores or acknowledges, such as
// the share of a $share group. Its session ends a second after it.
func offlineOptions(cfg *config.Config, clientID string, log *slog.Logger) (eventloop.Options, error) {
	opts, err := loopOptions(cfg, clientID, log)
	if err != nil {
		return opts, err
	}
	opts.Birth, opts.Will = nil, nil
	opts.Subscriptions, opts.SessionSubscriptions = nil, nil
	opts.Reconnect = eventloop.ReconnectNever
	opts.SessionExpiry = time.Second
	opts.Logger = log
	return opts, nil
}

// statusClientID derives the client id of the status connection: the
// daemon's id with "-off" appended, shortened to stay within the 23
// characters every MQTT 5 broker must accept.
func statusClientID(id string) string {
	const suffix, maxLen = "-off", 23
	if len(id)+len(suffix) > maxLen {
		id = id[:maxLen-len(suffix)]
	}
	return id + suffix
}
