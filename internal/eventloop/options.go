package eventloop

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/url"
	"time"
)

// Defaults applied by [New] to zero fields of [Options].
const (
	DefaultKeepAlive      = 30 * time.Second
	DefaultConnectTimeout = 10 * time.Second
	DefaultSessionExpiry  = 24 * time.Hour
	DefaultReceiveMaximum = 64
	// DefaultMaxIncoming and DefaultMaxIncomingBytes are the defaults of
	// Options.MaxIncoming and MaxIncomingBytes.
	DefaultMaxIncoming      = 1024
	DefaultMaxIncomingBytes = 16 << 20
	DefaultMinDelay         = 500 * time.Millisecond
	DefaultMaxDelay         = 30 * time.Second
	DefaultMaxInflight      = 1000
	DefaultAckTimeout       = 30 * time.Second
)

// maxKeepAlive is the largest keep alive MQTT can encode: 65535 seconds.
const maxKeepAlive = 65535 * time.Second

// withDefaults returns o with zero fields set to their defaults, or an
// error naming the first invalid value and how to fix it.
func (o Options) withDefaults() (Options, error) {
	if err := o.validateBroker(); err != nil {
		return o, err
	}
	if err := o.validateDurations(); err != nil {
		return o, err
	}
	if err := o.validateMessages(); err != nil {
		return o, err
	}
	setDefault(&o.KeepAlive, DefaultKeepAlive)
	setDefault(&o.ConnectTimeout, DefaultConnectTimeout)
	setDefault(&o.SessionExpiry, DefaultSessionExpiry)
	setDefault(&o.MinDelay, DefaultMinDelay)
	setDefault(&o.MaxDelay, DefaultMaxDelay)
	setDefault(&o.AckTimeout, DefaultAckTimeout)
	setDefault(&o.ReceiveMaximum, DefaultReceiveMaximum)
	setDefault(&o.MaxIncoming, max(DefaultMaxIncoming, int(o.ReceiveMaximum)))
	setDefault(&o.MaxIncomingBytes, DefaultMaxIncomingBytes)
	setDefault(&o.MaxInflight, DefaultMaxInflight)
	if o.MaxDelay < o.MinDelay {
		return o, fmt.Errorf("max delay %s is shorter than min delay %s: raise reconnect.max_delay", o.MaxDelay, o.MinDelay)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Clock == nil {
		o.Clock = realClock{}
	}
	return o, nil
}

func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

func (o *Options) validateBroker() error {
	if len(o.URLs) == 0 {
		return errors.New("no broker url: set broker.urls to mqtt://host:port or mqtts://host:port")
	}
	for _, raw := range o.URLs {
		if _, err := brokerAddress(raw); err != nil {
			return err
		}
	}
	if o.ClientID == "" {
		return errors.New("client id is empty: set broker.client_id, because a session can only be resumed under the same client id")
	}
	if o.Reconnect < ReconnectAlways || o.Reconnect > ReconnectNever {
		return fmt.Errorf("reconnect policy %d is invalid: use always, after-first-success or never", o.Reconnect)
	}
	if o.OnBrokerLimit != LimitDowngrade && o.OnBrokerLimit != LimitReject {
		return fmt.Errorf("broker limit policy %d is invalid: use downgrade or reject", o.OnBrokerLimit)
	}
	for _, s := range o.Subscriptions {
		if s.Filter == "" || s.QoS > 2 || s.RetainHandling > 2 {
			return fmt.Errorf("subscription %q (qos %d, retain handling %d) is invalid: the filter must not be empty and qos and retain handling must be 0, 1 or 2", s.Filter, s.QoS, s.RetainHandling)
		}
		if s.Identifier < 0 || s.Identifier > maxSubscriptionIdentifier {
			return fmt.Errorf("subscription %q identifier %d is invalid: use 0 (none) to %d", s.Filter, s.Identifier, maxSubscriptionIdentifier)
		}
	}
	return nil
}

func (o *Options) validateDurations() error {
	durations := []struct {
		name  string
		value time.Duration
	}{
		{"keep alive", o.KeepAlive},
		{"connect timeout", o.ConnectTimeout},
		{"session expiry", o.SessionExpiry},
		{"min delay", o.MinDelay},
		{"max delay", o.MaxDelay},
		{"ack timeout", o.AckTimeout},
	}
	for _, d := range durations {
		if d.value < 0 {
			return fmt.Errorf("%s %s is negative: use a positive duration, or 0 for the default", d.name, d.value)
		}
	}
	if o.KeepAlive > maxKeepAlive {
		return fmt.Errorf("keep alive %s is longer than MQTT allows: use at most %s", o.KeepAlive, maxKeepAlive)
	}
	if o.KeepAlive > 0 && o.KeepAlive < time.Second {
		return fmt.Errorf("keep alive %s is shorter than one second, the unit MQTT uses: use at least 1s", o.KeepAlive)
	}
	if o.SessionExpiry > math.MaxUint32*time.Second {
		return fmt.Errorf("session expiry %s is longer than MQTT allows: use at most %d seconds", o.SessionExpiry, uint32(math.MaxUint32))
	}
	if o.SessionExpiry > 0 && o.SessionExpiry < time.Second {
		return fmt.Errorf("session expiry %s is shorter than one second: use at least 1s so the session can resume", o.SessionExpiry)
	}
	return nil
}

func (o *Options) validateMessages() error {
	if o.MaxInflight < 0 || o.MaxInflight > 65535 {
		return fmt.Errorf("max inflight %d is out of range: use 1 to 65535", o.MaxInflight)
	}
	if o.MessagesPerSecond < 0 || o.BytesPerSecond < 0 {
		return fmt.Errorf("throttle %g messages/s, %g bytes/s is negative: use 0 for unlimited", o.MessagesPerSecond, o.BytesPerSecond)
	}
	if o.Will != nil {
		if err := o.Will.Validate(true); err != nil {
			return fmt.Errorf("will message: %w", err)
		}
	}
	if o.Birth != nil {
		if err := o.Birth.Validate(true); err != nil {
			return fmt.Errorf("birth message: %w", err)
		}
	}
	return nil
}

// brokerAddress returns host:port for an mqtt:// or mqtts:// url, with
// the standard ports 1883 and 8883 when none is given.
func brokerAddress(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("broker url %q is invalid: %w", raw, err)
	}
	port := ""
	switch u.Scheme {
	case "mqtt", "tcp":
		port = "1883"
	case "mqtts", "ssl", "tls":
		port = "8883"
	default:
		return "", fmt.Errorf("broker url %q has scheme %q: use mqtt:// or mqtts://", raw, u.Scheme)
	}
	if u.Hostname() == "" {
		return "", fmt.Errorf("broker url %q has no host: use mqtt://host:port", raw)
	}
	if u.Port() != "" {
		port = u.Port()
	}
	return net.JoinHostPort(u.Hostname(), port), nil
}

// isTLS reports whether raw uses a TLS scheme.
func isTLS(raw string) bool {
	u, err := url.Parse(raw)
	return err == nil && (u.Scheme == "mqtts" || u.Scheme == "ssl" || u.Scheme == "tls")
}

// realClock is the default [Clock]: package time, whose Now carries a
// monotonic reading.
type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) NewTimer(d time.Duration) Timer { return realTimer{time.NewTimer(d)} }

type realTimer struct{ t *time.Timer }

func (t realTimer) C() <-chan time.Time        { return t.t.C }
func (t realTimer) Stop() bool                 { return t.t.Stop() }
func (t realTimer) Reset(d time.Duration) bool { return t.t.Reset(d) }
