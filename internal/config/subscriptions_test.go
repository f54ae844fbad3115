package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoad_SubscriptionLimits(t *testing.T) {
	text := minimal + `
subscriptions:
  - filter: a/#
    dir: /tmp/inbox-a
  - filter: b/#
    dir: /tmp/inbox-b
    max_files: 0
    max_bytes: 1MiB
`
	l, err := Load(LoadOptions{File: writeFile(t, text), LookupEnv: noEnv})
	if err != nil {
		t.Fatal(err)
	}
	a, b := l.Config.Subscriptions[0], l.Config.Subscriptions[1]
	if a.MaxFiles != DefaultInboxMaxFiles || a.MaxBytes != DefaultInboxMaxBytes {
		t.Errorf("absent limits = %d files %d bytes, want the defaults", a.MaxFiles, a.MaxBytes)
	}
	if b.MaxFiles != 0 {
		t.Errorf("max_files 0 became %d, want 0 (unlimited)", b.MaxFiles)
	}
	if b.MaxBytes != 1<<20 {
		t.Errorf("max_bytes = %d, want 1MiB", b.MaxBytes)
	}
}

// A limit written with no value (YAML null) gets the default, as a null
// key elsewhere in the file does, and does not turn the limit off.
func TestLoad_SubscriptionLimitsNull(t *testing.T) {
	text := minimal + `
subscriptions:
  - filter: a/#
    dir: /tmp/inbox-a
    max_files:
    max_bytes: ~
`
	l, err := Load(LoadOptions{File: writeFile(t, text), LookupEnv: noEnv})
	if err != nil {
		t.Fatal(err)
	}
	s := l.Config.Subscriptions[0]
	if s.MaxFiles != DefaultInboxMaxFiles {
		t.Errorf("null max_files = %d, want the default %d", s.MaxFiles, DefaultInboxMaxFiles)
	}
	if s.MaxBytes != DefaultInboxMaxBytes {
		t.Errorf("null max_bytes = %d, want the default %d", s.MaxBytes, DefaultInboxMaxBytes)
	}
}

func TestLoad_SubscriptionRepeats(t *testing.T) {
	text := minimal + `
subscriptions:
  - {filter: a/#, dir: /tmp/inbox}
  - {filter: a/#, dir: /tmp/inbox/}
`
	_, err := Load(LoadOptions{File: writeFile(t, text), LookupEnv: noEnv})
	if err == nil {
		t.Fatal("repeated filter and dir accepted")
	}
	for _, want := range []string{"subscriptions[1].filter", "subscriptions[1].dir"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
}

func TestLoad_InboxInSpool(t *testing.T) {
	cases := []struct {
		name, spool, inbox, want string
	}{
		{"same dir", "/srv/spool", "/srv/spool/", `subscriptions[0].dir: "/srv/spool/" is inside spool.dir /srv/spool`},
		{"inside new", "/srv/spool", "/srv/spool/new/x", `subscriptions[0].dir: "/srv/spool/new/x" is inside spool.dir`},
		{"not clean", "/srv/spool", "/srv/other/../spool/x", `subscriptions[0].dir: "/srv/other/../spool/x" is inside spool.dir`},
		{"dots in name", "/srv/spool", "/srv/spool/..x", `subscriptions[0].dir: "/srv/spool/..x" is inside spool.dir`},
		{"spool in inbox", "/srv/in/spool", "/srv/in", `spool.dir: "/srv/in/spool" is inside subscriptions[0].dir /srv/in`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			text := minimal + "spool:\n  dir: " + tc.spool + "\nsubscriptions:\n  - {filter: a/#, dir: '" + tc.inbox + "'}\n"
			_, err := Load(LoadOptions{File: writeFile(t, text), LookupEnv: noEnv})
			if err == nil {
				t.Fatal("Load succeeded, want an error")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

func TestLoad_InboxBesideSpool(t *testing.T) {
	for _, inbox := range []string{"/srv/spool2", "/srv/sp/../in", "/srv/..sp"} {
		text := minimal + "spool:\n  dir: /srv/sp\nsubscriptions:\n  - {filter: a/#, dir: '" + inbox + "'}\n"
		if _, err := Load(LoadOptions{File: writeFile(t, text), LookupEnv: noEnv}); err != nil {
			t.Errorf("inbox %s beside spool.dir rejected: %v", inbox, err)
		}
	}
}

func TestLoad_SubscriptionFilterInvalid(t *testing.T) {
	cases := []struct {
		filter, want string
	}{
		{"sw/#/a", `subscriptions[0].filter: "sw/#/a" is invalid: # must be the whole last level`},
		{"sw/a+/x", `subscriptions[0].filter: "sw/a+/x" is invalid: + must be a whole level`},
		{"#/x", `subscriptions[0].filter: "#/x" is invalid`},
		{`a\0b`, `subscriptions[0].filter: "a\x00b" is invalid: topic filter contains U+0000`},
		{"$share/g", `subscriptions[0].filter: "$share/g" is invalid: a shared subscription needs a topic filter`},
		{"$share//x", `subscriptions[0].filter: "$share//x" is invalid: a shared subscription needs a share name`},
		{strings.Repeat("a", 70000), `subscriptions[0].filter: "` + strings.Repeat("a", 64) + `"... (70000 bytes) is invalid: topic filter is longer than 65535 bytes`},
	}
	for _, tc := range cases {
		text := minimal + "subscriptions:\n  - filter: \"" + tc.filter + "\"\n    dir: /tmp/inbox\n"
		_, err := Load(LoadOptions{File: writeFile(t, text), LookupEnv: noEnv})
		if err == nil {
			t.Errorf("filter %.20q accepted", tc.filter)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("error %.300q does not contain %q", err, tc.want)
		}
	}
}

func TestLoad_SubscriptionFilterValid(t *testing.T) {
	text := minimal + "subscriptions:\n"
	for i, filter := range []string{"a/#", "#", "+/x/+", "$share/g/a/#", "$SYS/#"} {
		text += fmt.Sprintf("  - {filter: '%s', dir: /tmp/inbox%d}\n", filter, i)
	}
	if _, err := Load(LoadOptions{File: writeFile(t, text), LookupEnv: noEnv}); err != nil {
		t.Errorf("valid filters rejected: %v", err)
	}
}

func TestLoad_SharedSubscriptionNoLocal(t *testing.T) {
	text := minimal + "subscriptions:\n  - {filter: '$share/g/a/#', dir: /tmp/inbox, no_local: true}\n"
	_, err := Load(LoadOptions{File: writeFile(t, text), LookupEnv: noEnv})
	if err == nil || !strings.Contains(err.Error(), "subscriptions[0].no_local: true on the shared subscription") {
		t.Errorf("no_local on a shared subscription: error %v, want one naming no_local", err)
	}
}

func TestLoad_SubscriptionLimitNegative(t *testing.T) {
	cases := []struct {
		limits, want, notWant string
	}{
		{"max_files: -1", "subscriptions[0].max_files: -1 is negative", "max_bytes"},
		{"max_bytes: -1", "subscriptions[0].max_bytes: -1B is negative", "max_files"},
	}
	for _, tc := range cases {
		text := minimal + "subscriptions:\n  - {filter: a/#, dir: /tmp/inbox, " + tc.limits + "}\n"
		_, err := Load(LoadOptions{File: writeFile(t, text), LookupEnv: noEnv})
		if err == nil {
			t.Errorf("%s accepted", tc.limits)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("error %q does not contain %q", err, tc.want)
		}
		if strings.Contains(err.Error(), tc.notWant) {
			t.Errorf("error %q names %s, which is valid", err, tc.notWant)
		}
	}
}

func TestLoad_NestedInboxes(t *testing.T) {
	for _, second := range []string{"/tmp/inbox/tmp/inner", "/tmp"} {
		text := minimal + "subscriptions:\n  - {filter: a/#, dir: /tmp/inbox}\n  - {filter: b/#, dir: " + second + "}\n"
		_, err := Load(LoadOptions{File: writeFile(t, text), LookupEnv: noEnv})
		if err == nil || !strings.Contains(err.Error(), "subscriptions[1].dir") || !strings.Contains(err.Error(), "nested") {
			t.Errorf("inboxes /tmp/inbox and %s: error %v, want one naming subscriptions[1].dir as nested", second, err)
		}
	}
	text := minimal + "subscriptions:\n  - {filter: a/#, dir: /tmp/inbox}\n  - {filter: b/#, dir: /tmp/inbox2}\n"
	if _, err := Load(LoadOptions{File: writeFile(t, text), LookupEnv: noEnv}); err != nil {
		t.Errorf("sibling inboxes /tmp/inbox and /tmp/inbox2: %v", err)
	}
}

// A symbolic link can lead an inbox into spool.dir, or spool.dir into an
// inbox, under a path that does not start with the other.
func TestLoad_InboxInSpoolThroughLink(t *testing.T) {
	root, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	spool := filepath.Join(root, "spool")
	if err := os.MkdirAll(filepath.Join(spool, "new", "loop"), 0o755); err != nil {
		t.Fatal(err)
	}
	inbox := filepath.Join(root, "inbox")
	if err := os.Mkdir(inbox, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, l := range []struct{ link, target string }{
		{"to-loop", filepath.Join(spool, "new", "loop")},
		{"to-new", filepath.Join(spool, "new")},
		{"to-inbox", inbox},
	} {
		if err := os.Symlink(l.target, filepath.Join(root, l.link)); err != nil {
			t.Fatal(err)
		}
	}

	cases := []struct {
		name, spool, inbox, want string
	}{
		{"inbox is a link", spool, filepath.Join(root, "to-loop"),
			"is inside spool.dir " + spool + " (through a symbolic link to " + filepath.Join(spool, "new", "loop") + ")"},
		{"parent is a link", spool, filepath.Join(root, "to-new", "later"), "is inside spool.dir " + spool},
		{"spool behind a link", filepath.Join(root, "to-inbox", "spool"), inbox, "spool.dir: "},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			text := minimal + "spool:\n  dir: " + tc.spool + "\nsubscriptions:\n  - {filter: a/#, dir: '" + tc.inbox + "'}\n"
			_, err := Load(LoadOptions{File: writeFile(t, text), LookupEnv: noEnv})
			if err == nil {
				t.Fatal("Load succeeded, want an error")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}
