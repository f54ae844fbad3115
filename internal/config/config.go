// Package config loads mqspool's configuration from a YAML file, MQSPOOL_*
// environment variables and command-line flags, in rising precedence, and
// validates it. It is the only package that imports viper: everything else
// takes the typed [Config].
package config

import (
	"time"
)

// DefaultControlSocket is control.socket's default.
const DefaultControlSocket = "/run/mqspool/mqspool.sock"

// DefaultFile is read when no --config flag is given. A missing default
// file is not an error: the defaults and the environment then apply.
const DefaultFile = "/etc/mqspool/mqspool.yaml"

// Config is the effective configuration of the daemon and the commands.
type Config struct {
	Broker        Broker         `mapstructure:"broker"`
	Reconnect     Reconnect      `mapstructure:"reconnect"`
	Publish       Publish        `mapstructure:"publish"`
	Throttle      Throttle       `mapstructure:"throttle"`
	Spool         Spool          `mapstructure:"spool"`
	Pickup        Pickup         `mapstructure:"pickup"`
	Routes        []Route        `mapstructure:"routes"`
	Subscriptions []Subscription `mapstructure:"subscriptions"`
	Shutdown      Shutdown       `mapstructure:"shutdown"`
	Control       Control        `mapstructure:"control"`
	Metrics       Metrics        `mapstructure:"metrics"`
	Status        Status         `mapstructure:"status"`
	Log           Log            `mapstructure:"log"`
}

// Broker is the upstream connection.
type Broker struct {
	URLs     []string `mapstructure:"urls"`
	ClientID string   `mapstructure:"client_id"`
	Username string   `mapstructure:"username"`
	// PasswordFile is read again on every connect.
	PasswordFile string `mapstructure:"password_file"`
	// Password comes only from MQSPOOL_BROKER_PASSWORD, never from the
	// file or a flag, and is never printed.
	Password       string        `mapstructure:"-"`
	TLS            TLS           `mapstructure:"tls"`
	KeepAlive      time.Duration `mapstructure:"keep_alive"`
	ConnectTimeout time.Duration `mapstructure:"connect_timeout"`
	SessionExpiry  time.Duration `mapstructure:"session_expiry"`
	ReceiveMaximum int           `mapstructure:"receive_maximum"`
}

// TLS holds the files for mqtts:// connections, read on every connect.
type TLS struct {
	CAFile     string   `mapstructure:"ca_file"`
	CertFile   string   `mapstructure:"cert_file"`
	KeyFile    string   `mapstructure:"key_file"`
	ServerName string   `mapstructure:"server_name"`
	ALPN       []string `mapstructure:"alpn"`
}

// Reconnect is the reconnect policy and its backoff bounds.
type Reconnect struct {
	Policy   string        `mapstructure:"policy"`
	MinDelay time.Duration `mapstructure:"min_delay"`
	MaxDelay time.Duration `mapstructure:"max_delay"`
}

// Publish holds the defaults and limits for outgoing messages.
type Publish struct {
	QoS               int           `mapstructure:"qos"`
	Retain            bool          `mapstructure:"retain"`
	DefaultTopic      string        `mapstructure:"default_topic"`
	TopicPrefix       string        `mapstructure:"topic_prefix"`
	MaxInflight       int           `mapstructure:"max_inflight"`
	AckTimeout        time.Duration `mapstructure:"ack_timeout"`
	MaxMessageBytes   ByteSize      `mapstructure:"max_message_bytes"`
	OnBrokerLimit     string        `mapstructure:"on_broker_limit"`
	MessageIDProperty string        `mapstructure:"message_id_property"`
	// IngestTimeProperty names a user property that carries the time the
	// message was taken from the spool directory; empty turns it off.
	IngestTimeProperty string `mapstructure:"ingest_time_property"`
}

// Throttle limits the publish rate; zero is unlimited.
type Throttle struct {
	MessagesPerSecond float64  `mapstructure:"messages_per_second"`
	BytesPerSecond    ByteSize `mapstructure:"bytes_per_second"`
}

// Spool is the spool directory and the bbolt database.
type Spool struct {
	Dir          string   `mapstructure:"dir"`
	DB           string   `mapstructure:"db"`
	MaxBytes     ByteSize `mapstructure:"max_bytes"`
	MaxMessages  int64    `mapstructure:"max_messages"`
	Overflow     string   `mapstructure:"overflow"`
	QoS0Offline  string   `mapstructure:"qos0_offline"`
	MinFreeBytes ByteSize `mapstructure:"min_free_bytes"`
	// FailedWarnBytes is the size of failed/ above which a warning is
	// logged and shown in the status; 0 turns it off.
	FailedWarnBytes ByteSize `mapstructure:"failed_warn_bytes"`
}

// Pickup controls how files are taken from new/.
type Pickup struct {
	Settle         time.Duration `mapstructure:"settle"`
	RescanInterval time.Duration `mapstructure:"rescan_interval"`
}

// Route sets topic, QoS and retain for files whose path under new/ matches
// a glob. The first matching route applies.
type Route struct {
	Match       string `mapstructure:"match"`
	Topic       string `mapstructure:"topic"`
	QoS         *int   `mapstructure:"qos"`
	Retain      *bool  `mapstructure:"retain"`
	AllowDollar bool   `mapstructure:"allow_dollar"`
}

// Subscription is one downlink subscription written into an inbox.
type Subscription struct {
	Filter            string `mapstructure:"filter"`
	QoS               int    `mapstructure:"qos"`
	Dir               string `mapstructure:"dir"`
	NoLocal           bool   `mapstructure:"no_local"`
	RetainAsPublished bool   `mapstructure:"retain_as_published"`
	RetainHandling    int    `mapstructure:"retain_handling"`
	// MaxFiles and MaxBytes bound the backlog in the inbox's new/; 0 is
	// unlimited. At the bound acknowledgements are held and QoS 0
	// messages dropped. Absent keys take DefaultInboxMaxFiles and
	// DefaultInboxMaxBytes.
	MaxFiles int      `mapstructure:"max_files"`
	MaxBytes ByteSize `mapstructure:"max_bytes"`
}

// Shutdown bounds the drain on SIGTERM.
type Shutdown struct {
	DrainTimeout time.Duration `mapstructure:"drain_timeout"`
}

// Control is the unix socket for status and ctl.
type Control struct {
	Socket string `mapstructure:"socket"`
}

// Metrics is the Prometheus listener.
type Metrics struct {
	Listen string `mapstructure:"listen"`
}

// Status is the retained presence topic.
type Status struct {
	Topic string `mapstructure:"topic"`
}

// Log selects the slog handler.
type Log struct {
	Level  string `mapstructure:"level"`
	Format string `mapstructure:"format"`
}

// defaults lists every scalar key with its default. It is the one place
// defaults live; registering every key also lets viper map the matching
// MQSPOOL_* variable onto it.
var defaults = map[string]any{
	"broker.urls":                  []string{},
	"broker.client_id":             "",
	"broker.username":              "",
	"broker.password_file":         "",
	"broker.tls.ca_file":           "",
	"broker.tls.cert_file":         "",
	"broker.tls.key_file":          "",
	"broker.tls.server_name":       "",
	"broker.tls.alpn":              []string{},
	"broker.keep_alive":            "30s",
	"broker.connect_timeout":       "10s",
	"broker.session_expiry":        "24h",
	"broker.receive_maximum":       64,
	"reconnect.policy":             "always",
	"reconnect.min_delay":          "500ms",
	"reconnect.max_delay":          "30s",
	"publish.qos":                  1,
	"publish.retain":               false,
	"publish.default_topic":        "",
	"publish.topic_prefix":         "",
	"publish.max_inflight":         1000,
	"publish.ack_timeout":          "30s",
	"publish.max_message_bytes":    "1MiB",
	"publish.on_broker_limit":      "downgrade",
	"publish.message_id_property":  "",
	"publish.ingest_time_property": "",
	"throttle.messages_per_second": 0,
	"throttle.bytes_per_second":    "0",
	"spool.dir":                    "/var/spool/mqspool",
	"spool.db":                     "/var/lib/mqspool/spool.db",
	"spool.max_bytes":              "1GiB",
	"spool.max_messages":           0,
	"spool.overflow":               "reject",
	"spool.qos0_offline":           "keep",
	"spool.min_free_bytes":         "64MiB",
	"spool.failed_warn_bytes":      "100MiB",
	"pickup.settle":                "2s",
	"pickup.rescan_interval":       "30s",
	"shutdown.drain_timeout":       "5s",
	"control.socket":               DefaultControlSocket,
	"metrics.listen":               "",
	"status.topic":                 "",
	"log.level":                    "info",
	"log.format":                   "text",
}

// Keys returns every scalar key in a stable order, for config print.
func Keys() []string {
	keys := make([]string, 0, len(defaults))
	for k := range defaults {
		keys = append(keys, k)
	}
	sortKeys(keys)
	return keys
}
