package daemon

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mqspool/mqspool/internal/message"
	"github.com/mqspool/mqspool/internal/pickup"
)

// A rejected message names its file in new/ while the tracker remembers
// it. One queued before the start names none, and its log line has no
// empty source.
func TestQuarantine_NamesSourceWhenKnown(t *testing.T) {
	dir := t.TempDir()
	var logs bytes.Buffer
	d := &Daemon{log: slog.New(slog.NewTextHandler(&logs, nil)), waits: newWaitTracker(dir)}
	p, err := pickup.New(pickup.Options{Dir: dir}, nil)
	if err != nil {
		t.Fatal(err)
	}
	d.pickup = p
	d.waits.committed("site/a.jsonl", 7, 3, false)
	m := &message.Message{Topic: "t", QoS: 1}

	if err := d.quarantine(8, m, nil, "broker rejected the message"); err != nil {
		t.Fatal(err)
	}
	reason, err := os.ReadFile(filepath.Join(dir, "failed", "spool-00000000000000000008.msg.reason"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(reason), "(queued from new/site/a.jsonl)") {
		t.Errorf("reason %q does not name the source file", reason)
	}
	if !strings.Contains(logs.String(), "source=site/a.jsonl") {
		t.Errorf("log does not name the source file:\n%s", logs.String())
	}

	logs.Reset()
	if err := d.quarantine(3, m, nil, "broker rejected the message"); err != nil {
		t.Fatal(err)
	}
	reason, err = os.ReadFile(filepath.Join(dir, "failed", "spool-00000000000000000003.msg.reason"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(reason), "queued from") {
		t.Errorf("reason %q names a source for a message of no known file", reason)
	}
	if strings.Contains(logs.String(), "source=") {
		t.Errorf("log has a source for a message of no known file:\n%s", logs.String())
	}
}
