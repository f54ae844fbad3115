package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/mqspool/mqspool/internal/config"
	"github.com/mqspool/mqspool/internal/control"
	"github.com/mqspool/mqspool/internal/format"
	"github.com/mqspool/mqspool/internal/message"
	"github.com/mqspool/mqspool/internal/spool"
	"github.com/mqspool/mqspool/internal/state"
	"github.com/mqspool/mqspool/test/harness"
)

// run executes the command line and returns the exit status, stdout and
// stderr.
func run(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := execute(args, strings.NewReader(stdin), &out, &errOut)
	return code, out.String(), errOut.String()
}

// testConfig writes a valid config into a temporary directory.
func testConfig(t *testing.T, extra string) (file, dir string) {
	t.Helper()
	dir = t.TempDir()
	file = filepath.Join(dir, "mqspool.yaml")
	text := "broker:\n  urls: [mqtt://127.0.0.1:1883]\n" +
		"spool:\n  dir: " + filepath.Join(dir, "spool") + "\n  db: " + filepath.Join(dir, "spool.db") + "\n" +
		"control:\n  socket: " + filepath.Join(dir, "ctl.sock") + "\n" + extra
	if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "spool"), 0o755); err != nil {
		t.Fatal(err)
	}
	return file, dir
}

func TestVersion_Prints(t *testing.T) {
	code, out, _ := run(t, "", "version")
	if code != exitOK || !strings.HasPrefix(out, "mqspool ") {
		t.Errorf("version: code %d, output %q", code, out)
	}
}

func TestConfigValidate_ExitCodes(t *testing.T) {
	good, _ := testConfig(t, "")
	if code, out, errOut := run(t, "", "config", "validate", "--config", good); code != exitOK {
		t.Errorf("valid config: code %d, stdout %q, stderr %q", code, out, errOut)
	}

	bad, _ := testConfig(t, "publish:\n  qos: 5\n")
	code, _, errOut := run(t, "", "config", "validate", "--config", bad)
	if code != exitUsage {
		t.Errorf("invalid config: code %d, want %d", code, exitUsage)
	}
	if !strings.Contains(errOut, "publish.qos") {
		t.Errorf("error %q does not name publish.qos", errOut)
	}

	code, _, _ = run(t, "", "config", "validate", "--config", "/nonexistent.yaml")
	if code != exitUsage {
		t.Errorf("missing config file: code %d, want %d", code, exitUsage)
	}
}

// config validate reports files the connection reads that are missing or
// unreadable; run only warns about them (see the daemon tests).
func TestConfigValidate_ChecksFiles(t *testing.T) {
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "password")
	file := filepath.Join(dir, "mqspool.yaml")
	text := "broker:\n  urls: [mqtts://127.0.0.1:8883]\n  password_file: " + missing +
		"\n  tls:\n    ca_file: " + ca + "\n    cert_file: " + ca + "\n    key_file: " + dir + "\n" +
		"spool:\n  dir: " + dir + "\n  db: " + filepath.Join(dir, "spool.db") + "\n"
	if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}

	code, _, errOut := run(t, "", "config", "validate", "--config", file)
	if code != exitUsage {
		t.Fatalf("config naming a missing file: code %d, want %d", code, exitUsage)
	}
	for _, want := range []string{"broker.password_file: stat " + missing, "broker.tls.key_file: " + dir + " is a directory"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("error does not contain %q:\n%s", want, errOut)
		}
	}
	if strings.Contains(errOut, "ca_file") || strings.Contains(errOut, "cert_file") {
		t.Errorf("a readable file is reported:\n%s", errOut)
	}
}

// A CA file that can be read but holds no certificate is logged at start
// as invalid, not as unreadable. Another listener on the control socket
// ends the start right after the warnings.
func TestRun_WarnsOfUnusableTLSFile(t *testing.T) {
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	file, cfgDir := testConfig(t, "")
	text, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	text = []byte(strings.Replace(string(text), "mqtt://127.0.0.1:1883]\n",
		"mqtts://127.0.0.1:8883]\n  tls:\n    ca_file: "+ca+"\n", 1))
	if err := os.WriteFile(file, text, 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("unix", filepath.Join(cfgDir, "ctl.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	code, _, errOut := run(t, "", "run", "--config", file)
	if code != exitFailure {
		t.Fatalf("run with the control socket in use: code %d, want %d:\n%s", code, exitFailure, errOut)
	}
	if !strings.Contains(errOut, "holds no PEM certificate") {
		t.Fatalf("no warning about the CA file:\n%s", errOut)
	}
	if strings.Contains(errOut, "cannot be read") {
		t.Errorf("a readable CA file is logged as one that cannot be read:\n%s", errOut)
	}
}

func TestConfigPrint_HidesPassword(t *testing.T) {
	file, _ := testConfig(t, "")
	t.Setenv("MQSPOOL_BROKER_PASSWORD", "hunter2")
	code, out, _ := run(t, "", "config", "print", "--config", file)
	if code != exitOK {
		t.Fatalf("code %d", code)
	}
	if strings.Contains(out, "hunter2") {
		t.Errorf("config print shows the password:\n%s", out)
	}
	if !strings.Contains(out, "broker.keep_alive:") || !strings.Contains(out, "# default") {
		t.Errorf("config print lacks keys or sources:\n%s", out)
	}
}

// config print and config validate take run's flags, so that they show
// and check what a daemon started with those flags would use.
func TestConfigCommands_TakeRunFlags(t *testing.T) {
	file, _ := testConfig(t, "")
	dir := filepath.Join(t.TempDir(), "other-spool")
	code, out, errOut := run(t, "", "config", "print", "--config", file, "--spool-dir", dir, "--log-level", "debug")
	if code != exitOK {
		t.Fatalf("config print: code %d, stderr %q", code, errOut)
	}
	for _, want := range []string{"spool.dir:", dir, "log.level:", "debug", "# flag"} {
		if !strings.Contains(out, want) {
			t.Errorf("config print output lacks %q:\n%s", want, out)
		}
	}

	code, _, errOut = run(t, "", "config", "validate", "--config", file, "--client-id", strings.Repeat("x", 30))
	if code != exitUsage {
		t.Errorf("config validate with a client id of 30 bytes: code %d, want %d", code, exitUsage)
	}
	if !strings.Contains(errOut, "broker.client_id") {
		t.Errorf("config validate error %q does not name broker.client_id", errOut)
	}
}

func TestConfigPrint_WithoutBrokerURLs(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "mqspool.yaml")
	text := "spool:\n  dir: " + filepath.Join(dir, "spool") + "\nsubscriptions:\n  - filter: cmd/#\n    qos: 1\n    dir: " + filepath.Join(dir, "in") + "\n"
	if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := run(t, "", "config", "print", "--config", file)
	if code != exitOK {
		t.Fatalf("code %d, stderr %q; want the file shown", code, errOut)
	}
	if !strings.Contains(out, "broker.urls is missing") {
		t.Errorf("config print does not say that broker.urls is missing:\n%s", out)
	}
	if !strings.Contains(out, `subscriptions[0]: filter="cmd/#" qos=1`) {
		t.Errorf("config print does not show the subscription:\n%s", out)
	}
}

func TestUsage_BadFlagExits2(t *testing.T) {
	if code, _, _ := run(t, "", "run", "--no-such-flag"); code != exitUsage {
		t.Errorf("unknown flag: code %d, want %d", code, exitUsage)
	}
	if code, _, _ := run(t, "", "version", "extra"); code != exitUsage {
		t.Errorf("extra argument: code %d, want %d", code, exitUsage)
	}
}

func TestUsage_NegativeArgumentNamed(t *testing.T) {
	code, _, errOut := run(t, "", "ctl", "throttle", "-5/s")
	if code != exitUsage || !strings.Contains(errOut, "-5/s is read as a flag") || !strings.Contains(errOut, "negative") {
		t.Errorf("ctl throttle -5/s: code %d, stderr %q; want %d and a word on negative values", code, errOut, exitUsage)
	}
	if _, _, errOut := run(t, "", "ctl", "throttle", "-x"); !strings.Contains(errOut, "unknown shorthand flag") {
		t.Errorf("ctl throttle -x: stderr %q, want pflag's unknown shorthand error", errOut)
	}
	code, _, errOut = run(t, "", "publish", "--topic", "a", "--message", "x", "--expiry", "-5")
	if code != exitUsage || !strings.Contains(errOut, `invalid value "-5" for --expiry: use a whole number of 0 or more`) {
		t.Errorf("publish --expiry -5: code %d, stderr %q; want %d and the value with the fix", code, errOut, exitUsage)
	}
	code, _, errOut = run(t, "", "publish", "--topic", "a", "--message", "x", "--expiry", "5000000000")
	if code != exitUsage || !strings.Contains(errOut, `invalid value "5000000000" for --expiry: use a whole number from 0 to 4294967295`) {
		t.Errorf("publish --expiry 5000000000: code %d, stderr %q; want %d and the range", code, errOut, exitUsage)
	}
}

func TestUsage_UnknownCommandExits2(t *testing.T) {
	for _, args := range [][]string{{"foo"}, {"spool", "bogus"}} {
		code, _, errOut := run(t, "", args...)
		if code != exitUsage || !strings.Contains(errOut, "unknown") {
			t.Errorf("mqspool %v: code %d, stderr %q; want %d and the unknown name", args, code, errOut, exitUsage)
		}
	}
}

// A group command names an unknown subcommand even when flags follow it
// that only its subcommands define.
func TestUsage_UnknownSubcommandWithFlags(t *testing.T) {
	cases := map[string]struct {
		args []string
		want string
	}{
		"ctl":           {[]string{"ctl", "bogus", "--config", "/x"}, `unknown subcommand "bogus" for mqspool ctl: use one of pause, reconnect, resume, throttle`},
		"spool":         {[]string{"spool", "bogus", "--x"}, `unknown subcommand "bogus" for mqspool spool: use one of compact, ls, requeue-failed, salvage, stats`},
		"config":        {[]string{"config", "bogus", "--x"}, `unknown subcommand "bogus" for mqspool config: use one of print, validate`},
		"flag first":    {[]string{"ctl", "--config", "/x", "bogus"}, `unknown subcommand "bogus" for mqspool ctl`},
		"no subcommand": {[]string{"ctl", "--config", "/x"}, "missing subcommand for mqspool ctl: use one of pause"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			code, _, errOut := run(t, "", tc.args...)
			if code != exitUsage {
				t.Errorf("code %d, want %d", code, exitUsage)
			}
			if !strings.Contains(errOut, tc.want) {
				t.Errorf("stderr %q does not contain %q", errOut, tc.want)
			}
		})
	}

	// A subcommand still rejects a flag it does not define.
	code, _, errOut := run(t, "", "ctl", "pause", "--x")
	if code != exitUsage || !strings.Contains(errOut, "unknown flag: --x") {
		t.Errorf("ctl pause --x: code %d, stderr %q; want %d and the unknown flag", code, errOut, exitUsage)
	}
}

func TestPublish_WritesMsgFile(t *testing.T) {
	file, dir := testConfig(t, "")
	code, out, errOut := run(t, "payload from stdin", "publish", "--config", file,
		"--topic", "a/b", "--qos", "2", "--property", "k=v=w", "--property", "k=2", "--content-type", "text/plain", "-")
	if code != exitOK {
		t.Fatalf("publish: code %d, stderr %q", code, errOut)
	}
	name := strings.TrimSpace(strings.TrimPrefix(out, "queued new/"))
	data, err := os.ReadFile(filepath.Join(dir, "spool", "new", name))
	if err != nil {
		t.Fatal(err)
	}
	m, fields, err := format.ParseMsg(data)
	if err != nil {
		t.Fatal(err)
	}
	if m.Topic != "a/b" || m.QoS != 2 || string(m.Payload) != "payload from stdin" || m.ContentType != "text/plain" {
		t.Errorf("message = %+v", m)
	}
	if fields.Retain {
		t.Errorf("retain header written without --retain")
	}
	if len(m.UserProperties) != 2 || m.UserProperties[0].Value != "v=w" {
		t.Errorf("user properties = %+v", m.UserProperties)
	}
	if entries, _ := os.ReadDir(filepath.Join(dir, "spool", "tmp")); len(entries) != 0 {
		t.Errorf("tmp/ not empty after publish: %v", entries)
	}
}

func TestPublish_LeavesQoSToDaemon(t *testing.T) {
	file, dir := testConfig(t, "")
	code, out, _ := run(t, "", "publish", "--config", file, "--topic", "a/b", "--message", "x")
	if code != exitOK {
		t.Fatalf("code %d", code)
	}
	name := strings.TrimSpace(strings.TrimPrefix(out, "queued new/"))
	data, _ := os.ReadFile(filepath.Join(dir, "spool", "new", name))
	if _, fields, err := format.ParseMsg(data); err != nil || fields.QoS {
		t.Errorf("QoS header written without --qos (err %v):\n%s", err, data)
	}
}

func TestPublish_BadInputExits2(t *testing.T) {
	file, dir := testConfig(t, "")
	cases := map[string][]string{
		"wildcard topic":     {"--topic", "a/#", "--message", "x"},
		"qos 3":              {"--qos", "3", "--message", "x"},
		"bad property":       {"--property", "novalue", "--message", "x"},
		"empty property key": {"--property", "=v", "--message", "x"},
		"no payload":         {"--topic", "a"},
		"two payloads":       {"--message", "x", "file.txt"},
		"topic with LF":      {"--topic", "a\nb", "--message", "x"},
		"topic with CR":      {"--topic", "a\rb", "--message", "x"},
		"leading space":      {"--topic", " a", "--message", "x"},
		"trailing tab":       {"--topic", "a\t", "--message", "x"},
		"content type LF":    {"--topic", "a", "--content-type", "text/plain\n", "--message", "x"},
		"property LF":        {"--topic", "a", "--property", "k=v\nw", "--message", "x"},
		"property space":     {"--topic", "a", "--property", "k=v ", "--message", "x"},
	}
	for name, args := range cases {
		t.Run(name, func(t *testing.T) {
			code, _, errOut := run(t, "", append([]string{"publish", "--config", file}, args...)...)
			if code != exitUsage {
				t.Errorf("code %d, want %d (stderr %q)", code, exitUsage, errOut)
			}
		})
	}
	if entries, _ := os.ReadDir(filepath.Join(dir, "spool", "new")); len(entries) != 0 {
		t.Errorf("new/ has %v, want nothing", entries)
	}
}

// A FILE that does not exist fails with exit 2 and the ways to give a
// payload.
func TestPublish_MissingFile(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "absent")
	code, _, errOut := run(t, "", "publish", "--spool-dir", t.TempDir(), "-t", "a/b", missing)

	if code != exitUsage {
		t.Errorf("code %d, want %d", code, exitUsage)
	}
	if want := "open " + missing + ": no such file or directory: check the path of FILE"; !strings.Contains(errOut, want) {
		t.Errorf("stderr %q does not contain %q", errOut, want)
	}
}

// --retain takes no value, so in "--retain false" the word is FILE.
func TestPublish_RetainValueReadAsFile(t *testing.T) {
	spoolDir := t.TempDir()
	cases := map[string]struct {
		args []string
		want string
	}{
		"false":     {[]string{"--retain", "false"}, `FILE "false" looks like a value for --retain`},
		"short YES": {[]string{"-r", "YES"}, `FILE "YES" looks like a value for --retain`},
		"maybe": {[]string{"--retain", "maybe"},
			`open maybe: no such file or directory: --retain takes no value, so "maybe" was read as FILE`},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			args := append([]string{"publish", "--spool-dir", spoolDir, "-t", "a/b"}, tc.args...)
			code, _, errOut := run(t, "", args...)
			if code != exitUsage {
				t.Errorf("code %d, want %d", code, exitUsage)
			}
			if !strings.Contains(errOut, tc.want) {
				t.Errorf("stderr %q does not contain %q", errOut, tc.want)
			}
			if !strings.Contains(errOut, "--retain=false") {
				t.Errorf("stderr %q does not show the --retain=false form", errOut)
			}
		})
	}
	if entries, _ := os.ReadDir(filepath.Join(spoolDir, "new")); len(entries) != 0 {
		t.Errorf("new/ has %v, want nothing", entries)
	}

	// A file of such a name is published when given as a path.
	named := filepath.Join(t.TempDir(), "false")
	if err := os.WriteFile(named, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, errOut := run(t, "", "publish", "--spool-dir", spoolDir, "-t", "a/b", "--retain", named)
	if code != exitOK {
		t.Errorf("--retain %s: code %d, stderr %q; want 0", named, code, errOut)
	}
}

func TestPublish_HeaderValueErrorNamesFlag(t *testing.T) {
	code, _, errOut := run(t, "", "publish", "--spool-dir", t.TempDir(), "--topic", " a", "--message", "x")
	if code != exitUsage {
		t.Errorf("code %d, want %d", code, exitUsage)
	}
	if !strings.Contains(errOut, `--topic " a" is invalid`) {
		t.Errorf("stderr %q does not name --topic and its value", errOut)
	}
}

func TestPublish_ControlCharactersExit2(t *testing.T) {
	file, _ := testConfig(t, "")
	for _, args := range [][]string{
		{"--topic", "a\tb"},
		{"--topic", "a", "--content-type", "text/\x1b[31m"},
		{"--topic", "a", "--property", "k=v\x07"},
	} {
		code, _, errOut := run(t, "", append([]string{"publish", "--config", file, "--message", "x"}, args...)...)
		if code != exitUsage || !strings.Contains(errOut, "malformed packet") {
			t.Errorf("publish %q: code %d, stderr %q; want %d naming the character", args, code, errOut, exitUsage)
		}
	}
}

func TestPublish_DollarTopicNeedsRoute(t *testing.T) {
	file, _ := testConfig(t, "")
	code, _, errOut := run(t, "", "publish", "--config", file, "--topic", "$aws/things/gw/shadow/update", "--message", "x")
	if code != exitUsage || !strings.Contains(errOut, "allow_dollar") {
		t.Errorf("without a route: code %d, stderr %q; want %d and the fix", code, errOut, exitUsage)
	}

	file, _ = testConfig(t, "routes:\n  - match: \"elsewhere/**\"\n    allow_dollar: true\n")
	code, _, errOut = run(t, "", "publish", "--config", file, "--topic", "$aws/things/gw/shadow/update", "--message", "x")
	if code != exitUsage || !strings.Contains(errOut, "allow_dollar") || !strings.Contains(errOut, ".msg") {
		t.Errorf("with a route for other files: code %d, stderr %q; want %d naming the file", code, errOut, exitUsage)
	}

	// The pickup takes the first route that matches, as publish does.
	file, _ = testConfig(t, "routes:\n  - match: \"**\"\n    qos: 1\n  - match: \"*.msg\"\n    allow_dollar: true\n")
	code, _, errOut = run(t, "", "publish", "--config", file, "--topic", "$aws/things/gw/shadow/update", "--message", "x")
	if code != exitUsage || !strings.Contains(errOut, `"**", does not set allow_dollar`) {
		t.Errorf("behind a first route without allow_dollar: code %d, stderr %q; want %d naming that route", code, errOut, exitUsage)
	}

	file, _ = testConfig(t, "routes:\n  - match: \"**\"\n    allow_dollar: true\n")
	code, out, errOut := run(t, "", "publish", "--config", file, "--topic", "$aws/things/gw/shadow/update", "--message", "x")
	if code != exitOK || !strings.HasPrefix(out, "queued new/") {
		t.Errorf("with a route that allows $: code %d, stdout %q, stderr %q; want it queued", code, out, errOut)
	}
}

// The pickup checks for $ after it adds publish.topic_prefix, so publish
// checks the topic with the prefix too.
func TestPublish_DollarTopicWithPrefix(t *testing.T) {
	file, _ := testConfig(t, "publish:\n  topic_prefix: site1/\n")
	code, out, errOut := run(t, "", "publish", "--config", file, "--topic", "$x/y", "--message", "x")
	if code != exitOK || !strings.HasPrefix(out, "queued new/") {
		t.Errorf("site1/$x/y: code %d, stdout %q, stderr %q; want it queued", code, out, errOut)
	}

	file, dir := testConfig(t, "publish:\n  topic_prefix: $aws/things/gw/\n"+
		"routes:\n  - match: \"elsewhere/**\"\n    allow_dollar: true\n")
	code, _, errOut = run(t, "", "publish", "--config", file, "--topic", "shadow/update", "--message", "x")
	if code != exitUsage {
		t.Errorf("$aws/things/gw/shadow/update: code %d, stderr %q; want %d", code, errOut, exitUsage)
	}
	if !strings.Contains(errOut, "topic_prefix") || !strings.Contains(errOut, "allow_dollar") {
		t.Errorf("stderr %q does not name publish.topic_prefix and allow_dollar", errOut)
	}
	if entries, _ := os.ReadDir(filepath.Join(dir, "spool", "new")); len(entries) != 0 {
		t.Errorf("new/ has %v, want nothing", entries)
	}
}

// The topic prefix counts towards the MQTT limit of 65535 bytes, as the
// pickup counts it.
func TestPublish_TopicTooLongWithPrefix(t *testing.T) {
	file, dir := testConfig(t, "publish:\n  topic_prefix: site1/\n")
	topic := strings.Repeat("t", 65535-len("site1/")+1)
	code, _, errOut := run(t, "", "publish", "--config", file, "--topic", topic, "--message", "x")
	if code != exitUsage || !strings.Contains(errOut, "topic_prefix") {
		t.Errorf("code %d, stderr %q; want %d naming publish.topic_prefix", code, errOut, exitUsage)
	}
	if entries, _ := os.ReadDir(filepath.Join(dir, "spool", "new")); len(entries) != 0 {
		t.Errorf("new/ has %v, want nothing", entries)
	}
}

// With --spool-dir beside --config, the configuration still gives the
// routes and defaults that the topic is checked against.
func TestPublish_SpoolDirWithConfigChecksTopic(t *testing.T) {
	file, dir := testConfig(t, "routes:\n  - match: '*.jsonl'\n    topic: x\n")
	code, _, errOut := run(t, "", "publish", "--config", file, "--spool-dir", filepath.Join(dir, "spool"), "--message", "x")
	if code != exitUsage || !strings.Contains(errOut, "missing --topic") {
		t.Errorf("code %d, stderr %q; want %d naming the missing topic", code, errOut, exitUsage)
	}
}

// A message without --topic that no route or default would give a topic
// is refused before it reaches new/, where the pickup would fail it.
func TestPublish_RouteWithoutTopicExit2(t *testing.T) {
	file, dir := testConfig(t, "routes:\n  - match: '*.msg'\n    qos: 1\n  - match: '*.jsonl'\n    topic: x\n")
	code, _, errOut := run(t, "", "publish", "--config", file, "--message", "x")
	if code != exitUsage || !strings.Contains(errOut, "missing --topic") || !strings.Contains(errOut, ".msg") {
		t.Errorf("code %d, stderr %q; want %d naming the missing topic and the file name", code, errOut, exitUsage)
	}
	if entries, _ := os.ReadDir(filepath.Join(dir, "spool", "new")); len(entries) != 0 {
		t.Errorf("new/ has %v, want nothing", entries)
	}
}

// An empty --topic is a mistake in the call (an unset shell variable,
// say), not a request for publish.default_topic.
func TestPublish_EmptyTopicExit2(t *testing.T) {
	file, dir := testConfig(t, "publish:\n  default_topic: fallback\n")
	code, _, errOut := run(t, "", "publish", "--config", file, "--topic", "", "--message", "x")
	if code != exitUsage || !strings.Contains(errOut, "--topic is empty") {
		t.Errorf("code %d, stderr %q; want %d saying --topic is empty", code, errOut, exitUsage)
	}
	if entries, _ := os.ReadDir(filepath.Join(dir, "spool", "new")); len(entries) != 0 {
		t.Errorf("new/ has %v, want nothing", entries)
	}
}

func TestPublish_BadWaitAndQoSExit2(t *testing.T) {
	for _, flags := range [][]string{{"--wait", "-5s"}, {"--qos", "-1"}} {
		args := append([]string{"publish", "--spool-dir", t.TempDir(), "--topic", "a", "--message", "x"}, flags...)
		code, _, errOut := run(t, "", args...)
		if code != exitUsage || !strings.Contains(errOut, flags[0]) {
			t.Errorf("publish %v: code %d, stderr %q; want %d naming the flag", flags, code, errOut, exitUsage)
		}
	}
}

// endlessReader returns zero bytes and counts them. It fails past 16 MiB,
// so that a reader without a limit stops instead of filling the memory.
type endlessReader struct{ read int64 }

func (r *endlessReader) Read(p []byte) (int, error) {
	if r.read > 16<<20 {
		return 0, errors.New("endless input read past 16 MiB")
	}
	clear(p)
	r.read += int64(len(p))
	return len(p), nil
}

func TestPublish_PayloadOverLimitExits2(t *testing.T) {
	file, dir := testConfig(t, "publish:\n  max_message_bytes: 1KiB\n")
	spoolDir := filepath.Join(dir, "spool")
	big := filepath.Join(dir, "big.bin")
	if err := os.WriteFile(big, make([]byte, 2000), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := map[string]struct {
		stdin string
		args  []string
		want  []string
	}{
		"file": {"", []string{"--config", file, "--topic", "a", big}, []string{"is 2000 bytes", "limit of 1024 bytes", file}},
		"stdin": {strings.Repeat("x", 1025), []string{"--config", file, "--topic", "a", "-"},
			[]string{"standard input", "limit of 1024 bytes"}},
		"message": {"", []string{"--config", file, "--topic", "a", "--message", strings.Repeat("x", 1025)},
			[]string{"is 1025 bytes", "limit of 1024 bytes"}},
		"topic and payload": {strings.Repeat("x", 1024), []string{"--config", file, "--topic", "a", "-"},
			[]string{"message is 1025 bytes", "limit of 1024 bytes"}},
		"default limit": {strings.Repeat("x", 1<<20+1), []string{"--spool-dir", spoolDir, "--topic", "a", "-"},
			[]string{"limit of 1048576 bytes", "default", "--config"}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			code, out, errOut := run(t, tc.stdin, append([]string{"publish"}, tc.args...)...)
			if code != exitUsage {
				t.Errorf("code %d, stdout %q, stderr %q; want %d", code, out, errOut, exitUsage)
			}
			for _, want := range append(tc.want, "publish.max_message_bytes", "split the payload") {
				if !strings.Contains(errOut, want) {
					t.Errorf("stderr %q does not contain %q", errOut, want)
				}
			}
		})
	}
	for _, sub := range []string{"new", "tmp"} {
		if entries, _ := os.ReadDir(filepath.Join(spoolDir, sub)); len(entries) != 0 {
			t.Errorf("%s/ has %v, want nothing", sub, entries)
		}
	}

	t.Setenv("MQSPOOL_PUBLISH_MAX_MESSAGE_BYTES", "512")
	code, _, errOut := run(t, strings.Repeat("x", 600), "publish", "--config", file, "--topic", "a", "-")
	if code != exitUsage {
		t.Errorf("limit from the environment: code %d, want %d", code, exitUsage)
	}
	if !strings.Contains(errOut, "limit of 512 bytes (publish.max_message_bytes from MQSPOOL_PUBLISH_MAX_MESSAGE_BYTES)") {
		t.Errorf("limit from the environment: stderr %q does not name the variable", errOut)
	}
	os.Unsetenv("MQSPOOL_PUBLISH_MAX_MESSAGE_BYTES")

	// A message of exactly the limit is queued.
	code, _, errOut = run(t, strings.Repeat("x", 1023), "publish", "--config", file, "--topic", "a", "-")
	if code != exitOK {
		t.Errorf("message of 1024 bytes: code %d, stderr %q; want 0", code, errOut)
	}
}

// A message without --topic gets its topic from the first matching route
// or from publish.default_topic, and publish counts that topic as the
// daemon does.
func TestPublish_RoutedTopicCountsTowardsLimit(t *testing.T) {
	long := strings.Repeat("r", 100)
	cases := map[string]struct {
		config string
		topic  string
	}{
		"route topic": {"publish:\n  max_message_bytes: 1KiB\n" +
			"routes:\n  - match: 'elsewhere/**'\n    topic: x\n  - match: '*.msg'\n    topic: " + long + "\n", long},
		"default topic": {"publish:\n  max_message_bytes: 1KiB\n  default_topic: " + long + "\n  topic_prefix: p/\n" +
			"routes:\n  - match: '*.msg'\n    qos: 1\n", "p/" + long},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			file, dir := testConfig(t, tc.config)

			// The payload fits alone and with the topic "x", but not with
			// the routed topic.
			payload := strings.Repeat("x", 1000)
			code, out, errOut := run(t, payload, "publish", "--config", file, "-")
			if code != exitUsage {
				t.Errorf("code %d, stdout %q, stderr %q; want %d", code, out, errOut, exitUsage)
			}
			want := fmt.Sprintf("message is %d bytes with its topic %q", 1000+len(tc.topic), tc.topic)
			if !strings.Contains(errOut, want) {
				t.Errorf("stderr %q does not contain %q", errOut, want)
			}
			if entries, _ := os.ReadDir(filepath.Join(dir, "spool", "new")); len(entries) != 0 {
				t.Errorf("new/ has %v, want nothing", entries)
			}

			// --topic wins over the route, so the same payload fits.
			code, _, errOut = run(t, payload, "publish", "--config", file, "--topic", "a", "-")
			if code != exitOK {
				t.Errorf("with --topic a: code %d, stderr %q; want 0", code, errOut)
			}
		})
	}
}

func TestPublish_EndlessInputReadsUpToLimit(t *testing.T) {
	stdin := &endlessReader{}
	var out, errOut bytes.Buffer
	code := execute([]string{"publish", "--spool-dir", t.TempDir(), "--topic", "a", "-"}, stdin, &out, &errOut)
	if code != exitUsage {
		t.Errorf("code %d, stderr %q; want %d", code, errOut.String(), exitUsage)
	}
	// One byte past the default limit shows that the payload is too large.
	if limit := int64(1<<20) + 1; stdin.read > limit {
		t.Errorf("read %d bytes of standard input, want at most %d", stdin.read, limit)
	}
}

func TestPublish_BadConfigWritesNothing(t *testing.T) {
	badQoS, _ := testConfig(t, "publish:\n  qos: 7\n")
	for name, config := range map[string]string{"missing file": "/nonexistent.yaml", "publish.qos 7": badQoS} {
		t.Run(name, func(t *testing.T) {
			spoolDir := t.TempDir()
			for _, wait := range []string{"0", "1s"} {
				code, out, errOut := run(t, "", "publish", "--config", config, "--spool-dir", spoolDir,
					"--topic", "x/y", "--message", "a", "--wait", wait)
				if code != exitUsage {
					t.Errorf("--wait %s: code %d, stderr %q; want %d", wait, code, errOut, exitUsage)
				}
				if out != "" {
					t.Errorf("--wait %s: stdout %q, want nothing queued", wait, out)
				}
			}
			if entries, _ := os.ReadDir(filepath.Join(spoolDir, "new")); len(entries) != 0 {
				t.Errorf("new/ has %v, want nothing", entries)
			}
		})
	}
}

func TestPublish_MissingSpoolDirExits1(t *testing.T) {
	code, _, errOut := run(t, "", "publish", "--spool-dir", "/nonexistent/spool", "--topic", "a", "--message", "x")
	if code != exitFailure || !strings.Contains(errOut, "/nonexistent/spool not found") {
		t.Errorf("code %d, stderr %q; want 1 and the path", code, errOut)
	}
}

// status reaches the daemon through control.socket even when another key
// of the file is invalid, and warns that a restart would fail.
func TestStatus_InvalidConfigStillFindsSocket(t *testing.T) {
	file, dir := testConfig(t, "throttle:\n  messages_per_second: -5\n")
	code, _, errOut := run(t, "", "status", "--config", file)

	if code != exitFailure {
		t.Errorf("code %d, want %d (no daemon), not a configuration error", code, exitFailure)
	}
	for _, want := range []string{"a restart or reload would fail", "throttle.messages_per_second",
		filepath.Join(dir, "ctl.sock")} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr %q lacks %q", errOut, want)
		}
	}
}

// A file that does not parse has no control.socket to use, so the error
// names the flag that reaches the daemon anyway.
func TestStatus_YAMLErrorSuggestsSocketFlag(t *testing.T) {
	file, _ := testConfig(t, "log:\n  level: [info\n")
	code, _, errOut := run(t, "", "status", "--config", file)

	if code != exitUsage {
		t.Errorf("code %d, want %d for a file that does not parse", code, exitUsage)
	}
	for _, want := range []string{"fix the YAML syntax", "--socket"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr %q lacks %q", errOut, want)
		}
	}
}

// An empty MQSPOOL_CONTROL_SOCKET counts as unset, as systemd sets it
// for Environment=MQSPOOL_CONTROL_SOCKET= in a drop-in, so status still
// finds control.socket in a file with an error.
func TestStatus_InvalidConfigEmptySocketEnv(t *testing.T) {
	t.Setenv("MQSPOOL_CONTROL_SOCKET", "")
	file, dir := testConfig(t, "throttle:\n  messages_per_second: -5\n")
	code, _, errOut := run(t, "", "status", "--config", file)

	if code != exitFailure {
		t.Errorf("code %d, want %d (no daemon), not a configuration error", code, exitFailure)
	}
	if want := filepath.Join(dir, "ctl.sock"); !strings.Contains(errOut, want) {
		t.Errorf("stderr %q lacks %q", errOut, want)
	}
}

// Without a config file, an empty MQSPOOL_CONTROL_SOCKET leaves the
// default socket.
func TestStatus_NoConfigEmptySocketEnv(t *testing.T) {
	if _, err := os.Stat(config.DefaultFile); err == nil {
		t.Skipf("%s exists on this machine", config.DefaultFile)
	}
	t.Setenv("MQSPOOL_CONTROL_SOCKET", "")
	code, _, errOut := run(t, "", "status")

	if code != exitFailure {
		t.Errorf("code %d, want %d (no daemon)", code, exitFailure)
	}
	if !strings.Contains(errOut, config.DefaultControlSocket) {
		t.Errorf("stderr %q lacks the default socket %q", errOut, config.DefaultControlSocket)
	}
}

func TestStatus_NoDaemonExits1(t *testing.T) {
	file, _ := testConfig(t, "")
	code, _, errOut := run(t, "", "status", "--config", file)
	if code != exitFailure {
		t.Errorf("code %d, want %d", code, exitFailure)
	}
	if !strings.Contains(errOut, "no mqspool daemon is listening") {
		t.Errorf("stderr %q does not say no daemon listens", errOut)
	}
	if code, _, _ := run(t, "", "ctl", "pause", "--config", file); code != exitFailure {
		t.Errorf("ctl pause without daemon: code %d, want %d", code, exitFailure)
	}
	if code, _, _ := run(t, "", "ctl", "throttle", "fast", "--config", file); code != exitUsage {
		t.Errorf("ctl throttle with a bad rate: code %d, want %d", code, exitUsage)
	}
}

// The control socket flag is --control-socket to run and --socket to the
// client commands; each command takes both spellings.
func TestSocketFlag_BothSpellings(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "other.sock")
	for _, args := range [][]string{
		{"status", "--control-socket", sock},
		{"ctl", "pause", "--control-socket=" + sock},
		{"publish", "--topic", "a/b", "--message", "x", "--wait", "1ms", "--control-socket", sock, "--spool-dir", t.TempDir()},
	} {
		code, _, errOut := run(t, "", args...)
		if code == exitUsage || !strings.Contains(errOut, sock) {
			t.Errorf("%v: code %d, stderr %q, want the socket %s used", args, code, errOut, sock)
		}
	}

	code, _, errOut := run(t, "", "run", "--socket", sock, "--config", filepath.Join(t.TempDir(), "missing.yaml"))
	if strings.Contains(errOut, "unknown flag") {
		t.Errorf("run --socket: code %d, stderr %q, want the flag taken as --control-socket", code, errOut)
	}
}

func TestSpool_StatsAndLockedDatabase(t *testing.T) {
	file, dir := testConfig(t, "")
	sp, err := spool.Open(spool.Options{Path: filepath.Join(dir, "spool.db")})
	if err != nil {
		t.Fatal(err)
	}
	code, _, errOut := run(t, "", "spool", "stats", "--config", file)
	if code != exitFailure || !strings.Contains(errOut, "stop the running daemon") {
		t.Errorf("stats on a held database: code %d, stderr %q; want 1 and a hint", code, errOut)
	}
	sp.Close()

	code, out, errOut := run(t, "", "spool", "stats", "--config", file)
	if code != exitOK || !strings.Contains(out, "messages:  0") {
		t.Errorf("stats: code %d, stdout %q, stderr %q", code, out, errOut)
	}
}

func TestSpool_Compact(t *testing.T) {
	file, dir := testConfig(t, "")
	db := filepath.Join(dir, "spool.db")
	sp, err := spool.Open(spool.Options{Path: db})
	if err != nil {
		t.Fatal(err)
	}
	msg := message.Message{Topic: "c/1", Payload: []byte(strings.Repeat("x", 4096)), QoS: 1}
	var files []spool.FileBatch
	var changes []state.Change
	for i := range 3000 {
		files = append(files, spool.FileBatch{ID: spool.FileID{Ino: uint64(i + 1), Name: "m.msg"}, Messages: []message.Message{msg}})
		changes = append(changes, state.Change{Kind: state.ChangeDelivered, Seq: uint64(i + 1)})
	}
	if _, err := sp.Append(files); err != nil {
		t.Fatal(err)
	}
	if err := sp.Commit(changes[:2999]); err != nil {
		t.Fatal(err)
	}

	code, _, errOut := run(t, "", "spool", "compact", "--config", file)
	if code != exitFailure || !strings.Contains(errOut, "stop the running daemon") {
		t.Errorf("compact on a held database: code %d, stderr %q; want 1 and a hint", code, errOut)
	}
	sp.Close()
	before, _ := os.Stat(db)

	code, out, errOut := run(t, "", "spool", "compact", "--config", file)
	if code != exitOK || !strings.Contains(out, "1 messages queued") {
		t.Fatalf("compact: code %d, stdout %q, stderr %q", code, out, errOut)
	}
	after, _ := os.Stat(db)
	if after.Size()*4 > before.Size() {
		t.Errorf("spool.db went from %d to %d bytes, want at most a quarter", before.Size(), after.Size())
	}
	code, out, _ = run(t, "", "spool", "stats", "--config", file)
	if code != exitOK || !strings.Contains(out, "messages:  1") {
		t.Errorf("stats after compact: code %d, stdout %q", code, out)
	}
}

// Commands that never connect work without broker.urls; run and config
// validate still require it.
func TestOfflineCommands_NeedNoBrokerURLs(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "mqspool.yaml")
	text := "spool:\n  dir: " + filepath.Join(dir, "spool") + "\n  db: " + filepath.Join(dir, "spool.db") + "\n" +
		"control:\n  socket: " + filepath.Join(dir, "ctl.sock") + "\n"
	if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "spool"), 0o755); err != nil {
		t.Fatal(err)
	}
	sp, err := spool.Open(spool.Options{Path: filepath.Join(dir, "spool.db")})
	if err != nil {
		t.Fatal(err)
	}
	sp.Close()

	for _, args := range [][]string{
		{"spool", "stats", "--config", file},
		{"publish", "--config", file, "--topic", "a", "--message", "x"},
	} {
		if code, out, errOut := run(t, "", args...); code != exitOK {
			t.Errorf("mqspool %v: code %d, stdout %q, stderr %q; want 0", args[:2], code, out, errOut)
		}
	}
	if code, _, errOut := run(t, "", "status", "--config", file); code != exitFailure || !strings.Contains(errOut, "no mqspool daemon is listening") {
		t.Errorf("status: code %d, stderr %q; want 1 because no daemon listens", code, errOut)
	}
	code, _, errOut := run(t, "", "config", "validate", "--config", file)
	if code != exitUsage || !strings.Contains(errOut, "broker.urls: missing") {
		t.Errorf("config validate: code %d, stderr %q; want 2 and broker.urls missing", code, errOut)
	}
}

func TestSpool_RequeueFailed(t *testing.T) {
	file, dir := testConfig(t, "")
	failed := filepath.Join(dir, "spool", "failed", "site1")
	if err := os.MkdirAll(failed, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(failed, "r.json"), []byte("{}"), 0o644)
	os.WriteFile(filepath.Join(failed, "r.json.reason"), []byte("why"), 0o644)
	if err := os.Symlink("/etc/hostname", filepath.Join(failed, "link.txt")); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(dir, "spool", "new"), 0o755)

	code, out, errOut := run(t, "", "spool", "requeue-failed", "--config", file)
	if code != exitOK || !strings.Contains(out, "requeued 2 files") {
		t.Fatalf("code %d, stdout %q, stderr %q", code, out, errOut)
	}
	if _, err := os.Stat(filepath.Join(dir, "spool", "new", "site1", "r.json")); err != nil {
		t.Errorf("file not back in new/: %v", err)
	}
	if _, err := os.Stat(filepath.Join(failed, "r.json.reason")); !os.IsNotExist(err) {
		t.Errorf("reason file left behind: %v", err)
	}
}

func TestSpool_RequeueFailedWithoutFailedDir(t *testing.T) {
	file, _ := testConfig(t, "")
	code, out, errOut := run(t, "", "spool", "requeue-failed", "--config", file)
	if code != exitOK {
		t.Errorf("code %d, stderr %q; want 0 for a spool directory without failed/", code, errOut)
	}
	if out != "requeued 0 files\n" {
		t.Errorf("stdout %q, want 0 files requeued", out)
	}
}

func TestSpool_RequeueFailedWithoutSpoolDir(t *testing.T) {
	file, dir := testConfig(t, "")
	if err := os.Remove(filepath.Join(dir, "spool")); err != nil {
		t.Fatal(err)
	}
	code, _, errOut := run(t, "", "spool", "requeue-failed", "--config", file)
	if code != exitFailure {
		t.Errorf("code %d, want 1 for a missing spool directory", code)
	}
	if !strings.Contains(errOut, "spool directory "+filepath.Join(dir, "spool")+" not found: check spool.dir") {
		t.Errorf("stderr %q, want the missing spool directory and the setting to check", errOut)
	}
}

// writeFiles writes each path, relative to dir, with its content.
func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for rel, content := range files {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestSpool_RequeueFailedNameEndingInReason(t *testing.T) {
	file, dir := testConfig(t, "")
	spoolDir := filepath.Join(dir, "spool")
	writeFiles(t, spoolDir, map[string]string{
		"failed/data.reason":        "payload",
		"failed/data.reason.reason": "why",
		"failed/orphan.reason":      "why, for a deleted file",
	})
	os.MkdirAll(filepath.Join(spoolDir, "new"), 0o755)

	code, out, errOut := run(t, "", "spool", "requeue-failed", "--config", file)
	if code != exitOK {
		t.Fatalf("code %d, stdout %q, stderr %q; want 0", code, out, errOut)
	}
	if !strings.Contains(out, "requeued 1 file\n") {
		t.Errorf("stdout %q, want 1 file requeued", out)
	}
	if data, err := os.ReadFile(filepath.Join(spoolDir, "new", "data.reason")); err != nil || string(data) != "payload" {
		t.Errorf("new/data.reason: %q, %v; want the failed file", data, err)
	}
	if _, err := os.Lstat(filepath.Join(spoolDir, "failed", "data.reason.reason")); !os.IsNotExist(err) {
		t.Errorf("reason file of data.reason left behind: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(spoolDir, "failed", "orphan.reason")); err != nil {
		t.Errorf("reason file without its file was not kept in failed/: %v", err)
	}
	if !strings.Contains(out, "kept "+filepath.Join(spoolDir, "failed", "orphan.reason")) {
		t.Errorf("stdout %q does not name the kept reason file", out)
	}
}

func TestSpool_RequeueFailedKeepsRecords(t *testing.T) {
	file, dir := testConfig(t, "")
	spoolDir := filepath.Join(dir, "spool")
	record := "spool-00000000000000000064.record"
	renamed := "spool-00000000000000000064.1.record"
	writeFiles(t, spoolDir, map[string]string{
		"failed/" + record:              "\x01binary",
		"failed/" + record + ".reason":  "stored record is unreadable",
		"failed/" + renamed:             "\x01binary",
		"failed/" + renamed + ".reason": "stored record is unreadable",
		"failed/site1/data.record":      "a producer's file",
		"new/.keep":                     "",
	})

	code, out, errOut := run(t, "", "spool", "requeue-failed", "--config", file)
	if code != exitOK {
		t.Fatalf("code %d, stdout %q, stderr %q; want 0", code, out, errOut)
	}
	if !strings.Contains(out, "requeued 1 file\n") {
		t.Errorf("stdout %q, want only the producer's file requeued", out)
	}
	for _, name := range []string{record, record + ".reason", renamed, renamed + ".reason"} {
		if _, err := os.Lstat(filepath.Join(spoolDir, "failed", name)); err != nil {
			t.Errorf("failed/%s was not kept: %v", name, err)
		}
	}
	for _, name := range []string{record, renamed} {
		if !strings.Contains(out, "kept "+filepath.Join(spoolDir, "failed", name)) {
			t.Errorf("stdout %q does not name the kept record %s", out, name)
		}
	}
	if _, err := os.Lstat(filepath.Join(spoolDir, "new", "site1", "data.record")); err != nil {
		t.Errorf("producer's data.record was not requeued: %v", err)
	}
}

func TestSpool_RequeueFailedContinuesPastCollisions(t *testing.T) {
	file, dir := testConfig(t, "")
	spoolDir := filepath.Join(dir, "spool")
	writeFiles(t, spoolDir, map[string]string{
		"failed/x/a":        "a",
		"failed/x/b":        "b",
		"failed/x/b.reason": "why b",
		"failed/x/c":        "c",
		"failed/y/d":        "d",
		"failed/z":          "z",
		"new/x/b":           "other b",
		"new/y/d":           "other d",
	})

	code, out, errOut := run(t, "", "spool", "requeue-failed", "--config", file)
	if code != exitFailure {
		t.Errorf("code %d, want %d", code, exitFailure)
	}
	if !strings.Contains(out, "requeued 3 files") {
		t.Errorf("stdout %q, want 3 files requeued", out)
	}
	for _, want := range []string{filepath.Join(spoolDir, "new", "x", "b"), filepath.Join(spoolDir, "new", "y", "d"), "2 files stay in failed/", "move or remove"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr %q does not contain %q", errOut, want)
		}
	}
	for _, rel := range []string{"new/x/a", "new/x/c", "new/z", "failed/x/b", "failed/x/b.reason", "failed/y/d"} {
		if _, err := os.Lstat(filepath.Join(spoolDir, rel)); err != nil {
			t.Errorf("%s: %v", rel, err)
		}
	}
	if data, _ := os.ReadFile(filepath.Join(spoolDir, "new", "x", "b")); string(data) != "other b" {
		t.Errorf("new/x/b = %q, want the file that was there", data)
	}
}

// spoolWithMessages creates the database db with n queued messages.
func spoolWithMessages(t *testing.T, db string, n int) {
	t.Helper()
	sp, err := spool.Open(spool.Options{Path: db})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	var msgs []message.Message
	for i := range n {
		msgs = append(msgs, message.Message{Topic: fmt.Sprintf("s/%d", i), Payload: []byte("p"), QoS: 1})
	}
	if _, err := sp.Append([]spool.FileBatch{{ID: spool.FileID{Ino: 1, Name: "a.jsonl"}, Messages: msgs}}); err != nil {
		t.Fatal(err)
	}
}

func TestSalvage_MissingFileNamesFix(t *testing.T) {
	file, dir := testConfig(t, "")
	missing := filepath.Join(dir, "spool.db.corrupt-missing")
	code, _, errOut := run(t, "", "spool", "salvage", "--config", file, missing)

	if code != exitFailure {
		t.Errorf("code %d, want %d", code, exitFailure)
	}
	if strings.Count(errOut, missing) != 1 || !strings.Contains(errOut, "renamed aside") {
		t.Errorf("stderr %q, want the path once and the fix", errOut)
	}
}

// A device, a directory or an empty file is refused before bbolt and
// the page scan try it, with the kind of file in the error and nothing
// else on stderr.
func TestSalvage_RejectsFileThatHoldsNoDatabase(t *testing.T) {
	file, dir := testConfig(t, "")
	empty := filepath.Join(dir, "empty.db")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		path string
		code int
		want string
	}{
		{os.DevNull, exitUsage, "is a device, not a database file"},
		{dir, exitUsage, "is a directory, not a database file"},
		{empty, exitFailure, "is empty"},
	}
	for _, tc := range cases {
		code, _, errOut := run(t, "", "spool", "salvage", "--config", file, tc.path)
		if code != tc.code || !strings.Contains(errOut, tc.want) || !strings.Contains(errOut, "renamed aside") {
			t.Errorf("salvage %s: code %d, stderr %q; want %d, %q and the fix", tc.path, code, errOut, tc.code, tc.want)
		}
		if strings.Count(errOut, "\n") != 1 {
			t.Errorf("salvage %s: stderr %q, want the error alone", tc.path, errOut)
		}
	}
	if entries, _ := os.ReadDir(filepath.Join(dir, "spool", "new")); len(entries) != 0 {
		t.Errorf("new/ has %v, want nothing", entries)
	}
}

func TestSalvage_CreatesTmpAndNew(t *testing.T) {
	file, dir := testConfig(t, "")
	aside := filepath.Join(dir, "spool.db.corrupt-20260101T000000Z")
	spoolWithMessages(t, aside, 2)

	code, out, errOut := run(t, "", "spool", "salvage", "--config", file, aside)
	if code != exitOK {
		t.Fatalf("code %d, stdout %q, stderr %q; want 0", code, out, errOut)
	}
	entries, err := os.ReadDir(filepath.Join(dir, "spool", "new"))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 {
		t.Errorf("%d files in new/, want 2", len(entries))
	}
}

// Stored topics carry publish.topic_prefix, so salvage leaves it out of
// the files it writes, and the pickup adds it once.
func TestSalvage_TopicWithoutPrefix(t *testing.T) {
	file, dir := testConfig(t, "publish:\n  topic_prefix: s/\n")
	aside := filepath.Join(dir, "spool.db.corrupt-20260101T000000Z")
	spoolWithMessages(t, aside, 1)

	code, out, errOut := run(t, "", "spool", "salvage", "--config", file, aside)
	if code != exitOK {
		t.Fatalf("code %d, stdout %q, stderr %q; want 0", code, out, errOut)
	}
	newDir := filepath.Join(dir, "spool", "new")
	entries, err := os.ReadDir(newDir)
	if err != nil || len(entries) != 1 {
		t.Fatalf("new/ holds %v (%v), want one file", entries, err)
	}
	data, err := os.ReadFile(filepath.Join(newDir, entries[0].Name()))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(data), "Topic: 0\n") {
		t.Errorf("salvaged file starts %q, want the stored topic s/0 without the prefix s/", data)
	}
}

// salvage takes the spool directory only from the configuration, so the
// error for a missing one names the file or variable that set it.
func TestSalvage_MissingSpoolDirNamesSource(t *testing.T) {
	file, dir := testConfig(t, "")
	aside := filepath.Join(dir, "spool.db.corrupt-20260101T000000Z")
	spoolWithMessages(t, aside, 1)
	if err := os.Remove(filepath.Join(dir, "spool")); err != nil {
		t.Fatal(err)
	}

	code, _, errOut := run(t, "", "spool", "salvage", "--config", file, aside)
	if code != exitFailure {
		t.Errorf("code %d, want %d", code, exitFailure)
	}
	if want := "check spool.dir in " + file; !strings.Contains(errOut, want) {
		t.Errorf("stderr %q does not contain %q", errOut, want)
	}
	if strings.Contains(errOut, "--spool-dir") {
		t.Errorf("stderr %q names --spool-dir, which salvage does not have", errOut)
	}

	missing := filepath.Join(dir, "elsewhere")
	t.Setenv("MQSPOOL_SPOOL_DIR", missing)
	_, _, errOut = run(t, "", "spool", "salvage", "--config", file, aside)
	if want := missing + " not found: check MQSPOOL_SPOOL_DIR"; !strings.Contains(errOut, want) {
		t.Errorf("with MQSPOOL_SPOOL_DIR: stderr %q does not contain %q", errOut, want)
	}
}

func TestSalvage_RejectsConfiguredDatabase(t *testing.T) {
	file, dir := testConfig(t, "")
	db := filepath.Join(dir, "spool.db")
	spoolWithMessages(t, db, 2)
	writeFiles(t, filepath.Join(dir, "spool"), map[string]string{"tmp/.keep": "", "new/.keep": ""})
	// Another path to the same file is rejected too.
	link := filepath.Join(dir, "link.db")
	if err := os.Link(db, link); err != nil {
		t.Fatal(err)
	}

	for _, path := range []string{db, link} {
		code, _, errOut := run(t, "", "spool", "salvage", "--config", file, path)
		if code != exitUsage {
			t.Errorf("salvage %s: code %d, want %d", path, code, exitUsage)
		}
		if !strings.Contains(errOut, "the daemon sends the messages in it itself") {
			t.Errorf("salvage %s: stderr %q does not say why", path, errOut)
		}
	}
	if entries, _ := os.ReadDir(filepath.Join(dir, "spool", "new")); len(entries) != 1 {
		t.Errorf("new/ has %v, want only .keep", entries)
	}
}

func TestSalvage_TwiceKeepsEveryMessage(t *testing.T) {
	file, dir := testConfig(t, "")
	first := filepath.Join(dir, "spool.db.corrupt-1")
	second := filepath.Join(dir, "spool.db.corrupt-2")
	// Both databases number their messages from 1.
	spoolWithMessages(t, first, 3)
	spoolWithMessages(t, second, 2)
	writeFiles(t, filepath.Join(dir, "spool"), map[string]string{"tmp/.keep": ""})

	for _, aside := range []string{first, second} {
		code, out, errOut := run(t, "", "spool", "salvage", "--config", file, aside)
		if code != exitOK {
			t.Fatalf("salvage %s: code %d, stdout %q, stderr %q; want 0", aside, code, out, errOut)
		}
	}
	entries, err := os.ReadDir(filepath.Join(dir, "spool", "new"))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 5 {
		t.Errorf("%d files in new/, want 5: %v", len(entries), entries)
	}
}

func TestPrintableTopic_QuotesControlCharacters(t *testing.T) {
	cases := map[string]string{
		"site1/temp":   "site1/temp",
		"gebäude/temp": "gebäude/temp",
		"a\x1b[31mred": `"a\x1b[31mred"`,
		"tab\there":    `"tab\there"`,
	}
	for topic, want := range cases {
		if got := printableTopic(topic); got != want {
			t.Errorf("printableTopic(%q) = %s, want %s", topic, got, want)
		}
	}
}

func TestShellQuote(t *testing.T) {
	cases := map[string]string{
		"/etc/mqspool/mqspool.yaml": "/etc/mqspool/mqspool.yaml",
		"/tmp/my config.yaml":       "'/tmp/my config.yaml'",
		"/tmp/it's.yaml":            `'/tmp/it'\''s.yaml'`,
		"":                          "''",
	}
	for in, want := range cases {
		if got := shellQuote(in); got != want {
			t.Errorf("shellQuote(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestSpoolLs_Pages(t *testing.T) {
	file, dir := testConfig(t, "")
	sp, err := spool.Open(spool.Options{Path: filepath.Join(dir, "spool.db")})
	if err != nil {
		t.Fatal(err)
	}
	var msgs []message.Message
	for i := range 5 {
		msgs = append(msgs, message.Message{Topic: fmt.Sprintf("ls/%d", i), Payload: []byte("p"), QoS: 1})
	}
	if _, err := sp.Append([]spool.FileBatch{{ID: spool.FileID{Ino: 1, Name: "a.jsonl"}, Messages: msgs}}); err != nil {
		t.Fatal(err)
	}
	sp.Close()

	// Follow the next-page hints and collect the topics.
	var topics []string
	args := []string{"spool", "ls", "--config", file, "--limit", "2"}
	for pages := 0; ; pages++ {
		if pages > 5 {
			t.Fatal("more pages than messages")
		}
		code, out, errOut := run(t, "", args...)
		if code != exitOK {
			t.Fatalf("spool ls %v: code %d, stderr %q", args[1:], code, errOut)
		}
		var next string
		for _, line := range strings.Split(strings.TrimSpace(out), "\n")[1:] {
			if hint, ok := strings.CutPrefix(line, "next page: mqspool "); ok {
				next = hint
				continue
			}
			fields := strings.Fields(line)
			topics = append(topics, fields[len(fields)-1])
		}
		if next == "" {
			break
		}
		// The hint is run as given, so it must carry --config and --limit.
		args = strings.Fields(next)
	}
	if want := []string{"ls/0", "ls/1", "ls/2", "ls/3", "ls/4"}; !slices.Equal(topics, want) {
		t.Errorf("pages listed %v, want %v", topics, want)
	}

	// A page that ends exactly at the last message offers no next page.
	code, out, _ := run(t, "", "spool", "ls", "--config", file, "--limit", "5")
	if code != exitOK || strings.Contains(out, "next page") {
		t.Errorf("full page: code %d, stdout %q; want no next-page hint", code, out)
	}

	code, _, errOut := run(t, "", "spool", "ls", "--config", file, "--limit", "0")
	if code != exitUsage || !strings.Contains(errOut, "--limit 0 is invalid") {
		t.Errorf("--limit 0: code %d, stderr %q; want %d and the value named", code, errOut, exitUsage)
	}
}

func TestSpoolLs_AfterLargestSequenceIsEmpty(t *testing.T) {
	file, dir := testConfig(t, "")
	sp, err := spool.Open(spool.Options{Path: filepath.Join(dir, "spool.db")})
	if err != nil {
		t.Fatal(err)
	}
	m := message.Message{Topic: "ls/0", Payload: []byte("p"), QoS: 1}
	if _, err := sp.Append([]spool.FileBatch{{ID: spool.FileID{Ino: 1, Name: "a.msg"}, Messages: []message.Message{m}}}); err != nil {
		t.Fatal(err)
	}
	sp.Close()

	code, out, errOut := run(t, "", "spool", "ls", "--config", file, "--after", "18446744073709551615")
	if code != exitOK {
		t.Fatalf("code %d, stderr %q; want 0", code, errOut)
	}
	_, emptyPage, _ := run(t, "", "spool", "ls", "--config", file, "--after", "1")
	if out != emptyPage {
		t.Errorf("stdout %q, want the empty page %q", out, emptyPage)
	}
	if strings.Contains(out, "ls/0") {
		t.Errorf("stdout %q lists a message", out)
	}
}

func TestExplainSocketError_PermissionDenied(t *testing.T) {
	dial := &net.OpError{Op: "dial", Net: "unix", Err: os.NewSyscallError("connect", syscall.EACCES)}
	err := explainSocketError("/run/mqspool/mqspool.sock",
		fmt.Errorf("%w on /run/mqspool/mqspool.sock: %w: start it", control.ErrNoDaemon, dial))
	for _, want := range []string{"permission denied", "a daemon may be running", "run the command as root or as a member of", "docs/operations.md"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "no mqspool daemon is listening") || errors.Is(err, control.ErrNoDaemon) {
		t.Errorf("error %q still says no daemon listens", err)
	}

	other := fmt.Errorf("%w: %w", control.ErrNoDaemon, os.NewSyscallError("connect", syscall.ENOENT))
	if got := explainSocketError("/x.sock", other); got != other {
		t.Errorf("a missing socket became %v", got)
	}
}

// A real socket without permission for this user; root bypasses the
// permission check, so the test needs another user.
func TestStatus_SocketPermissionDenied(t *testing.T) {
	if !harness.RunUnprivileged(t) {
		return
	}
	sock := filepath.Join(t.TempDir(), "ctl.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := os.Chmod(sock, 0); err != nil {
		t.Fatal(err)
	}
	code, _, errOut := run(t, "", "status", "--socket", sock)
	if code != exitFailure || !strings.Contains(errOut, "a daemon may be running") {
		t.Errorf("code %d, stderr %q; want 1 and the permission problem", code, errOut)
	}
}

// A .msg header cannot hold a user property key with '=' or a value with
// a leading space, both of which a .jsonl line may set. Salvage writes
// such a message as .jsonl and goes on with the messages after it.
func TestSalvage_FallsBackToJSONL(t *testing.T) {
	file, dir := testConfig(t, "")
	aside := filepath.Join(dir, "spool.db.corrupt-20260101T000000Z")
	odd := message.Message{
		Topic: "s/1", Payload: []byte{0xff, 0}, QoS: 2, Retain: true, ExpirySeconds: 60,
		ContentType: " text", CorrelationData: []byte{1, 2},
		UserProperties: []message.UserProperty{{Key: "a=b", Value: "v"}, {Key: "k", Value: ""}},
	}
	msgs := []message.Message{
		{Topic: "s/0", Payload: []byte("p"), QoS: 1},
		odd,
		{Topic: "s/2", Payload: []byte("p"), QoS: 1},
	}
	sp, err := spool.Open(spool.Options{Path: aside})
	if err != nil {
		t.Fatal(err)
	}
	_, err = sp.Append([]spool.FileBatch{{ID: spool.FileID{Ino: 1, Name: "a.jsonl"}, Messages: msgs}})
	sp.Close()
	if err != nil {
		t.Fatal(err)
	}

	code, out, errOut := run(t, "", "spool", "salvage", "--config", file, aside)
	if code != exitOK {
		t.Fatalf("code %d, stdout %q, stderr %q; want 0", code, out, errOut)
	}
	newDir := filepath.Join(dir, "spool", "new")
	entries, err := os.ReadDir(newDir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if len(names) != 3 {
		t.Fatalf("new/ has %v, want 3 files", names)
	}
	if !strings.HasSuffix(names[1], "-00000000000000000002.jsonl") {
		t.Fatalf("second file is %s, want the message of seq 2 as .jsonl", names[1])
	}
	data, err := os.ReadFile(filepath.Join(newDir, names[1]))
	if err != nil {
		t.Fatal(err)
	}
	got, err := format.ParseJSONL(data)
	if err != nil {
		t.Fatalf("salvaged .jsonl does not parse: %v\n%s", err, data)
	}
	if len(got) != 1 {
		t.Fatalf("salvaged .jsonl has %d messages, want 1", len(got))
	}
	if !reflect.DeepEqual(got[0].Message, odd) {
		t.Errorf("salvaged message = %+v, want %+v", got[0].Message, odd)
	}
	if want := (format.Fields{Topic: true, QoS: true, Retain: true}); got[0].Fields != want {
		t.Errorf("salvaged fields = %+v, want %+v", got[0].Fields, want)
	}
}

// Compact leaves a damaged database alone and names the command that gets its
// messages back.
func TestSpool_CompactDamagedNamesSalvage(t *testing.T) {
	file, dir := testConfig(t, "")
	db := filepath.Join(dir, "spool.db")
	if err := os.WriteFile(db, make([]byte, 16384), 0o600); err != nil {
		t.Fatal(err)
	}

	code, _, errOut := run(t, "", "spool", "compact", "--config", file)
	if code != exitFailure || !strings.Contains(errOut, "mqspool spool salvage "+db+".damaged-copy") {
		t.Errorf("compact of a damaged database: code %d, stderr %q; want 1 and the salvage command", code, errOut)
	}
}

// Messages that the damage destroyed left no trace in "skipped", so the
// salvage compares what it found with the queue length the database
// records.
func TestSalvage_ComparesRecordedCount(t *testing.T) {
	file, dir := testConfig(t, "")
	aside := filepath.Join(dir, "spool.db.corrupt-20260101T000000Z")
	spoolWithMessages(t, aside, 2)

	code, out, _ := run(t, "", "spool", "salvage", "--config", file, aside)
	if code != exitOK || strings.Contains(out, "recorded") {
		t.Errorf("salvage of an intact file: code %d, stdout %q; want 0 and no count note", code, out)
	}

	db, err := bolt.Open(aside, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("meta")).Put([]byte("messages"), binary.BigEndian.AppendUint64(nil, 5))
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	_, out, _ = run(t, "", "spool", "salvage", "--config", file, aside)
	if !strings.Contains(out, "the database recorded 5 queued messages, so 3 were not found") {
		t.Errorf("stdout %q does not report the 3 messages missing from the 5 recorded", out)
	}
}

// Records that salvage found but could not decode are counted as
// skipped, so the comparison with the recorded queue length does not
// call them destroyed as well.
func TestSalvage_RecordedCountKeepsSkipped(t *testing.T) {
	file, dir := testConfig(t, "")
	aside := filepath.Join(dir, "spool.db.corrupt-20260101T000000Z")
	spoolWithMessages(t, aside, 5)
	db, err := bolt.Open(aside, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("messages"))
		k, _ := b.Cursor().First()
		return b.Put(k, []byte("not a record"))
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}

	code, out, errOut := run(t, "", "spool", "salvage", "--config", file, aside)
	if code != exitOK {
		t.Fatalf("salvage: code %d, stderr %q", code, errOut)
	}
	if !strings.Contains(out, "salvaged 4 messages") || !strings.Contains(out, "skipped 1 unreadable") {
		t.Fatalf("stdout %q, want 4 salvaged and 1 skipped", out)
	}
	if strings.Contains(out, "not found") {
		t.Errorf("stdout %q calls the skipped record not found", out)
	}
}

// A producer's user that may not write into the spool directory gets the
// failure and the fix, and leaves nothing behind in tmp/.
func TestPublish_PermissionDeniedNamesFix(t *testing.T) {
	if !harness.RunUnprivileged(t) {
		return
	}
	for _, locked := range []string{"tmp", "new"} {
		t.Run(locked, func(t *testing.T) {
			spoolDir := t.TempDir()
			for _, sub := range []string{"tmp", "new"} {
				if err := os.Mkdir(filepath.Join(spoolDir, sub), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.Chmod(filepath.Join(spoolDir, locked), 0o555); err != nil {
				t.Fatal(err)
			}
			code, _, errOut := run(t, "", "publish", "--spool-dir", spoolDir, "-t", "a/b", "--message", "x")

			if code != exitFailure {
				t.Errorf("code %d, want %d", code, exitFailure)
			}
			if !strings.Contains(errOut, "permission denied") {
				t.Errorf("stderr %q does not name the failure", errOut)
			}
			if !strings.Contains(errOut, "let this user write to tmp/ and new/ there") {
				t.Errorf("stderr %q does not name the fix", errOut)
			}
			if entries, _ := os.ReadDir(filepath.Join(spoolDir, "tmp")); len(entries) != 0 {
				t.Errorf("tmp/ not empty after the failed publish: %v", entries)
			}
		})
	}
}
