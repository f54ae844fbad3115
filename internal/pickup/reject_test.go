package pickup

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mqspool/mqspool/internal/format"
	"github.com/mqspool/mqspool/internal/message"
	"github.com/mqspool/mqspool/test/harness"
)

func TestPickup_BadInputMovedToFailed(t *testing.T) {
	opts := testOptions(t)
	opts.MaxMessageBytes = 1000
	store := newFakeStore()
	if _, err := New(opts, store); err != nil {
		t.Fatal(err)
	}
	newDir := filepath.Join(opts.Dir, "new")

	tests := []struct {
		name   string
		rel    string
		create func(t *testing.T, name string)
		reason string
	}{
		{"empty msg", "e/empty.msg", content(""), "file is empty"},
		{"unknown header", "e/unknown.msg", content("Topic: a\nColour: red\n\n"),
			`line 2: header "Colour" is unknown: use Topic, QoS`},
		{"wildcard topic", "e/wild.msg", content("Topic: a/#\n\n"),
			`line 1: header "Topic" value "a/#" is invalid: topic contains a wildcard`},
		{"qos 7", "e/qos.msg", content("Topic: a\nQos: 7\n\n"),
			`line 2: header "Qos" value "7" is invalid: use 0, 1 or 2`},
		{"missing blank line", "e/noblank.msg", content("Topic: a\n"),
			"line 2: missing blank line after the headers"},
		{"broken JSON line", "e/broken.jsonl",
			content(`{"topic":"a","payload":"x"}` + "\n" + `{"topic":` + "\n"),
			"line 2: invalid JSON object"},
		{"bad base64", "e/b64.jsonl", content(`{"topic":"a","payload_base64":"#"}`),
			"line 1: field payload_base64 is invalid"},
		{"empty jsonl", "e/empty.jsonl", content(""), "file is empty"},
		{"file over max bytes", "e/big", content(strings.Repeat("x", 1001)),
			"file is 1001 bytes, over the limit of 1000 bytes"},
		{"message over max bytes", "e/bigline.jsonl",
			content(`{"topic":"a","payload":"` + strings.Repeat("x", 1000) + `"}`),
			"line 1: message is 1001 bytes, over publish.max_message_bytes (1000)"},
		{"non-UTF-8 directory", "bad\xffdir/f", content("x"), "is not valid UTF-8: rename it"},
		{"wildcard directory", "a+b/f", content("x"), "cannot be a topic"},
		{"symlink", "e/link", symlink, "file is a symbolic link"},
		{"symlinked directory", "linkdir", symlinkDir, "file is a symbolic link"},
		{"FIFO", "e/fifo", fifo, "file is a FIFO"},
		{"dollar topic", "$SYS/x/f", content("x"), "topic starts with $"},
		{"dollar header", "e/dollar.msg", content("Topic: $SYS/x\n\n"), "topic starts with $"},
		{"no topic", "rootfile", content("x"), "directly in new/"},
		{"no topic in msg", "e/notopic.msg", content("\nx"), "no topic"},
		{"empty property key", "e/emptykey.msg", content("Topic: a\nUser-Property: =v\n\n"),
			`line 2: header "User-Property" value "=v" is invalid: user property key is empty`},
		{"invalid utf8 payload", "e/utf8.msg",
			content("Topic: a\nPayload-Format: utf8\n\n\xff"), "payload is not valid UTF-8"},
	}
	for _, tt := range tests {
		name := filepath.Join(newDir, filepath.FromSlash(tt.rel))
		if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
			t.Fatal(err)
		}
		tt.create(t, name)
	}
	drop(t, opts.Dir, "good/f", "ok")
	p := start(t, opts, store)

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			failed := filepath.Join(opts.Dir, "failed", filepath.FromSlash(tt.rel))
			waitFor(t, 5*time.Second, "reason file", func() bool { return exists(failed + ".reason") })
			reason, err := os.ReadFile(failed + ".reason")
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(reason), tt.reason) {
				t.Errorf("reason = %q, want it to contain %q", reason, tt.reason)
			}
			if !exists(failed) {
				t.Error("file is not in failed/")
			}
			if exists(filepath.Join(newDir, filepath.FromSlash(tt.rel))) {
				t.Error("file is still in new/")
			}
		})
	}
	waitFor(t, 5*time.Second, "good file appended", func() bool { return store.count() == 1 })
	if got := p.Stats().FilesFailed; got != uint64(len(tests)) {
		t.Errorf("FilesFailed = %d, want %d", got, len(tests))
	}
}

func content(data string) func(*testing.T, string) {
	return func(t *testing.T, name string) {
		if err := os.WriteFile(name, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func symlink(t *testing.T, name string) {
	if err := os.Symlink("/etc/hostname", name); err != nil {
		t.Fatal(err)
	}
}

func symlinkDir(t *testing.T, name string) {
	if err := os.Symlink(t.TempDir(), name); err != nil {
		t.Fatal(err)
	}
}

func fifo(t *testing.T, name string) {
	if err := syscall.Mkfifo(name, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestPickup_RejectedNameTakenGetsSuffix(t *testing.T) {
	opts := testOptions(t)
	store := newFakeStore()
	start(t, opts, store)

	drop(t, opts.Dir, "s/bad.msg", "")
	failed := filepath.Join(opts.Dir, "failed", "s")
	waitFor(t, 5*time.Second, "first rejection", func() bool {
		return exists(filepath.Join(failed, "bad.msg.reason"))
	})
	drop(t, opts.Dir, "s/bad.msg", "Topic: a\n")
	waitFor(t, 5*time.Second, "second rejection", func() bool {
		return exists(filepath.Join(failed, "bad.1.msg.reason"))
	})
	if !exists(filepath.Join(failed, "bad.1.msg")) {
		t.Error("second file is not in failed/ as bad.1.msg")
	}
}

func TestPickup_LongNameRejectedTwice(t *testing.T) {
	opts := testOptions(t)
	store := newFakeStore()
	start(t, opts, store)
	rel := "odd/" + strings.Repeat("a", 250) + ".msg"

	for i := 1; i <= 2; i++ {
		drop(t, opts.Dir, rel, "Topic: a\nQoS: 7\n\nx")
		waitFor(t, 5*time.Second, fmt.Sprintf("%d reason files in failed/odd", i), func() bool {
			reasons, _ := filepath.Glob(filepath.Join(opts.Dir, "failed", "odd", "*.reason"))
			return len(reasons) == i
		})
	}
	reasons, _ := filepath.Glob(filepath.Join(opts.Dir, "failed", "odd", "*.reason"))
	for _, r := range reasons {
		text, err := os.ReadFile(r)
		if err != nil || !strings.Contains(string(text), rel) {
			t.Errorf("%s does not name the original file: %v", filepath.Base(r), err)
		}
		if _, err := os.Stat(strings.TrimSuffix(r, ".reason")); err != nil {
			t.Errorf("the rejected file beside %s is missing: %v", filepath.Base(r), err)
		}
	}
}

// A quarantined message moved back into new/ gets publish.topic_prefix
// once, so it is sent to the topic it was rejected on.
func TestPickup_QuarantineRequeueKeepsTopic(t *testing.T) {
	opts := testOptions(t)
	opts.TopicPrefix = "gw1/"
	store := newFakeStore()
	p := start(t, opts, store)

	m := &message.Message{Topic: "gw1/a/b", QoS: 1, Payload: []byte("p")}
	dst, err := p.Quarantine("spool-42", m, nil, "broker rejected it: not authorized (0x87)")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(dst, filepath.Join(opts.Dir, "new", filepath.Base(dst))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the requeued file appended", func() bool { return store.count() == 1 })

	if got := store.files[0].Messages[0].Topic; got != m.Topic {
		t.Errorf("requeued message has topic %q, want %q", got, m.Topic)
	}
}

func TestPickup_Quarantine(t *testing.T) {
	opts := testOptions(t)
	p, err := New(opts, newFakeStore())
	if err != nil {
		t.Fatal(err)
	}
	m := &message.Message{Topic: "a/b", QoS: 1, Payload: []byte("p")}
	var paths []string
	for range 2 {
		dst, err := p.Quarantine("spool/42", m, nil, "broker rejected it: not authorized (0x87)")
		if err != nil {
			t.Fatal(err)
		}
		paths = append(paths, dst)
	}
	failed := filepath.Join(opts.Dir, "failed", "spool")
	if want := []string{filepath.Join(failed, "42.msg"), filepath.Join(failed, "42.1.msg")}; !slices.Equal(paths, want) {
		t.Errorf("Quarantine returned %q, want %q", paths, want)
	}
	data, err := os.ReadFile(filepath.Join(failed, "42.msg"))
	if err != nil {
		t.Fatal(err)
	}
	got, _, err := format.ParseMsg(data)
	if err != nil {
		t.Fatalf("quarantined file does not parse: %v", err)
	}
	if got.Topic != "a/b" || string(got.Payload) != "p" {
		t.Errorf("quarantined message = %+v", got)
	}
	reason, err := os.ReadFile(filepath.Join(failed, "42.msg.reason"))
	if err != nil || !strings.Contains(string(reason), "0x87") {
		t.Errorf("reason = %q, %v", reason, err)
	}
	if !exists(filepath.Join(failed, "42.1.msg")) {
		t.Error("second quarantine did not get the name 42.1.msg")
	}
	// Producers in the daemon's group read why their message failed.
	for _, name := range []string{"42.msg", "42.msg.reason"} {
		if fi, err := os.Stat(filepath.Join(failed, name)); err != nil || fi.Mode().Perm()&0o040 == 0 {
			t.Errorf("%s is not readable by the group: %v", name, err)
		}
	}
	if _, err := p.Quarantine("../escape", nil, []byte("x"), "r"); !errors.Is(err, format.ErrUnsafeName) {
		t.Errorf("quarantine outside failed/ error = %v, want ErrUnsafeName", err)
	}
	if _, err := p.Quarantine("raw", nil, []byte("x"), "r"); err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(filepath.Join(opts.Dir, "failed", "raw.record")); string(data) != "x" {
		t.Errorf("raw quarantine = %q, want x in raw.record", data)
	}
	if reason, _ := os.ReadFile(filepath.Join(opts.Dir, "failed", "raw.record.reason")); !strings.Contains(string(reason), "mqspool publish") {
		t.Errorf("reason of a raw record = %q, want the way to publish it again", reason)
	}
}

func TestPickup_UnreadableFileRetried(t *testing.T) {
	if !harness.RunUnprivileged(t) {
		return
	}
	opts := testOptions(t)
	opts.RescanInterval = 50 * time.Millisecond
	opts.DefaultTopic = "t"
	store := newFakeStore()
	p := start(t, opts, store)

	// The file is unreadable before it appears in new/.
	tmp := filepath.Join(opts.Dir, "tmp", "f")
	if err := os.WriteFile(tmp, []byte("x"), 0); err != nil {
		t.Fatal(err)
	}
	name := filepath.Join(opts.Dir, "new", "f")
	if err := os.Rename(tmp, name); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "error recorded", func() bool { return p.Stats().LastError != "" })
	if err := os.Chmod(name, 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "file appended after a rescan", func() bool { return store.count() == 1 })
}

func TestPickup_TooLargeForSpoolRejected(t *testing.T) {
	opts := testOptions(t)
	store := newFakeStore()
	start(t, opts, store)

	dir := filepath.Join(opts.Dir, "new", "big")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	drop(t, opts.Dir, "big/a", "x")
	drop(t, opts.Dir, "big/b", tooLargePayload)
	drop(t, opts.Dir, "big/c", "x")
	reason := filepath.Join(opts.Dir, "failed", "big", "b.reason")
	waitFor(t, 5*time.Second, "reason file", func() bool { return exists(reason) })
	waitFor(t, 5*time.Second, "other files appended", func() bool { return store.count() == 2 })
	data, err := os.ReadFile(reason)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), "larger than the whole spool limit") {
		t.Errorf("reason = %q", data)
	}
}

// A bad file whose .reason file cannot be written goes back to new/, so
// failed/ never holds it without its reason and it is tried again later.
func TestPickup_RejectWithoutReasonPutBack(t *testing.T) {
	opts := testOptions(t)
	p, err := New(opts, newFakeStore())
	if err != nil {
		t.Fatal(err)
	}
	drop(t, opts.Dir, "s/bad.msg", "")
	tmp := filepath.Join(opts.Dir, "tmp")
	if err := os.Remove(tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tmp, nil, 0o644); err != nil {
		t.Fatal(err)
	}

	p.rejectFile("s/bad.msg", "no topic")
	if !exists(filepath.Join(opts.Dir, "new", "s", "bad.msg")) {
		t.Error("the bad file is not back in new/")
	}
	if exists(filepath.Join(opts.Dir, "failed", "s", "bad.msg")) {
		t.Error("the bad file is in failed/ without its .reason file")
	}
	if st := p.Stats(); st.LastError == "" {
		t.Error("no error in the stats")
	}

	if err := os.Remove(tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	p.rejectFile("s/bad.msg", "no topic")
	if !exists(filepath.Join(opts.Dir, "failed", "s", "bad.msg.reason")) {
		t.Error("the second try left no .reason file in failed/")
	}
}

// A bad file whose .reason file cannot be written, as when the disk is
// full, goes back into new/. That move raises an event, which must not
// retry it at once: the file waits for the next rescan and is logged
// once, and it reaches failed/ when the write works again.
func TestPickup_RejectThatFailsWaitsForRescan(t *testing.T) {
	opts := testOptions(t)
	opts.RescanInterval = 2 * time.Second
	logs := capture(&opts)
	tmp := filepath.Join(opts.Dir, "tmp")
	p := start(t, opts, newFakeStore())
	if err := os.Remove(tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tmp, nil, 0o600); err != nil { // writeReason goes through tmp/
		t.Fatal(err)
	}

	bad := filepath.Join(opts.Dir, "new", "bad.msg")
	if err := os.WriteFile(bad, []byte("Topic: a/+\n\nx"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the failed move", func() bool {
		return strings.Contains(logs.String(), "move bad spool file to failed/")
	})
	time.Sleep(100 * time.Millisecond) // the move back into new/ is done
	before := changeTime(t, bad)
	time.Sleep(500 * time.Millisecond)
	if after := changeTime(t, bad); after != before {
		t.Errorf("the file was moved again before the next rescan (change time %d, then %d)", before, after)
	}
	if n := strings.Count(logs.String(), "move bad spool file to failed/"); n != 1 {
		t.Errorf("%d log lines for the failed move, want 1", n)
	}

	if err := os.Remove(tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the file in failed/", func() bool { return p.Stats().FilesFailed == 1 })
	if _, err := os.Stat(filepath.Join(opts.Dir, "failed", "bad.msg.reason")); err != nil {
		t.Errorf("no reason file: %v", err)
	}
}

// changeTime returns the change time of path in nanoseconds. A rename
// sets it.
func changeTime(t *testing.T, path string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ctim.Nano()
}

// A .msg header cannot hold a user property key with '=', which a .jsonl
// line may set, so the message goes to failed/ as .jsonl with its topic
// and properties.
func TestPickup_QuarantineFallsBackToJSONL(t *testing.T) {
	opts := testOptions(t)
	opts.TopicPrefix = "gw1/"
	p, err := New(opts, newFakeStore())
	if err != nil {
		t.Fatal(err)
	}
	m := &message.Message{Topic: "gw1/a/b", QoS: 2, Payload: []byte("p"),
		UserProperties: []message.UserProperty{{Key: "a=b", Value: "v"}}}
	dst, err := p.Quarantine("spool-42", m, []byte("raw record"), "broker rejected it: not authorized (0x87)")
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(opts.Dir, "failed", "spool-42.jsonl"); dst != want {
		t.Errorf("Quarantine returned %q, want %q", dst, want)
	}

	data, err := os.ReadFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := format.ParseJSONL(data)
	if err != nil {
		t.Fatalf("quarantined file %q does not parse: %v", data, err)
	}
	if len(entries) != 1 {
		t.Fatalf("quarantined file has %d messages, want 1", len(entries))
	}
	got := entries[0].Message
	if got.Topic != "a/b" {
		t.Errorf("quarantined topic = %q, want a/b without the prefix", got.Topic)
	}
	if got.QoS != 2 {
		t.Errorf("quarantined qos = %d, want 2", got.QoS)
	}
	if !slices.Equal(got.UserProperties, m.UserProperties) {
		t.Errorf("quarantined user properties = %v, want %v", got.UserProperties, m.UserProperties)
	}
	if string(got.Payload) != "p" {
		t.Errorf("quarantined payload = %q, want p", got.Payload)
	}
}

// MQTT cannot encode a string longer than 65535 bytes, so a user property
// value that long is bad input instead of a message sent cut short.
func TestPickup_LongPropertyRejected(t *testing.T) {
	opts := testOptions(t)
	store := newFakeStore()
	start(t, opts, store)

	line := `{"topic":"a","payload":"x","user_properties":[["k","` + strings.Repeat("v", 65536) + `"]]}`
	drop(t, opts.Dir, "e/long.jsonl", line)
	failed := filepath.Join(opts.Dir, "failed", "e", "long.jsonl")
	waitFor(t, 5*time.Second, "reason file", func() bool { return exists(failed + ".reason") })

	reason, err := os.ReadFile(failed + ".reason")
	if err != nil {
		t.Fatal(err)
	}
	if want := "is 65536 bytes, over the maximum of 65535 bytes for an MQTT string"; !strings.Contains(string(reason), want) {
		t.Errorf("reason = %.300q, want it to contain %q", reason, want)
	}
	if len(reason) > 2000 {
		t.Errorf("reason is %d bytes, want the value cut short", len(reason))
	}
	if n := store.count(); n != 0 {
		t.Errorf("%d files appended, want 0", n)
	}
}

// A file too large for the spool, rejected while the spool was full and
// behind the last waiting file, leaves nothing waiting, so the spool is
// no longer reported full.
func TestPickup_TooLargeRejectClearsSpoolFull(t *testing.T) {
	p, store, opts := startFull(t)

	drop(t, opts.Dir, "full/big", tooLargePayload)
	reason := filepath.Join(opts.Dir, "failed", "full", "big.reason")
	waitFor(t, 10*time.Second, "reason file", func() bool { return exists(reason) })
	waitFor(t, 5*time.Second, "full/b appended", func() bool { return store.count() == 2 })
	waitFor(t, 5*time.Second, "nothing waiting", func() bool { return p.Stats().Waiting == 0 })
	if p.Stats().SpoolFull {
		t.Error("Stats().SpoolFull is true with no file left waiting in new/")
	}
}

// A directory the daemon may not read can be neither watched nor listed.
// Its one log line must give the fix for the permission, not the inotify
// watch limit.
func TestPickup_UnreadableDirHintsPermission(t *testing.T) {
	if !harness.RunUnprivileged(t) {
		return
	}
	opts := testOptions(t)
	opts.RescanInterval = 50 * time.Millisecond
	logs := capture(&opts)
	locked := filepath.Join(opts.Dir, "new", "locked")
	if err := os.MkdirAll(locked, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(locked, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(locked, 0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(locked, 0o755) })
	start(t, opts, newFakeStore())

	waitFor(t, 5*time.Second, "the unreadable directory logged", func() bool {
		return strings.Contains(logs.String(), "not readable")
	})
	if !strings.Contains(logs.String(), "let the mqspool user read it") {
		t.Errorf("log does not say to let the daemon read the directory:\n%s", logs.String())
	}
	if strings.Contains(logs.String(), "max_user_watches") {
		t.Errorf("log for an unreadable directory points at the inotify watch limit:\n%s", logs.String())
	}
}
