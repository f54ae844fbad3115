package config

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func writeFile(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "mqspool.yaml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func noEnv(string) (string, bool) { return "", false }

func envOf(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

const minimal = "broker:\n  urls: [mqtt://127.0.0.1:1883]\n"

func TestLoad_Defaults(t *testing.T) {
	l, err := Load(LoadOptions{File: writeFile(t, minimal), LookupEnv: noEnv})
	if err != nil {
		t.Fatal(err)
	}
	c := l.Config
	checks := []struct {
		name      string
		got, want any
	}{
		{"keep_alive", c.Broker.KeepAlive, 30 * time.Second},
		{"connect_timeout", c.Broker.ConnectTimeout, 10 * time.Second},
		{"session_expiry", c.Broker.SessionExpiry, 24 * time.Hour},
		{"receive_maximum", c.Broker.ReceiveMaximum, 64},
		{"policy", c.Reconnect.Policy, "always"},
		{"min_delay", c.Reconnect.MinDelay, 500 * time.Millisecond},
		{"qos", c.Publish.QoS, 1},
		{"max_inflight", c.Publish.MaxInflight, 1000},
		{"max_message_bytes", c.Publish.MaxMessageBytes, ByteSize(1 << 20)},
		{"max_bytes", c.Spool.MaxBytes, ByteSize(1 << 30)},
		{"min_free_bytes", c.Spool.MinFreeBytes, ByteSize(64 << 20)},
		{"drain_timeout", c.Shutdown.DrainTimeout, 5 * time.Second},
		{"settle", c.Pickup.Settle, 2 * time.Second},
		{"socket", c.Control.Socket, "/run/mqspool/mqspool.sock"},
	}
	for _, tc := range checks {
		if tc.got != tc.want {
			t.Errorf("%s = %v, want %v", tc.name, tc.got, tc.want)
		}
	}
	if l.Sources["broker.urls"] != SourceFile || l.Sources["broker.keep_alive"] != SourceDefault {
		t.Errorf("sources = %v", l.Sources)
	}
}

// TestLoad_DefaultsOfOtherKeys covers the documented defaults that
// TestLoad_Defaults leaves out, because scripts and unit files rely on them.
func TestLoad_DefaultsOfOtherKeys(t *testing.T) {
	l, err := Load(LoadOptions{File: writeFile(t, minimal), LookupEnv: noEnv})
	if err != nil {
		t.Fatal(err)
	}
	c := l.Config
	checks := []struct {
		name      string
		got, want any
	}{
		{"reconnect.max_delay", c.Reconnect.MaxDelay, 30 * time.Second},
		{"publish.retain", c.Publish.Retain, false},
		{"publish.default_topic", c.Publish.DefaultTopic, ""},
		{"publish.topic_prefix", c.Publish.TopicPrefix, ""},
		{"publish.ack_timeout", c.Publish.AckTimeout, 30 * time.Second},
		{"publish.on_broker_limit", c.Publish.OnBrokerLimit, "downgrade"},
		{"publish.message_id_property", c.Publish.MessageIDProperty, ""},
		{"throttle.messages_per_second", c.Throttle.MessagesPerSecond, 0.0},
		{"throttle.bytes_per_second", c.Throttle.BytesPerSecond, ByteSize(0)},
		{"spool.dir", c.Spool.Dir, "/var/spool/mqspool"},
		{"spool.db", c.Spool.DB, "/var/lib/mqspool/spool.db"},
		{"spool.max_messages", c.Spool.MaxMessages, int64(0)},
		{"spool.overflow", c.Spool.Overflow, "reject"},
		{"spool.qos0_offline", c.Spool.QoS0Offline, "keep"},
		{"pickup.rescan_interval", c.Pickup.RescanInterval, 30 * time.Second},
		{"metrics.listen", c.Metrics.Listen, ""},
		{"status.topic", c.Status.Topic, ""},
		{"log.level", c.Log.Level, "info"},
		{"log.format", c.Log.Format, "text"},
	}
	for _, tc := range checks {
		if tc.got != tc.want {
			t.Errorf("%s = %v, want %v", tc.name, tc.got, tc.want)
		}
	}
}

func TestLoad_EnvOverridesFile(t *testing.T) {
	env := envOf(map[string]string{
		"MQSPOOL_BROKER_KEEP_ALIVE": "7s",
		"MQSPOOL_BROKER_URLS":       "mqtt://a:1,mqtts://b:2",
		"MQSPOOL_BROKER_PASSWORD":   "secret",
	})
	l, err := Load(LoadOptions{File: writeFile(t, minimal), LookupEnv: env})
	if err != nil {
		t.Fatal(err)
	}
	if got := l.Config.Broker.KeepAlive; got != 7*time.Second {
		t.Errorf("keep alive = %s, want 7s", got)
	}
	if got := l.Config.Broker.URLs; len(got) != 2 || got[1] != "mqtts://b:2" {
		t.Errorf("urls = %v", got)
	}
	if l.Config.Broker.Password != "secret" {
		t.Errorf("password not read from %s", PasswordEnv)
	}
	if l.Sources["broker.keep_alive"] != SourceEnv {
		t.Errorf("keep alive source = %s, want env", l.Sources["broker.keep_alive"])
	}
}

func TestLoad_FlagOverridesEnv(t *testing.T) {
	flags := pflag.NewFlagSet("t", pflag.ContinueOnError)
	flags.String("log-level", "", "")
	if err := flags.Parse([]string{"--log-level=debug"}); err != nil {
		t.Fatal(err)
	}
	l, err := Load(LoadOptions{
		File:      writeFile(t, minimal),
		LookupEnv: envOf(map[string]string{"MQSPOOL_LOG_LEVEL": "warn"}),
		Flags:     flags,
		FlagKeys:  map[string]string{"log-level": "log.level"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if l.Config.Log.Level != "debug" || l.Sources["log.level"] != SourceFlag {
		t.Errorf("log level = %s from %s, want debug from flag", l.Config.Log.Level, l.Sources["log.level"])
	}
}

// A relative --spool-dir is taken from the directory the command runs
// in, while the same path in the file is an error.
func TestLoad_RelativeSpoolDirFlag(t *testing.T) {
	flags := pflag.NewFlagSet("t", pflag.ContinueOnError)
	flags.String("spool-dir", "", "")
	if err := flags.Parse([]string{"--spool-dir=rel/spool"}); err != nil {
		t.Fatal(err)
	}
	l, err := Load(LoadOptions{File: writeFile(t, minimal), LookupEnv: noEnv, Flags: flags,
		FlagKeys: map[string]string{"spool-dir": "spool.dir"}})
	if err != nil {
		t.Fatal(err)
	}
	wd, _ := os.Getwd()
	if want := filepath.Join(wd, "rel", "spool"); l.Config.Spool.Dir != want {
		t.Errorf("spool.dir = %s, want %s", l.Config.Spool.Dir, want)
	}

	_, err = Load(LoadOptions{File: writeFile(t, minimal+"spool:\n  dir: rel/spool\n"), LookupEnv: noEnv})
	if err == nil || !strings.Contains(err.Error(), "relative path") {
		t.Errorf("relative spool.dir in the file: error %v, want one about the relative path", err)
	}
}

// run --control-socket is taken from the directory the command runs in,
// like --spool-dir.
func TestLoad_RelativeControlSocketFlag(t *testing.T) {
	flags := pflag.NewFlagSet("t", pflag.ContinueOnError)
	flags.String("control-socket", "", "")
	if err := flags.Parse([]string{"--control-socket=rel/ctl.sock"}); err != nil {
		t.Fatal(err)
	}
	l, err := Load(LoadOptions{File: writeFile(t, minimal), LookupEnv: noEnv, Flags: flags,
		FlagKeys: map[string]string{"control-socket": "control.socket"}})
	if err != nil {
		t.Fatal(err)
	}
	wd, _ := os.Getwd()
	if want := filepath.Join(wd, "rel", "ctl.sock"); l.Config.Control.Socket != want {
		t.Errorf("control.socket = %s, want %s", l.Config.Control.Socket, want)
	}
}

func TestLoad_Routes(t *testing.T) {
	text := minimal + "routes:\n  - match: 'sys/*'\n    topic: $SYS/x\n    qos: 0\n    allow_dollar: true\n"
	l, err := Load(LoadOptions{File: writeFile(t, text), LookupEnv: noEnv})
	if err != nil {
		t.Fatal(err)
	}
	r := l.Config.Routes
	if len(r) != 1 || r[0].QoS == nil || *r[0].QoS != 0 || !r[0].AllowDollar {
		t.Errorf("routes = %+v", r)
	}
}

func TestLoad_Invalid(t *testing.T) {
	dirAsDB := filepath.Join(t.TempDir(), "spool.db")
	if err := os.Mkdir(dirAsDB, 0o755); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, file, want string
	}{
		{"no urls", "log:\n  level: info\n", "broker.urls: missing"},
		{"bad scheme", "broker:\n  urls: [http://x:1]\n", `scheme "http" is not supported`},
		{"no port", "broker:\n  urls: [mqtt://host]\n", "missing host or port"},
		{"port too large", "broker:\n  urls: [mqtt://host:99999]\n", "port 99999 is out of range"},
		{"url path", "broker:\n  urls: [mqtt://host:1883/mqtt]\n", "a path, query or fragment is not used"},
		{"empty url", "broker:\n  urls: [mqtt://host:1883, '']\n", "empty entry"},
		{"password in url", "broker:\n  urls: [mqtt://u:s3cret@host:1883]\n", "mqtt://***@host:1883"},
		{"db is a directory", minimal + "spool:\n  db: /tmp\n", "spool.db: /tmp is a directory"},
		{"db file is a directory", minimal + "spool:\n  db: " + dirAsDB + "\n", "spool.db is a directory: move that directory away"},
		{"db in new", minimal + "spool:\n  dir: /srv/sp\n  db: /srv/sp/new/spool.db\n", "inside /srv/sp/new/"},
		{"nan throttle", minimal + "throttle:\n  messages_per_second: .nan\n", "throttle.messages_per_second: NaN is invalid"},
		{"tiny throttle", minimal + "throttle:\n  messages_per_second: 1e-9\n", "throttle.messages_per_second: 1e-09 is below the lowest rate of 0.001"},
		{"unknown key", minimal + "brokr: 1\n", "brokr"},
		{"unknown key without value", minimal + "brokr:\n", "brokr: unknown key"},
		{"unknown nested key without value", minimal + "publish:\n  qoss:\n", "publish.qoss: unknown key"},
		{"unknown key with empty mapping", minimal + "brokr: {}\n", "brokr: unknown key: check its spelling against configs/mqspool.yaml"},
		{"unknown nested key with empty mapping", minimal + "  tl: {}\n", "broker.tl: unknown key"},
		{"unknown key in tls with empty mapping", minimal + "  tls:\n    ca: {}\n", "broker.tls.ca: unknown key"},
		{"unknown key with empty keys below", minimal + "brokr:\n  urls: {}\n  tls:\n", "brokr: unknown key"},
		{"unknown key in capitals", minimal + "Brokr: {}\n", "brokr: unknown key"},
		{"subscription not a mapping", minimal + "subscriptions: [a/b]\n", "subscriptions[0]: a string is not a mapping: write the keys"},
		{"route not a mapping", minimal + "routes: [5]\n", "routes[0]: a number is not a mapping"},
		{"route a fraction", minimal + "routes: [1.5]\n", "routes[0]: a number is not a mapping"},
		{"route a boolean", minimal + "routes: [true]\n", "routes[0]: true or false is not a mapping"},
		{"section a list", minimal + "pickup: [1, 2]\n", "pickup: a list is not a mapping"},
		{"routes as empty mapping", minimal + "routes: {}\n", `routes: a mapping where a list belongs: start each item with "- match:"`},
		{"routes as mapping of one route", minimal + "routes:\n  match: a/*\n  topic: b\n", "routes: a mapping where a list belongs"},
		{"routes as number", minimal + "routes: 5\n", "routes: a number where a list belongs"},
		{"subscriptions as empty mapping", minimal + "subscriptions: {}\n", `subscriptions: a mapping where a list belongs: start each item with "- filter:"`},
		{"bad duration", minimal + "  keep_alive: soon\n", "soon"},
		{"duration without unit", minimal + "publish:\n  ack_timeout: 30\n", "duration 30 has no unit"},
		{"tiny ack timeout", minimal + "publish:\n  ack_timeout: 30ms\n", "publish.ack_timeout: 30ms is below the minimum of 1s: use for example 30s"},
		{"tiny connect timeout", minimal + "  connect_timeout: 10ms\n", "broker.connect_timeout: 10ms is below the minimum of 100ms"},
		{"tiny rescan interval", minimal + "pickup:\n  rescan_interval: 1ns\n", "pickup.rescan_interval: 1ns is below the minimum of 1s"},
		{"bad size", minimal + "spool:\n  max_bytes: lots\n", `invalid size "lots"`},
		{"fractional size", minimal + "spool:\n  max_bytes: 1000.5\n", `invalid size "1000.5": a number of bytes must be whole`},
		{"bad qos", minimal + "publish:\n  qos: 3\n", "publish.qos: 3 is invalid"},
		{"zero expiry", minimal + "  session_expiry: 0s\n", "broker.session_expiry"},
		{"short expiry", minimal + "  session_expiry: 500ms\n", "broker.session_expiry: 500ms is shorter than one second"},
		{"long expiry", minimal + "  session_expiry: 2000000h\n", "broker.session_expiry: 2000000h0m0s is longer than MQTT allows: use at most 4294967295s"},
		{"fractional expiry", minimal + "  session_expiry: 1.5s\n", "broker.session_expiry: 1.5s is not a whole number of seconds"},
		{"long client id", minimal + "  client_id: abcdefghijklmnopqrstuvwxyz\n", "at most 23"},
		{"bad policy", minimal + "reconnect:\n  policy: sometimes\n", `"sometimes" is not one of`},
		{"bad level", minimal + "log:\n  level: loud\n", `"loud" is not a level`},
		{"bad yaml", "broker: [\n", "fix the YAML syntax"},
		{"route wildcard", minimal + "routes:\n  - match: a\n    topic: a/#\n", "wildcard"},
		{"half tls", minimal + "  tls:\n    cert_file: c.pem\n", "set both"},
		{"metrics port too large", minimal + "metrics:\n  listen: 127.0.0.1:99999\n", `metrics.listen: "127.0.0.1:99999": port 99999 is out of range`},
		{"metrics port not a number", minimal + "metrics:\n  listen: :29999x\n", `metrics.listen: ":29999x": port "29999x" is not a number or a known service`},
		{"metrics port unknown name", minimal + "metrics:\n  listen: localhost:no-such-service\n", `port "no-such-service" is not a number or a known service`},
		{"metrics port zero", minimal + "metrics:\n  listen: 127.0.0.1:0\n", "port 0 would pick a random port"},
		{"metrics port negative", minimal + "metrics:\n  listen: 127.0.0.1:-1\n", "port -1 is out of range"},
		{"metrics no port", minimal + "metrics:\n  listen: 127.0.0.1\n", "is not host:port"},
		{"relative spool dir", minimal + "spool:\n  dir: spool\n", `spool.dir: "spool" is a relative path`},
		{"relative spool db", minimal + "spool:\n  db: ./spool.db\n", `spool.db: "./spool.db" is a relative path`},
		{"relative socket", minimal + "control:\n  socket: run/mqspool.sock\n", `control.socket: "run/mqspool.sock" is a relative path, which would depend on the working directory: write an absolute path`},
		{"relative inbox", minimal + "subscriptions:\n  - {filter: a/#, dir: inbox}\n", `subscriptions[0].dir: "inbox" is a relative path`},
		{"dollar prefix", minimal + "publish:\n  topic_prefix: $SYS/\n", `"$SYS/" starts with $`},
		{"route topic under dollar prefix", minimal + "publish:\n  topic_prefix: $aws/\nroutes:\n  - match: a\n    topic: t\n",
			`routes[0].topic: "t" with publish.topic_prefix is "$aws/t": topic starts with $`},
		{"default topic under dollar prefix", minimal + "publish:\n  topic_prefix: $aws/\n  default_topic: d\n",
			`publish.default_topic: "d" with publish.topic_prefix is "$aws/d": topic starts with $`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(LoadOptions{File: writeFile(t, tc.file), LookupEnv: noEnv})
			if err == nil {
				t.Fatal("Load succeeded, want an error")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error does not wrap ErrInvalid: %v", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

// A route written as a mapping without "- " is one problem of the list,
// not the keys of a list item that the file does not have.
func TestLoad_RoutesMappingReportedOnce(t *testing.T) {
	_, err := Load(LoadOptions{File: writeFile(t, minimal+"routes:\n  match: a/*\n  topc: b\n"), LookupEnv: noEnv})
	if err == nil {
		t.Fatal("Load succeeded, want an error")
	}
	if !strings.Contains(err.Error(), "routes: a mapping where a list belongs") {
		t.Errorf("error %q does not report routes as a mapping", err)
	}
	if strings.Contains(err.Error(), "routes[0]") {
		t.Errorf("error %q also reports a list item that the file does not have", err)
	}
}

// An unknown key that sets no value is reported once, as a whole, also
// when another key in the file does set one. A known section that is
// empty or null sets nothing and is valid.
func TestLoad_ValuelessUnknownKeys(t *testing.T) {
	file := writeFile(t, minimal+"  tls:\npublish: {}\nbrokr:\n  a:\n  b: {}\nlogg:\n  level: {}\n  format: json\n")
	_, err := Load(LoadOptions{File: file, LookupEnv: noEnv})
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("Load error %v, want ErrInvalid", err)
	}

	for _, key := range []string{"brokr", "logg"} {
		want := "\n  " + key + ": unknown key"
		if n := strings.Count(err.Error(), want); n != 1 {
			t.Errorf("error reports %q %d times, want once:\n%v", want, n, err)
		}
	}
	if n := strings.Count(err.Error(), "unknown key"); n != 2 {
		t.Errorf("error reports %d unknown keys, want 2:\n%v", n, err)
	}
}

func TestLoad_EmptySectionsValid(t *testing.T) {
	file := writeFile(t, minimal+"  tls: {}\npublish:\nlog: {}\nroutes:\n")
	if _, err := Load(LoadOptions{File: file, LookupEnv: noEnv}); err != nil {
		t.Fatal(err)
	}
}

// A YAML syntax error reads as one sentence: the file, the YAML error and
// the fix, without viper's own capitalised prefix. The line is the one of
// the unclosed bracket, counted from 1.
func TestLoad_YAMLErrorWording(t *testing.T) {
	file := writeFile(t, "broker:\n  urls: [mqtt://127.0.0.1:1883\n")
	_, err := Load(LoadOptions{File: file, LookupEnv: noEnv})
	if err == nil {
		t.Fatal("Load succeeded, want an error")
	}

	if want := "parse config file " + file + ": yaml: line 2: did not find expected ',' or ']'"; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not contain %q", err, want)
	}
	if strings.Contains(err.Error(), "While parsing") {
		t.Errorf("error %q keeps viper's prefix", err)
	}
}

// A directory under a regular file can never be created, so validation
// rejects it instead of the daemon failing at start.
func TestValidate_DirectoryUnderAFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "afile")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cases := map[string]struct {
		yaml, want string
	}{
		"spool.dir": {"spool:\n  dir: " + file + "/spool\n",
			"spool.dir: " + file + "/spool cannot be created, because " + file + " is not a directory"},
		"spool.dir itself": {"spool:\n  dir: " + file + "\n",
			"spool.dir: " + file + " exists and is not a directory"},
		"spool.db": {"spool:\n  db: " + file + "/state/spool.db\n",
			"spool.db's directory: " + file + "/state cannot be created"},
		"control.socket": {"control:\n  socket: " + file + "/s.sock\n",
			"control.socket's directory: " + file + " exists and is not a directory"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Load(LoadOptions{File: writeFile(t, minimal+tc.yaml), LookupEnv: noEnv})

			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// Scanner errors count lines from 1 already and keep their number.
func TestLoad_YAMLScannerErrorLine(t *testing.T) {
	file := writeFile(t, "a: 1\n b: 2\n")
	_, err := Load(LoadOptions{File: file, LookupEnv: noEnv})

	if want := "yaml: line 2: mapping values are not allowed"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("error %v, want one containing %q", err, want)
	}
}

// An inbox dir that a file is in the way of is accepted: the daemon
// forwards without that inbox and creates it once the file is gone, and
// status loads the same config to show the inbox as unusable.
func TestValidate_InboxUnderAFileAccepted(t *testing.T) {
	file := filepath.Join(t.TempDir(), "afile")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{file, file + "/inbox"} {
		yaml := minimal + "subscriptions:\n  - filter: cmd/#\n    dir: " + dir + "\n"
		if _, err := Load(LoadOptions{File: writeFile(t, yaml), LookupEnv: noEnv}); err != nil {
			t.Errorf("dir %s: %v, want the config accepted", dir, err)
		}
	}
}

// Two subscription dirs that name one directory through a symbolic link
// are rejected like the same dir twice, instead of the daemon finding the
// inbox locked at start.
func TestValidate_InboxDirThroughLink(t *testing.T) {
	base := t.TempDir()
	dir, link := filepath.Join(base, "inbox"), filepath.Join(base, "link")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}
	yaml := minimal + "subscriptions:\n  - filter: a/#\n    dir: " + dir + "\n  - filter: b/#\n    dir: " + link + "\n"

	target, err := filepath.EvalSymlinks(dir)
	if err != nil {
		t.Fatal(err)
	}

	_, err = Load(LoadOptions{File: writeFile(t, yaml), LookupEnv: noEnv})
	want := "subscriptions[1].dir: \"" + link + "\" is also the inbox of subscriptions[0] (through a symbolic link to " + target + ")"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("error %v, want one containing %q", err, want)
	}
}

func TestLoad_MaxSessionExpiry(t *testing.T) {
	l, err := Load(LoadOptions{File: writeFile(t, minimal+"  session_expiry: 4294967295s\n"), LookupEnv: noEnv})
	if err != nil {
		t.Fatal(err)
	}
	if got := l.Config.Broker.SessionExpiry; got != MaxSessionExpiry {
		t.Errorf("session expiry = %s, want %s", got, MaxSessionExpiry)
	}
}

func TestLoad_MetricsListen(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:9464", ":9464", "[::1]:65535", "localhost:1", ":http"} {
		file := writeFile(t, minimal+"metrics:\n  listen: '"+addr+"'\n")
		if _, err := Load(LoadOptions{File: file, LookupEnv: noEnv}); err != nil {
			t.Errorf("metrics.listen %s rejected: %v", addr, err)
		}
	}
}

// A topic prefix starting with $ is allowed once a route may publish to
// such topics.
func TestLoad_DollarPrefixWithRoute(t *testing.T) {
	file := writeFile(t, minimal+"publish:\n  topic_prefix: $aws/things/gw1/\n"+
		"routes:\n  - match: shadow/*\n    topic: shadow/update\n    allow_dollar: true\n")
	if _, err := Load(LoadOptions{File: file, LookupEnv: noEnv}); err != nil {
		t.Errorf("Load: %v", err)
	}
}

func TestLoad_MissingExplicitFile(t *testing.T) {
	_, err := Load(LoadOptions{File: "/nonexistent/mqspool.yaml", LookupEnv: noEnv})
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/mqspool.yaml") {
		t.Fatalf("error = %v, want one naming the file", err)
	}
}

func TestParseByteSize(t *testing.T) {
	cases := map[string]ByteSize{"4096": 4096, "64KiB": 64 << 10, "1MiB": 1 << 20, "1.5GiB": 3 << 29, "100kB": 100000, "2 MB": 2000000}
	for in, want := range cases {
		got, err := ParseByteSize(in)
		if err != nil || got != want {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "lots", "-1", "1XB", "1.5", "0.5 B"} {
		if _, err := ParseByteSize(bad); err == nil {
			t.Errorf("ParseByteSize(%q) succeeded, want an error", bad)
		}
	}
}

func TestParseRate(t *testing.T) {
	cases := map[string]Rate{"100/s": {MessagesPerSecond: 100}, "64KiB/s": {BytesPerSecond: 65536}, "off": {}, "0.001/s": {MessagesPerSecond: 0.001}}
	for in, want := range cases {
		got, err := ParseRate(in)
		if err != nil || got != want {
			t.Errorf("ParseRate(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	if got, err := ParseRate("50 /s"); err != nil || got != (Rate{MessagesPerSecond: 50}) {
		t.Errorf(`ParseRate("50 /s") = %+v, %v; want 50 messages per second`, got, err)
	}
	for _, bad := range []string{"100", "fast/s", "-5/s", "0/s", "NaN/s", "Inf/s", "1e-9/s", "0.0009/s", "1e308/s", "2e9/s"} {
		if _, err := ParseRate(bad); err == nil {
			t.Errorf("ParseRate(%q) succeeded, want an error", bad)
		}
	}
	for _, notFinite := range []string{"Inf/s", "NaN/s"} {
		if _, err := ParseRate(notFinite); err == nil || !strings.Contains(err.Error(), "use a finite number") {
			t.Errorf("ParseRate(%q) = %v, want the finite number advice", notFinite, err)
		}
	}
}

func TestValidateBrokerURL_HidesPassword(t *testing.T) {
	cases := []struct{ raw, password string }{
		{"mqtt://u:s3cret@host:1883", "s3cret"},
		{"mqtt://u:s3cret@host:%zz", "s3cret"},
		{"mqtt://u:s3cret@host", "s3cret"},
		{"gw:Secret4@127.0.0.1:21884", "Secret4"},
		{"mqtt:/gw:Secret7@host:1883", "Secret7"},
		{"mqtt:gw:Secret8@host:1883", "Secret8"},
		{"mqtt://gw:Sec/ret9@host:1883", "Sec/ret9"},
		{"mqtt://gw:Sec#ret10@host:1883", "Sec#ret10"},
		{"mqtt://gw:Sec@ret11@host:1883", "Sec@ret11"},
		{"Secret12@host:1883", "Secret12"},
		{"//gw:Secret13@host:1883", "Secret13"},
	}
	for _, tc := range cases {
		err := ValidateBrokerURL(tc.raw)
		if err == nil {
			t.Errorf("ValidateBrokerURL(%q) succeeded, want an error", tc.raw)
			continue
		}
		if strings.Contains(err.Error(), tc.password) {
			t.Errorf("error for %q shows the password: %v", tc.raw, err)
		}
	}
}

func TestRedactUserinfo(t *testing.T) {
	cases := map[string]string{
		"mqtt://u:pw@host:1883":      "mqtt://***@host:1883",
		"gw:pw@127.0.0.1:21884":      "gw:***@127.0.0.1:21884",
		"mqtt:/gw:pw@host:1883":      "mqtt:/***@host:1883",
		"mqtt:gw:pw@host:1883":       "mqtt:***@host:1883",
		"pw@host:1883":               "***@host:1883",
		"mqtt://host:1883":           "mqtt://host:1883",
		"mqtt://u:p@w@host:1883":     "mqtt://***@host:1883",
		"1mqtt://u:pw@host:1883":     "***@host:1883",
		"mqtts://u:p/w@host:8883/":   "mqtts://***@host:8883/",
		"mqtt://host:1883/a@b":       "mqtt://***@b",
		"tcp://u:pw@[::1]:1883?x=@y": "tcp://***@y",
	}
	for raw, want := range cases {
		if got := redactUserinfo(raw); got != want {
			t.Errorf("redactUserinfo(%q) = %q, want %q", raw, got, want)
		}
	}
}

func TestLoad_UnknownEnvWarned(t *testing.T) {
	environ := []string{
		"MQSPOOL_BROKER_URL=mqtt://x:1", // missing S
		"MQSPOOL_PUBLISH_QOS=1",         // known
		PasswordEnv + "=secret",         // known, read apart from the keys
		"MQSPOOL_SOMETHING_ELSE=1",      // nothing near
		"MQSPOOL_SUBSCRIPTIONS=a/b",     // a list, file only
		"MQSPOOL_ROUTES_0_MATCH=a/#",    // an entry of a list
		"PATH=/usr/bin",
	}
	loaded, err := Load(LoadOptions{File: writeFile(t, minimal), LookupEnv: noEnv, Environ: func() []string { return environ }})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"environment variable MQSPOOL_BROKER_URL names no setting and is ignored: did you mean MQSPOOL_BROKER_URLS?",
		"environment variable MQSPOOL_ROUTES_0_MATCH is ignored: routes is a list and can only be set in the configuration file",
		"environment variable MQSPOOL_SOMETHING_ELSE names no setting and is ignored: use MQSPOOL_ and the key path in upper snake case, as listed by mqspool config print",
		"environment variable MQSPOOL_SUBSCRIPTIONS is ignored: subscriptions is a list and can only be set in the configuration file",
	}
	if !slices.Equal(loaded.Warnings, want) {
		t.Errorf("warnings:\n%s\nwant:\n%s", strings.Join(loaded.Warnings, "\n"), strings.Join(want, "\n"))
	}
}

// A misspelt variable is often why validation fails, so the error names
// it too.
func TestLoad_UnknownEnvInError(t *testing.T) {
	environ := []string{"MQSPOOL_BROKER_URL=mqtt://x:1"}
	_, err := Load(LoadOptions{File: writeFile(t, "log:\n  level: info\n"), LookupEnv: noEnv,
		Environ: func() []string { return environ }})
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("Load error %v, want ErrInvalid", err)
	}
	if !strings.Contains(err.Error(), "did you mean MQSPOOL_BROKER_URLS?") {
		t.Errorf("error does not name the misspelt variable:\n%v", err)
	}
}

// A FIFO given as a connection file is refused without opening it, which
// would block.
func TestCheckFiles_FIFO(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "ca.pem")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	c := &Config{}
	c.Broker.TLS.CAFile = fifo
	problems := c.FileProblems()
	if len(problems) != 1 || !strings.Contains(problems[0], "broker.tls.ca_file: "+fifo+" is a FIFO") {
		t.Errorf("FileProblems = %q, want the FIFO named", problems)
	}
}

// With CheckFiles, a missing file is reported together with the other
// problems of the configuration, not only once they are fixed.
func TestLoad_CheckFilesWithOtherProblems(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "no-such-password")
	file := writeFile(t, minimal+"  password_file: "+missing+"\npublish:\n  qos: 3\n")
	_, err := Load(LoadOptions{File: file, LookupEnv: noEnv, CheckFiles: true})
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("Load error %v, want ErrInvalid", err)
	}
	for _, want := range []string{"broker.password_file: ", "publish.qos"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %s:\n%v", want, err)
		}
	}

	if _, err := Load(LoadOptions{File: file, LookupEnv: noEnv}); err != nil && strings.Contains(err.Error(), "password_file") {
		t.Errorf("without CheckFiles the file was checked:\n%v", err)
	}
}

// A control socket path longer than a Unix socket address holds is
// rejected from every source, and one of the maximum length is accepted.
func TestLoad_ControlSocketLength(t *testing.T) {
	dir := "/run/mqspool/"
	longest := dir + strings.Repeat("a", MaxSocketPathLength-len(dir))
	tooLong := longest + "a"
	want := `control.socket: "` + tooLong + `" has 108 bytes, more than the 107 that a Unix socket address holds: ` +
		"use a shorter path, for example /run/mqspool/mqspool.sock"

	sources := map[string]LoadOptions{
		"file": {File: writeFile(t, minimal+"control:\n  socket: "+tooLong+"\n"), LookupEnv: noEnv},
		"env":  {File: writeFile(t, minimal), LookupEnv: envOf(map[string]string{"MQSPOOL_CONTROL_SOCKET": tooLong})},
		"flag": flagOptions(t, "control.socket", tooLong),
	}
	for source, opts := range sources {
		t.Run(source, func(t *testing.T) {
			_, err := Load(opts)
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Load error %v, want ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not contain %q", err, want)
			}
		})
	}

	l, err := Load(LoadOptions{File: writeFile(t, minimal+"control:\n  socket: "+longest+"\n"), LookupEnv: noEnv})
	if err != nil {
		t.Fatalf("Load with a %d-byte socket path: %v", len(longest), err)
	}
	if got := l.Config.Control.Socket; got != longest {
		t.Errorf("control.socket = %q, want %q", got, longest)
	}
}

// A socket bound to a path of MaxSocketPathLength bytes works and a
// longer one fails, so the limit matches the kernel's.
func TestMaxSocketPathLength(t *testing.T) {
	dir := t.TempDir()
	if len(dir) > MaxSocketPathLength/2 {
		t.Skipf("temporary directory %s is too long to build the paths in", dir)
	}
	for _, n := range []int{MaxSocketPathLength, MaxSocketPathLength + 1} {
		path := dir + "/" + strings.Repeat("s", n-len(dir)-1)
		ln, err := net.Listen("unix", path)
		if n <= MaxSocketPathLength {
			if err != nil {
				t.Errorf("listen on a %d-byte path: %v", n, err)
				continue
			}
			ln.Close()
		} else if err == nil {
			ln.Close()
			t.Errorf("listen on a %d-byte path succeeded, want an error", n)
		}
	}
}

// An empty variable counts as unset, because systemd sets one to "" for
// a line such as Environment=MQSPOOL_BROKER_URLS=.
func TestLoad_EmptyEnvKeepsFile(t *testing.T) {
	env := envOf(map[string]string{"MQSPOOL_BROKER_URLS": "", "MQSPOOL_BROKER_KEEP_ALIVE": ""})
	l, err := Load(LoadOptions{File: writeFile(t, minimal+"  keep_alive: 9s\n"), LookupEnv: env})
	if err != nil {
		t.Fatal(err)
	}
	if got := l.Config.Broker.URLs; len(got) != 1 || got[0] != "mqtt://127.0.0.1:1883" {
		t.Errorf("urls = %v, want the file's", got)
	}
	if got := l.Config.Broker.KeepAlive; got != 9*time.Second {
		t.Errorf("keep alive = %s, want the file's 9s", got)
	}
	if got := l.Sources["broker.urls"]; got != SourceFile {
		t.Errorf("urls source = %s, want file", got)
	}
}

// A bad value from the environment names the variable as well as the key.
func TestLoad_BadEnvValueNamesVariable(t *testing.T) {
	cases := map[string]string{
		"MQSPOOL_BROKER_KEEP_ALIVE": "abc", // fails to decode
		"MQSPOOL_PUBLISH_QOS":       "3",   // fails validation
	}
	for name, value := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Load(LoadOptions{File: writeFile(t, minimal), LookupEnv: envOf(map[string]string{name: value})})
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Load error %v, want ErrInvalid", err)
			}
			if want := "environment variable " + name; !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not contain %q", err, want)
			}
		})
	}

	// A flag overrides the variable, so its value is not the variable's.
	opts := flagOptions(t, "publish.qos", "3")
	opts.LookupEnv = envOf(map[string]string{"MQSPOOL_PUBLISH_QOS": "1"})
	_, err := Load(opts)
	if err == nil || strings.Contains(err.Error(), "MQSPOOL_PUBLISH_QOS") {
		t.Errorf("error %v names the variable, want only the key", err)
	}
}

// Without --config and without the default file, a validation error
// reports that no file was found there.
func TestLoad_NoDefaultFileNamed(t *testing.T) {
	if _, err := os.Stat(DefaultFile); err == nil {
		t.Skipf("%s exists on this machine", DefaultFile)
	}
	_, err := Load(LoadOptions{LookupEnv: noEnv})
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("Load error %v, want ErrInvalid", err)
	}
	for _, want := range []string{"broker.urls: missing", "no config file was found at " + DefaultFile} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}

	// With the broker set in the environment, no file is needed.
	env := envOf(map[string]string{"MQSPOOL_BROKER_URLS": "mqtt://127.0.0.1:1883"})
	if _, err := Load(LoadOptions{LookupEnv: env}); err != nil {
		t.Errorf("Load from the environment only: %v", err)
	}
}
