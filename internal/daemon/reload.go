package daemon

import (
	"fmt"
	"log/slog"
	"net/url"
	"reflect"
	"strings"

	"github.com/mqspool/mqspool/internal/config"
)

// Reload applies the parts of cfg that can change while running: the log
// level, the throttle and the routes. The connection stays up. Keys that
// need a restart are compared with the running configuration and named
// in a warning when they differ. A throttle set with "mqspool ctl
// throttle" is replaced by the file's value. The outcome is logged to
// log, the daemon's logger with attributes that tell this reload from
// earlier ones, such as its number.
func (d *Daemon) Reload(cfg *config.Config, log *slog.Logger) {
	if level, err := config.ParseLevel(cfg.Log.Level); err == nil && d.level != nil {
		d.level.Set(level)
	}
	d.setThrottle(func(config.Rate) config.Rate { return fileThrottle(cfg) })
	if err := d.pickup.SetRoutes(pickupRoutes(cfg)); err != nil {
		log.Error("routes not reloaded, keeping the running ones", "err", err)
	}

	if keys := restartKeys(d.cfg, cfg); len(keys) > 0 {
		log.Warn("changed settings need a restart to apply", "keys", keys)
	}
	log.Info("configuration reloaded", "log_level", cfg.Log.Level, "routes", len(cfg.Routes),
		"throttle_messages_per_second", cfg.Throttle.MessagesPerSecond,
		"throttle_bytes_per_second", int64(cfg.Throttle.BytesPerSecond))
}

// restartKeys names the keys of next that differ from running and are
// not applied by Reload, such as broker.urls. A list, such as
// subscriptions, is named as a whole.
func restartKeys(running, next *config.Config) []string {
	sections := []struct {
		name string
		a, b any
	}{
		{"broker", running.Broker, next.Broker},
		{"reconnect", running.Reconnect, next.Reconnect},
		{"publish", running.Publish, next.Publish},
		{"spool", running.Spool, next.Spool},
		{"pickup", running.Pickup, next.Pickup},
		{"subscriptions", running.Subscriptions, next.Subscriptions},
		{"shutdown", running.Shutdown, next.Shutdown},
		{"control", running.Control, next.Control},
		{"metrics", running.Metrics, next.Metrics},
		{"status", running.Status, next.Status},
		{"log.format", running.Log.Format, next.Log.Format},
	}
	var keys []string
	for _, s := range sections {
		keys = append(keys, changedKeys(s.name, reflect.ValueOf(s.a), reflect.ValueOf(s.b))...)
	}
	return keys
}

// changedKeys returns the keys at or below key whose values differ
// between a and b, descending into structs. A list is compared whole.
func changedKeys(key string, a, b reflect.Value) []string {
	if a.Kind() != reflect.Struct {
		if reflect.DeepEqual(a.Interface(), b.Interface()) {
			return nil
		}
		return []string{key}
	}
	var keys []string
	for i := range a.NumField() {
		name := fieldKey(a.Type().Field(i))
		keys = append(keys, changedKeys(key+"."+name, a.Field(i), b.Field(i))...)
	}
	return keys
}

// fieldKey returns the config key of a field: its mapstructure tag, or
// its lower-case name for a field such as Broker.Password that is not
// read from the file.
func fieldKey(f reflect.StructField) string {
	if tag := f.Tag.Get("mapstructure"); tag != "" && tag != "-" {
		return tag
	}
	return strings.ToLower(f.Name)
}

// logEffectiveConfig logs the configuration in one line. The password is
// never logged, only whether one is set, and user information in broker
// URLs is masked.
func (d *Daemon) logEffectiveConfig() {
	c := d.cfg
	urls := make([]string, len(c.Broker.URLs))
	for i, raw := range c.Broker.URLs {
		urls[i] = redactURL(raw)
	}
	d.log.Info("effective configuration",
		slog.Group("broker",
			"urls", urls, "client_id", d.clientIDValue, "username", c.Broker.Username,
			"password_set", c.Broker.Password != "" || c.Broker.PasswordFile != "",
			"password_file", c.Broker.PasswordFile,
			"tls_ca_file", c.Broker.TLS.CAFile, "tls_cert_file", c.Broker.TLS.CertFile,
			"tls_server_name", c.Broker.TLS.ServerName, "tls_alpn", c.Broker.TLS.ALPN,
			"keep_alive", c.Broker.KeepAlive, "session_expiry", c.Broker.SessionExpiry,
			"receive_maximum", c.Broker.ReceiveMaximum),
		slog.Group("reconnect", "policy", c.Reconnect.Policy,
			"min_delay", c.Reconnect.MinDelay, "max_delay", c.Reconnect.MaxDelay),
		slog.Group("publish", "qos", c.Publish.QoS, "max_inflight", c.Publish.MaxInflight,
			"ack_timeout", c.Publish.AckTimeout, "topic_prefix", c.Publish.TopicPrefix,
			"default_topic", c.Publish.DefaultTopic),
		slog.Group("throttle", "messages_per_second", c.Throttle.MessagesPerSecond,
			"bytes_per_second", int64(c.Throttle.BytesPerSecond)),
		slog.Group("spool", "dir", c.Spool.Dir, "db", c.Spool.DB,
			"max_bytes", int64(c.Spool.MaxBytes), "max_messages", c.Spool.MaxMessages,
			"overflow", c.Spool.Overflow, "qos0_offline", c.Spool.QoS0Offline),
		"routes", len(c.Routes),
		"subscriptions", subscriptionFilters(c.Subscriptions),
		"drain_timeout", c.Shutdown.DrainTimeout,
		"control_socket", c.Control.Socket,
		"metrics_listen", c.Metrics.Listen,
		"status_topic", c.Status.Topic,
		"log_level", c.Log.Level)
}

// subscriptionFilters returns each subscription as "filter qos N -> dir",
// short enough for the one line of the effective configuration.
func subscriptionFilters(subs []config.Subscription) []string {
	out := make([]string, len(subs))
	for i, s := range subs {
		out[i] = fmt.Sprintf("%s qos %d -> %s", s.Filter, s.QoS, s.Dir)
	}
	return out
}

// redactURL masks the password in a URL's user information. A URL that
// does not parse is replaced as a whole, because it may contain one.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable url)"
	}
	return u.Redacted()
}
