package config

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/mqspool/mqspool/internal/message"
)

// MaxClientIDLength is the client identifier length every MQTT 5 server
// must accept.
const MaxClientIDLength = 23

// Validate checks every key and returns all problems at once, each naming
// the key, the value and the fix. The error wraps ErrInvalid.
func (c *Config) Validate() error { return c.validate(false, false, nil) }

// validate checks every key. offline accepts a missing broker.urls, and
// files adds the problems of the files the keys name. The problems of
// keys that failed to decode come first, and the keys they name are not
// checked again, since they hold zero values. env holds the keys set
// from the environment, whose problems name the variable.
func (c *Config) validate(offline, files bool, env map[string]bool, failed ...decodeProblem) error {
	var v validator
	c.validateBroker(&v, offline)
	c.validateReconnect(&v)
	c.validatePublish(&v)
	c.validateSpool(&v)
	c.validateRoutes(&v)
	c.validateSubscriptions(&v)
	c.validateOperations(&v)
	if files {
		v.problems = append(v.problems, c.FileProblems()...)
	}
	v.dropFailed(failed)
	v.nameEnv(env)
	return v.err()
}

type validator struct {
	problems []string
}

func (v *validator) addf(format string, args ...any) {
	v.problems = append(v.problems, fmt.Sprintf(format, args...))
}

// dropFailed removes the problems that name a key that failed to
// decode, and puts the decode problems first.
func (v *validator) dropFailed(failed []decodeProblem) {
	var problems []string
	for _, f := range failed {
		problems = append(problems, f.text)
	}
	for _, p := range v.problems {
		if !slices.ContainsFunc(failed, func(f decodeProblem) bool { return f.key != "" && strings.Contains(p, listKey(f.key)) }) {
			problems = append(problems, p)
		}
	}
	v.problems = problems
}

// listKey returns key without a trailing list index: broker.urls for
// broker.urls[1], since validation names the list.
func listKey(key string) string {
	if i := strings.LastIndexByte(key, '['); i > 0 && strings.HasSuffix(key, "]") {
		return key[:i]
	}
	return key
}

func (v *validator) err() error {
	if len(v.problems) == 0 {
		return nil
	}
	return fmt.Errorf("%w:\n  %s", ErrInvalid, strings.Join(v.problems, "\n  "))
}

func (v *validator) positive(key string, d time.Duration) {
	if d <= 0 {
		v.addf("%s: %s must be greater than zero", key, d)
	}
}

// atLeast rejects a duration below least, a value that would keep the
// daemon busy or reconnecting rather than doing its work, such as 30ms
// typed for 30s. use names a sound value.
func (v *validator) atLeast(key string, d, least, use time.Duration) {
	if d < least {
		v.addf("%s: %s is below the minimum of %s: use for example %s", key, d, least, use)
	}
}

// notNegative rejects a negative size, with fix as the advice. The daemon
// passes some sizes on as unsigned numbers, where -1 would become the
// largest one.
func (v *validator) notNegative(key string, size ByteSize, fix string) {
	if size < 0 {
		v.addf("%s: %s is negative: %s", key, size, fix)
	}
}

// absolute rejects a relative path. The daemon would resolve it against
// its working directory, which is / under systemd, while "config
// validate" resolves it against the shell's.
func (v *validator) absolute(key, path, example string) {
	if path != "" && !filepath.IsAbs(path) {
		v.addf("%s: %q is a relative path, which would depend on the working directory: write an absolute path such as %s",
			key, path, example)
	}
}

// creatableDir rejects a directory path that the daemon could never
// create: one that exists as something other than a directory, or whose
// longest existing prefix is not a directory. Permissions are not
// checked, since "config validate" may run as another user.
func (v *validator) creatableDir(key, dir string) {
	if !filepath.IsAbs(dir) {
		return
	}
	for p := filepath.Clean(dir); ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		switch {
		case err == nil && fi.IsDir():
			return
		case err == nil && p == filepath.Clean(dir):
			v.addf("%s: %s exists and is not a directory: remove it or choose another path", key, dir)
			return
		case err == nil:
			v.addf("%s: %s cannot be created, because %s is not a directory: remove that file or choose another path",
				key, dir, p)
			return
		case !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR):
			return // the path cannot be searched, so nothing is known
		case filepath.Dir(p) == p:
			return
		}
	}
}

func (v *validator) oneOf(key, value string, allowed ...string) {
	for _, a := range allowed {
		if value == a {
			return
		}
	}
	v.addf("%s: %q is not one of %s", key, value, strings.Join(allowed, ", "))
}

func (c *Config) validateBroker(v *validator, offline bool) {
	b := &c.Broker
	if len(b.URLs) == 0 && !offline {
		v.addf("broker.urls: missing: set at least one broker URL such as mqtt://127.0.0.1:1883")
	}
	for _, raw := range b.URLs {
		if err := ValidateBrokerURL(raw); err != nil {
			v.addf("broker.urls: %v", err)
		}
	}

	if n := len(b.ClientID); n > MaxClientIDLength {
		v.addf("broker.client_id: %q has %d bytes: use at most %d, or leave it empty to derive one from /etc/machine-id", b.ClientID, n, MaxClientIDLength)
	}
	if b.ClientID != "" && !utf8.ValidString(b.ClientID) {
		v.addf("broker.client_id: %q is not valid UTF-8", b.ClientID)
	}

	if b.PasswordFile != "" && b.Password != "" {
		v.addf("broker.password_file and %s are both set: use one of them", PasswordEnv)
	}
	if (b.TLS.CertFile == "") != (b.TLS.KeyFile == "") {
		v.addf("broker.tls.cert_file and broker.tls.key_file: set both for mutual TLS, or neither")
	}

	if b.KeepAlive < 0 || b.KeepAlive > 65535*time.Second {
		v.addf("broker.keep_alive: %s is out of range: use 0 (off) up to 65535s", b.KeepAlive)
	}
	if b.KeepAlive%time.Second != 0 {
		v.addf("broker.keep_alive: %s is not a whole number of seconds, which MQTT requires: use for example %s",
			b.KeepAlive, min(max(b.KeepAlive.Round(time.Second), time.Second), 65535*time.Second))
	}
	v.atLeast("broker.connect_timeout", b.ConnectTimeout, 100*time.Millisecond, 10*time.Second)
	validateSessionExpiry(v, b.SessionExpiry)
	if b.ReceiveMaximum < 1 || b.ReceiveMaximum > 65535 {
		v.addf("broker.receive_maximum: %d is out of range: use 1 to 65535", b.ReceiveMaximum)
	}
}

// MaxSessionExpiry is the maximum Session Expiry Interval, which MQTT 5
// sends as a four-byte count of seconds. At this value, 0xFFFFFFFF, the
// broker keeps the session for ever.
const MaxSessionExpiry = math.MaxUint32 * time.Second

func validateSessionExpiry(v *validator, d time.Duration) {
	switch {
	case d <= 0:
		v.addf("broker.session_expiry: %s must be greater than zero, or the broker drops the session at every disconnect and unacknowledged messages are sent twice", d)
	case d < time.Second:
		v.addf("broker.session_expiry: %s is shorter than one second, the unit MQTT uses: use at least 1s", d)
	case d > MaxSessionExpiry:
		v.addf("broker.session_expiry: %s is longer than MQTT allows: use at most %ds (about 136 years), at which the broker keeps the session for ever",
			d, int64(MaxSessionExpiry/time.Second))
	case d%time.Second != 0:
		v.addf("broker.session_expiry: %s is not a whole number of seconds, which MQTT requires: use for example %s",
			d, d.Truncate(time.Second))
	}
}

// ValidateBrokerURL checks one broker URL: mqtt:// or mqtts://, a host and
// a port, and nothing else. Error messages show the URL without its user
// information, so a password written into it is not repeated.
func ValidateBrokerURL(raw string) error {
	redacted := redactUserinfo(raw)
	if raw == "" {
		return fmt.Errorf("empty entry: remove it from the list")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("%q is not a URL: write it as mqtt://host:port", redacted)
	}
	if u.Scheme != "mqtt" && u.Scheme != "mqtts" && u.Scheme != "tcp" && u.Scheme != "ssl" {
		return fmt.Errorf("%q: scheme %q is not supported: use mqtt://host:port or mqtts://host:port", redacted, u.Scheme)
	}
	if u.User != nil {
		return fmt.Errorf("%q: a user name or password in the URL is not used: remove it and set broker.username and broker.password_file (or %s)", redacted, PasswordEnv)
	}
	_, port, err := net.SplitHostPort(u.Host)
	if err != nil || port == "" || u.Hostname() == "" {
		return fmt.Errorf("%q: missing host or port: write it as %s://host:port", redacted, u.Scheme)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%q: port %s is out of range: use 1 to 65535", redacted, port)
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("%q: a path, query or fragment is not used in an MQTT URL: write it as %s://host:port", redacted, u.Scheme)
	}
	return nil
}

// redactUserinfo replaces everything between the scheme, with its
// slashes, and the last "@" with "***". It does not rely on url.Parse,
// because a typo such as "gw:pass@host:1883" or "mqtt:/user:pass@host:1883"
// hides the user information from it. A "@" further on, in a path, hides
// more than needed, which is the safe side.
func redactUserinfo(raw string) string {
	at := strings.LastIndex(raw, "@")
	if at < 0 {
		return raw
	}
	keep := len(schemePrefix(raw[:at]))
	for keep < at && raw[keep] == '/' {
		keep++
	}
	return raw[:keep] + "***" + raw[at:]
}

// schemePrefix returns the scheme of s with its colon, as in "mqtt:", or
// "" when s does not start with one.
func schemePrefix(s string) string {
	for i, c := range s {
		switch {
		case c == ':' && i > 0:
			return s[:i+1]
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		case i > 0 && ('0' <= c && c <= '9' || c == '+' || c == '-' || c == '.'):
		default:
			return ""
		}
	}
	return ""
}

func (c *Config) validateReconnect(v *validator) {
	r := &c.Reconnect
	v.oneOf("reconnect.policy", r.Policy, "always", "after-first-success", "never")
	v.positive("reconnect.min_delay", r.MinDelay)
	if r.MaxDelay < r.MinDelay {
		v.addf("reconnect.max_delay: %s is below reconnect.min_delay %s: raise it", r.MaxDelay, r.MinDelay)
	}
}

// checkPrefixedTopic checks topic as the pickup sends it, after the
// prefix, and names both forms when they differ.
func (v *validator) checkPrefixedTopic(key, prefix, topic string, allowDollar bool) {
	full := prefix + topic
	err := message.ValidateTopic(full, allowDollar)
	switch {
	case err == nil:
	case full != topic:
		v.addf("%s: %q with publish.topic_prefix is %q: %v", key, topic, full, err)
	default:
		v.addf("%s: %q: %v", key, topic, err)
	}
}

func (c *Config) validatePublish(v *validator) {
	p := &c.Publish
	if p.QoS < 0 || p.QoS > 2 {
		v.addf("publish.qos: %d is invalid: use 0, 1 or 2", p.QoS)
	}
	if p.DefaultTopic != "" {
		v.checkPrefixedTopic("publish.default_topic", p.TopicPrefix, p.DefaultTopic, false)
	}
	if strings.ContainsAny(p.TopicPrefix, "+#\x00") || !utf8.ValidString(p.TopicPrefix) {
		v.addf("publish.topic_prefix: %q must be valid UTF-8 without wildcards", p.TopicPrefix)
	}
	if strings.HasPrefix(p.TopicPrefix, "$") && !slices.ContainsFunc(c.Routes, func(r Route) bool { return r.AllowDollar }) {
		v.addf("publish.topic_prefix: %q starts with $, so every topic would too and every file would be rejected: "+
			"remove the $, or add a route with allow_dollar: true for the files meant for such topics", p.TopicPrefix)
	}
	if p.MaxInflight < 1 || p.MaxInflight > 65535 {
		v.addf("publish.max_inflight: %d is out of range: use 1 to 65535", p.MaxInflight)
	}
	v.atLeast("publish.ack_timeout", p.AckTimeout, time.Second, 30*time.Second)
	if p.MaxMessageBytes <= 0 || p.MaxMessageBytes > 256<<20 {
		v.addf("publish.max_message_bytes: %s is out of range: use 1B to 256MiB", p.MaxMessageBytes)
	}
	v.oneOf("publish.on_broker_limit", p.OnBrokerLimit, "downgrade", "reject")
	if r := c.Throttle.MessagesPerSecond; r < 0 || math.IsNaN(r) || math.IsInf(r, 0) {
		v.addf("throttle.messages_per_second: %v is invalid: use 0 (unlimited) or a positive number", r)
	} else if r > 0 && r < MinMessageRate {
		v.addf("throttle.messages_per_second: %v is below the lowest rate of %g: use 0 (unlimited) or at least %g", r, MinMessageRate, MinMessageRate)
	} else if r > MaxMessageRate {
		v.addf("throttle.messages_per_second: %v is above the highest rate of %g: use 0 (unlimited) or at most %g", r, float64(MaxMessageRate), float64(MaxMessageRate))
	}
	if c.Throttle.BytesPerSecond < 0 {
		v.addf("throttle.bytes_per_second: %s is invalid: use 0 (unlimited) or a positive size such as 64KiB", c.Throttle.BytesPerSecond)
	}
}

func (c *Config) validateSpool(v *validator) {
	s := &c.Spool
	if s.Dir == "" {
		v.addf("spool.dir: missing: set the spool directory, for example /var/spool/mqspool")
	}
	if s.DB == "" {
		v.addf("spool.db: missing: set the database path, for example /var/lib/mqspool/spool.db")
	}
	v.absolute("spool.dir", s.Dir, "/var/spool/mqspool")
	v.absolute("spool.db", s.DB, "/var/lib/mqspool/spool.db")
	v.creatableDir("spool.dir", s.Dir)
	v.creatableDir("spool.db's directory", filepath.Dir(s.DB))
	if fi, err := os.Stat(s.DB); err == nil && fi.IsDir() {
		fix := "give the path of the database file, for example " + filepath.Join(s.DB, "spool.db")
		if strings.HasSuffix(s.DB, ".db") {
			// A directory where the file belongs, not a directory meant
			// to hold it.
			fix = "move that directory away, or give another path for the database file"
		}
		v.addf("spool.db: %s is a directory: %s", s.DB, fix)
	}
	if s.Dir != "" && s.DB != "" {
		for _, sub := range []string{"tmp", "new", "failed"} {
			if within(s.DB, filepath.Join(s.Dir, sub)) {
				v.addf("spool.db: %s is inside %s/%s/, where the pickup would take it for a dropped file: keep the database outside it, for example in /var/lib/mqspool", s.DB, s.Dir, sub)
			}
		}
	}
	v.notNegative("spool.max_bytes", s.MaxBytes, "use 0 for unlimited or a size such as 1GiB")
	v.notNegative("spool.min_free_bytes", s.MinFreeBytes, "use 0 to never pause ingest for low disk space, or a size such as 64MiB")
	v.notNegative("spool.failed_warn_bytes", s.FailedWarnBytes, "use 0 to turn the warning off, or a size such as 100MiB")
	if s.MaxMessages < 0 {
		v.addf("spool.max_messages: %d must not be negative: use 0 for unlimited", s.MaxMessages)
	}
	v.oneOf("spool.overflow", s.Overflow, "reject", "drop-oldest")
	v.oneOf("spool.qos0_offline", s.QoS0Offline, "keep", "drop")
	v.positive("pickup.settle", c.Pickup.Settle)
	v.atLeast("pickup.rescan_interval", c.Pickup.RescanInterval, time.Second, 30*time.Second)
}

// within reports whether path lies inside dir, comparing the cleaned
// absolute forms without resolving links.
func within(path, dir string) bool {
	rel, ok := relative(path, dir)
	return ok && rel != "."
}

// sameOrWithin reports whether path is dir or lies inside it, comparing
// the cleaned absolute forms without resolving links.
func sameOrWithin(path, dir string) bool {
	_, ok := relative(path, dir)
	return ok
}

// relative returns path relative to dir, and false when path lies
// outside dir.
func relative(path, dir string) (string, bool) {
	p, err1 := filepath.Abs(path)
	d, err2 := filepath.Abs(dir)
	if err1 != nil || err2 != nil {
		return "", false
	}
	rel, err := filepath.Rel(d, p)
	if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return "", false
	}
	return rel, true
}

func (c *Config) validateRoutes(v *validator) {
	for i, r := range c.Routes {
		key := fmt.Sprintf("routes[%d]", i)
		if r.Match == "" {
			v.addf("%s.match: missing: set a glob on the path under new/, such as sensors/*", key)
		} else if _, err := path.Match(r.Match, ""); err != nil {
			v.addf("%s.match: %q is not a valid glob: %v: close every [ with ], and write \\ before a literal *, ? or [", key, r.Match, err)
		}
		if r.Topic != "" {
			v.checkPrefixedTopic(key+".topic", c.Publish.TopicPrefix, r.Topic, r.AllowDollar)
		}
		if r.QoS != nil && (*r.QoS < 0 || *r.QoS > 2) {
			v.addf("%s.qos: %d is invalid: use 0, 1 or 2", key, *r.QoS)
		}
	}
}

func (c *Config) validateSubscriptions(v *validator) {
	filters, dirs := map[string]int{}, map[string]int{}
	for i, s := range c.Subscriptions {
		key := fmt.Sprintf("subscriptions[%d]", i)
		if j, ok := filters[s.Filter]; ok && s.Filter != "" {
			v.addf("%s.filter: %q repeats subscriptions[%d]: merge the two entries", key, s.Filter, j)
		}
		// A symbolic link makes two strings name one inbox, which the
		// daemon's inbox lock would then reject at start.
		realDir := resolved(s.Dir)
		if j, ok := dirs[filepath.Clean(s.Dir)]; ok && s.Dir != "" {
			v.addf("%s.dir: %q is also the inbox of subscriptions[%d]: give each subscription its own dir", key, s.Dir, j)
		} else if j, ok := dirs[realDir]; ok && s.Dir != "" {
			v.addf("%s.dir: %q is also the inbox of subscriptions[%d]%s: give each subscription its own dir",
				key, s.Dir, j, linkNote(s.Dir, realDir))
		}
		filters[s.Filter], dirs[filepath.Clean(s.Dir)] = i, i
		if _, ok := dirs[realDir]; !ok {
			dirs[realDir] = i
		}
		for j, o := range c.Subscriptions[:i] {
			if s.Dir != "" && o.Dir != "" && (within(s.Dir, o.Dir) || within(o.Dir, s.Dir)) {
				v.addf("%s.dir: %q and subscriptions[%d].dir %q are nested, so one inbox's consumer and limits "+
					"would see the other's files: give each subscription a directory outside the others", key, s.Dir, j, o.Dir)
			}
		}
		if s.Filter == "" {
			v.addf("%s.filter: missing: set a topic filter such as devices/+/cmd", key)
		} else if err := message.ValidateFilter(s.Filter); err != nil {
			v.addf("%s.filter: %s is invalid: %v", key, quoteShort(s.Filter), err)
		} else if s.NoLocal && strings.HasPrefix(s.Filter, "$share/") {
			v.addf("%s.no_local: true on the shared subscription %s, which MQTT 5 forbids: set no_local to false", key, quoteShort(s.Filter))
		}
		if s.Dir == "" {
			v.addf("%s.dir: missing: set the inbox directory", key)
		} else {
			// An inbox that cannot be created is not checked here: the
			// daemon runs without it and retries, and status must still
			// load this config to show the inbox as unusable.
			v.absolute(key+".dir", s.Dir, "/var/lib/mqspool/inbox/cmd")
			c.validateInboxLocation(v, key, s.Dir)
		}
		if s.QoS < 0 || s.QoS > 2 {
			v.addf("%s.qos: %d is invalid: use 0, 1 or 2", key, s.QoS)
		}
		if s.RetainHandling < 0 || s.RetainHandling > 2 {
			v.addf("%s.retain_handling: %d is invalid: use 0, 1 or 2", key, s.RetainHandling)
		}
		if s.MaxFiles < 0 {
			v.addf("%s.max_files: %d is negative: use 0 for unlimited or a positive count", key, s.MaxFiles)
		}
		if s.MaxBytes < 0 {
			v.addf("%s.max_bytes: %s is negative: use 0 for unlimited or a positive size such as 256MiB", key, s.MaxBytes)
		}
	}
}

// validateInboxLocation keeps an inbox and the spool directory apart. The
// pickup publishes every file that appears under spool.dir, so an inbox
// there would send each received message out again, in an endless loop.
// The reverse, a spool directory inside an inbox, mixes spool files into
// what the inbox's consumer reads and counts.
func (c *Config) validateInboxLocation(v *validator, key, dir string) {
	spool := c.Spool.Dir
	if spool == "" {
		return
	}
	// Compare the paths as written and with their symbolic links resolved,
	// since a link makes two different strings name one directory.
	realDir, realSpool := resolved(dir), resolved(spool)
	if sameOrWithin(dir, spool) || sameOrWithin(realDir, realSpool) {
		v.addf("%s.dir: %q is inside spool.dir %s%s: mqspool would publish the messages it receives again, "+
			"in an endless loop: use a directory outside spool.dir", key, dir, spool, linkNote(dir, realDir))
	} else if within(spool, dir) || within(realSpool, realDir) {
		v.addf("spool.dir: %q is inside %s.dir %s%s, so the inbox's consumer and limits would see spool files: "+
			"keep the spool directory outside every inbox", spool, key, dir, linkNote(spool, realSpool))
	}
}

// resolved returns the absolute form of path with the symbolic links in
// its longest existing prefix resolved. The parts that do not exist yet
// are appended as written.
func resolved(path string) string {
	p, err := filepath.Abs(path)
	if err != nil {
		return path
	}
	missing := ""
	for {
		if target, err := filepath.EvalSymlinks(p); err == nil {
			return filepath.Join(target, missing)
		}
		parent := filepath.Dir(p)
		if parent == p {
			return path
		}
		missing = filepath.Join(filepath.Base(p), missing)
		p = parent
	}
}

// linkNote names the target of path when a symbolic link leads there.
func linkNote(path, target string) string {
	if abs, err := filepath.Abs(path); err == nil && abs == target {
		return ""
	}
	return fmt.Sprintf(" (through a symbolic link to %s)", target)
}

// quoteShort quotes s, cut to its first 64 characters when longer, so a
// huge value does not bury the other problems.
func quoteShort(s string) string {
	const limit = 64
	if utf8.RuneCountInString(s) <= limit {
		return strconv.Quote(s)
	}
	return fmt.Sprintf("%.*q... (%d bytes)", limit, s, len(s))
}

// MaxSocketPathLength is the longest path a Unix socket can be bound to
// on Linux: sun_path in struct sockaddr_un has 108 bytes, including the
// terminating NUL (unix(7)). A longer path fails at bind time with EINVAL.
const MaxSocketPathLength = 107

func (c *Config) validateOperations(v *validator) {
	v.positive("shutdown.drain_timeout", c.Shutdown.DrainTimeout)
	if c.Control.Socket == "" {
		v.addf("control.socket: missing: set a path such as /run/mqspool/mqspool.sock")
	}
	v.absolute("control.socket", c.Control.Socket, "/run/mqspool/mqspool.sock")
	if c.Control.Socket != "" {
		v.creatableDir("control.socket's directory", filepath.Dir(c.Control.Socket))
	}
	if n := len(c.Control.Socket); n > MaxSocketPathLength {
		v.addf("control.socket: %q has %d bytes, more than the %d that a Unix socket address holds: "+
			"use a shorter path, for example /run/mqspool/mqspool.sock", c.Control.Socket, n, MaxSocketPathLength)
	}
	if c.Metrics.Listen != "" {
		validateListen(v, "metrics.listen", c.Metrics.Listen)
	}
	if c.Status.Topic != "" {
		if err := message.ValidateTopic(c.Status.Topic, false); err != nil {
			v.addf("status.topic: %q: %v", c.Status.Topic, err)
		}
	}
	if _, err := ParseLevel(c.Log.Level); err != nil {
		v.addf("log.level: %v", err)
	}
	v.oneOf("log.format", c.Log.Format, "text", "json")
}

// validateListen checks a host:port to listen on. Port 0, which picks a
// free port at random, is rejected because Prometheus could not find it.
func validateListen(v *validator, key, addr string) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		v.addf("%s: %q is not host:port: write it as 127.0.0.1:9464", key, addr)
		return
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		// A service name such as http is a port too.
		n, err = net.LookupPort("tcp", port)
	}
	switch {
	case err != nil:
		v.addf("%s: %q: port %q is not a number or a known service: use a port from 1 to 65535, as in 127.0.0.1:9464", key, addr, port)
	case n == 0:
		v.addf("%s: %q: port 0 would pick a random port that Prometheus cannot find: use a port from 1 to 65535, as in 127.0.0.1:9464", key, addr)
	case n < 1 || n > 65535:
		v.addf("%s: %q: port %d is out of range: use 1 to 65535, as in 127.0.0.1:9464", key, addr, n)
	}
}

// ParseLevel maps debug, info, warn and error to slog levels.
func ParseLevel(s string) (slog.Level, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(s)); err != nil {
		return 0, errors.New("\"" + s + "\" is not a level: use debug, info, warn or error")
	}
	return level, nil
}
