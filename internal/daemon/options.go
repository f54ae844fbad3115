package daemon

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/mqspool/mqspool/internal/config"
	"github.com/mqspool/mqspool/internal/eventloop"
	"github.com/mqspool/mqspool/internal/message"
	"github.com/mqspool/mqspool/internal/pickup"
	"github.com/mqspool/mqspool/internal/spool"
)

func spoolOptions(cfg *config.Config, log *slog.Logger, quarantine spool.QuarantineFunc,
	onDrop func(seq uint64), onRoomFreed func()) spool.Options {
	overflow := spool.OverflowReject
	if cfg.Spool.Overflow == "drop-oldest" {
		overflow = spool.OverflowDropOldest
	}
	return spool.Options{
		Path:        cfg.Spool.DB,
		LockTimeout: lockTimeout,
		MaxBytes:    int64(cfg.Spool.MaxBytes),
		MaxMessages: cfg.Spool.MaxMessages,
		Overflow:    overflow,
		Logger:      log.With("component", "spool"),
		Quarantine:  quarantine,
		OnDrop:      onDrop,
		OnRoomFreed: onRoomFreed,
	}
}

// pickupRoutes converts the configured routes to the pickup's type.
func pickupRoutes(cfg *config.Config) []pickup.Route {
	routes := make([]pickup.Route, 0, len(cfg.Routes))
	for _, r := range cfg.Routes {
		route := pickup.Route{Match: r.Match, Topic: r.Topic, Retain: r.Retain, AllowDollar: r.AllowDollar}
		if r.QoS != nil {
			q := byte(*r.QoS)
			route.QoS = &q
		}
		routes = append(routes, route)
	}
	return routes
}

// pickupOptions returns the pickup's options for cfg. It fails on a
// negative spool.min_free_bytes, which validation rejects first.
func pickupOptions(cfg *config.Config, log *slog.Logger) (pickup.Options, error) {
	minFree, err := unsignedSize("spool.min_free_bytes", cfg.Spool.MinFreeBytes)
	if err != nil {
		return pickup.Options{}, err
	}
	routes := pickupRoutes(cfg)
	return pickup.Options{
		Dir:                cfg.Spool.Dir,
		Settle:             cfg.Pickup.Settle,
		RescanInterval:     cfg.Pickup.RescanInterval,
		DefaultTopic:       cfg.Publish.DefaultTopic,
		TopicPrefix:        cfg.Publish.TopicPrefix,
		DefaultQoS:         byte(cfg.Publish.QoS),
		DefaultRetain:      cfg.Publish.Retain,
		Routes:             routes,
		MaxMessageBytes:    int(cfg.Publish.MaxMessageBytes),
		MessageIDProperty:  cfg.Publish.MessageIDProperty,
		IngestTimeProperty: cfg.Publish.IngestTimeProperty,
		MinFreeBytes:       minFree,
		FailedWarnBytes:    int64(cfg.Spool.FailedWarnBytes),
		FreeSpacePath:      filepath.Dir(cfg.Spool.DB),
		Logger:             log.With("component", "pickup"),
	}, nil
}

// unsignedSize converts the size set by key to an unsigned number. A
// negative size would become one close to the largest uint64, so it is an
// error instead.
func unsignedSize(key string, size config.ByteSize) (uint64, error) {
	if size < 0 {
		return 0, fmt.Errorf("%s: %s is negative: use 0 or a positive size", key, size)
	}
	return uint64(size), nil
}

func loopOptions(cfg *config.Config, clientID string, log *slog.Logger) (eventloop.Options, error) {
	b := &cfg.Broker
	opts := eventloop.Options{
		URLs:              b.URLs,
		ClientID:          clientID,
		Username:          b.Username,
		Password:          passwordFunc(b),
		KeepAlive:         b.KeepAlive,
		KeepAliveOff:      b.KeepAlive == 0,
		ConnectTimeout:    b.ConnectTimeout,
		SessionExpiry:     b.SessionExpiry,
		ReceiveMaximum:    uint16(b.ReceiveMaximum),
		MinDelay:          cfg.Reconnect.MinDelay,
		MaxDelay:          cfg.Reconnect.MaxDelay,
		MaxInflight:       cfg.Publish.MaxInflight,
		AckTimeout:        cfg.Publish.AckTimeout,
		MessagesPerSecond: cfg.Throttle.MessagesPerSecond,
		BytesPerSecond:    float64(cfg.Throttle.BytesPerSecond),
		DropQoS0Offline:   cfg.Spool.QoS0Offline == "drop",
		Logger:            log.With("component", "eventloop"),
	}
	if usesTLS(b.URLs) || b.TLS.CAFile != "" || b.TLS.CertFile != "" {
		opts.TLSConfig = tlsConfigFunc(b.TLS)
	}

	switch cfg.Reconnect.Policy {
	case "after-first-success":
		opts.Reconnect = eventloop.ReconnectAfterFirstSuccess
	case "never":
		opts.Reconnect = eventloop.ReconnectNever
	default:
		opts.Reconnect = eventloop.ReconnectAlways
	}
	if cfg.Publish.OnBrokerLimit == "reject" {
		opts.OnBrokerLimit = eventloop.LimitReject
	}

	if cfg.Status.Topic != "" {
		opts.Birth = &message.Message{Topic: cfg.Status.Topic, Payload: []byte("online"), QoS: 1, Retain: true}
		opts.Will = &message.Message{Topic: cfg.Status.Topic, Payload: []byte("offline"), QoS: 1, Retain: true}
	}
	opts.Subscriptions = loopSubscriptions(cfg.Subscriptions)
	return opts, nil
}

func usesTLS(urls []string) bool {
	for _, u := range urls {
		if strings.HasPrefix(u, "mqtts://") || strings.HasPrefix(u, "ssl://") {
			return true
		}
	}
	return false
}

// passwordFunc reads the password file on every connect, so a rotated
// password needs no restart.
func passwordFunc(b *config.Broker) func() ([]byte, error) {
	switch {
	case b.Password != "":
		pw := []byte(b.Password)
		return func() ([]byte, error) { return pw, nil }
	case b.PasswordFile != "":
		file := b.PasswordFile
		return func() ([]byte, error) {
			data, err := os.ReadFile(file)
			if err != nil {
				return nil, fmt.Errorf("read broker.password_file %s: %w", file, err)
			}
			return []byte(strings.TrimRight(string(data), "\r\n")), nil
		}
	default:
		return nil
	}
}

// deriveClientID makes a stable client id of at most 23 characters from
// /etc/machine-id and the absolute path of the spool database. A
// reinstall on the same device keeps its broker session name, and two
// daemons on one host with their own databases do not take over each
// other's session.
func deriveClientID(dbPath string) (string, error) {
	data, err := os.ReadFile("/etc/machine-id")
	if err != nil || len(strings.TrimSpace(string(data))) == 0 {
		host, herr := os.Hostname()
		if herr != nil {
			return "", errors.Join(err, herr)
		}
		data = []byte(host)
	}
	if abs, err := filepath.Abs(dbPath); err == nil {
		dbPath = abs
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(string(data)) + "\n" + dbPath))
	return "mqspool-" + hex.EncodeToString(sum[:])[:15], nil
}

// spoolSource adapts the spool's cursor to the event loop's Source.
type spoolSource struct {
	cursor *spool.Cursor
}

func (s *spoolSource) Next() (eventloop.Request, bool, error) {
	r, ok, err := s.cursor.Next()
	if !ok || err != nil {
		return eventloop.Request{}, ok, err
	}
	return toRequest(r), true, nil
}

func (s *spoolSource) Ready() <-chan struct{} { return s.cursor.Ready() }

// Recycle hands a payload the event loop has encoded back to the cursor.
func (s *spoolSource) Recycle(payload []byte) { s.cursor.Recycle(payload) }

func (s *spoolSource) Load(seq uint64) (eventloop.Request, error) {
	r, err := s.cursor.Load(seq)
	if err != nil {
		return eventloop.Request{}, err
	}
	return toRequest(r), nil
}

func toRequest(r spool.Record) eventloop.Request {
	return eventloop.Request{Seq: r.Seq, Message: r.Message, Enqueued: r.Enqueued}
}
