package config

import (
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
