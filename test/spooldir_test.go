package test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mqspool/mqspool/test/harness"
)

// TestSpoolDir_BadInputAmongGood drops files the daemon must reject among
// good ones: each bad file ends in failed/ with a reason, each good one
// arrives, and the daemon keeps running.
func TestSpoolDir_BadInputAmongGood(t *testing.T) {
	broker := harness.StartBroker(t, "")
	sub := harness.Subscribe(t, broker.Addr(), "#", 1)
	d := harness.NewDaemon(t, broker.URL(), "publish:\n  max_message_bytes: 1KiB\n")
	d.DumpOnFailure()
	d.Start()

	bad := map[string][]byte{
		"empty.msg":          {},
		"unknown-header.msg": []byte("Topic: good/x\nColour: blue\n\npayload"),
		"wildcard.msg":       []byte("Topic: a/+/b\n\npayload"),
		"qos7.msg":           []byte("Topic: good/x\nQoS: 7\n\npayload"),
		"no-blank-line.msg":  []byte("Topic: good/x\nQoS: 1\n"),
		"broken.jsonl":       []byte("{\"topic\":\"good/j\",\"payload\":\"ok\"}\n{\"topic\":\"good/j\",\"payload\":\n"),
		"bad-base64.jsonl":   []byte("{\"topic\":\"good/j\",\"payload_base64\":\"%%%\"}\n"),
		"sys.msg":            []byte("Topic: $SYS/broker/x\n\npayload"),
		"oversize.msg":       []byte("Topic: good/x\n\n" + strings.Repeat("x", 2048)),
		// Control characters, on which mosquitto ends the connection.
		"tab-topic.msg":      []byte("Topic: good/a\tb\n\npayload"),
		"escape-type.msg":    []byte("Topic: good/x\nContent-Type: text/\x1b[31m\n\npayload"),
		"control-prop.jsonl": []byte("{\"topic\":\"good/j\",\"payload\":\"p\",\"user_properties\":[[\"k\",\"a\\u0001\"]]}\n"),
	}
	var good []expected
	i := 0
	for name, data := range bad {
		d.Drop(name, data)
		topic := fmt.Sprintf("good/%d", i)
		payload := fmt.Sprintf("good-%d", i)
		d.Drop(fmt.Sprintf("good-%02d.msg", i), []byte("Topic: "+topic+"\n\n"+payload))
		good = append(good, expected{topic, []byte(payload)})
		i++
	}

	// A directory whose name is not UTF-8, a symlink and a FIFO.
	newDir := filepath.Join(d.Dir, "new")
	latin1 := filepath.Join(newDir, "caf\xe9")
	if err := os.Mkdir(latin1, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(latin1, "reading"), []byte("21.5"), 0o644); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(d.Root, "outside.txt")
	os.WriteFile(target, []byte("secret"), 0o644)
	if err := os.Symlink(target, filepath.Join(newDir, "link.msg")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(newDir, "pipe.msg"), 0o644); err != nil {
		t.Fatal(err)
	}
	d.Drop("good-last.msg", []byte("Topic: good/last\n\nlast"))
	good = append(good, expected{"good/last", []byte("last")})

	harness.WaitFor(t, 30*time.Second, "good messages", func() bool { return distinct(sub) >= len(good) })
	checkDelivered(t, sub, good)

	wantFailed := len(bad) + 3
	reasons := waitFailed(t, d, wantFailed)
	if len(reasons) != wantFailed {
		t.Errorf("%d reason files, want %d", len(reasons), wantFailed)
	}
	for _, r := range reasons {
		if strings.TrimSpace(r) == "" {
			t.Errorf("empty reason file")
		}
	}
	for _, m := range sub.Messages() {
		if !strings.HasPrefix(m.Topic, "good/") {
			t.Errorf("bad input published on %q", m.Topic)
		}
	}
	if !d.Running() {
		t.Fatal("daemon stopped after bad input")
	}
	if out, err := exec.Command(d.Bin, "status", "--socket", d.Socket).CombinedOutput(); err != nil {
		t.Errorf("status after bad input: %v\n%s", err, out)
	}
}

// TestSpoolDir_LongJSONLMemoryBounded drops the largest .jsonl file the
// default limits allow, full of short lines, with the broker down. Every
// line must be queued while the daemon's RssAnon stays far below what
// holding all of the file's messages at once takes (about 480 MiB, or
// more with the race detector).
func TestSpoolDir_LongJSONLMemoryBounded(t *testing.T) {
	broker := harness.StartBroker(t, "")
	broker.Stop()
	d := harness.NewDaemon(t, broker.URL(), "publish:\n  default_topic: long/jsonl\n")
	d.DumpOnFailure()
	d.Start()

	var b strings.Builder
	lines := 0
	for ; b.Len() < 16<<20-32; lines++ {
		fmt.Fprintf(&b, `{"payload":"%07d"}`+"\n", lines)
	}
	d.Drop("long.jsonl", []byte(b.String()))

	peak := 0
	harness.WaitFor(t, 3*time.Minute, "long.jsonl ingested", func() bool {
		peak = max(peak, d.RSSAnonKiB())
		return d.NewEmpty()
	})
	if limit := harness.MemoryScale() * 128 << 10; peak > limit {
		t.Errorf("RssAnon peaked at %d KiB while a .jsonl of %d lines was ingested, want under %d KiB", peak, lines, limit)
	}
	if st := largeStatus(t, d); st == nil || st.QueueMessages != int64(lines) {
		t.Errorf("status %+v, want %d messages queued", st, lines)
	}
}

// TestSpoolDir_LongJSONLProgressInStatus fills a small spool with the
// first part of a long .jsonl while publishing is paused: status names the
// file and its count in the spool, and after a resume the rest arrives
// and the file leaves status.
func TestSpoolDir_LongJSONLProgressInStatus(t *testing.T) {
	broker := harness.StartBroker(t, "")
	sub := harness.Subscribe(t, broker.Addr(), "long/#", 1)
	d := harness.NewDaemon(t, broker.URL(), "publish:\n  default_topic: long/jsonl\nspool:\n  max_messages: 6000\n")
	d.DumpOnFailure()
	d.Start()
	opsConnected(t, d)
	opsCtl(t, d, "pause")

	const lines = 10000
	var b strings.Builder
	for i := range lines {
		fmt.Fprintf(&b, `{"payload":"seq-%06d"}`+"\n", i)
	}
	d.Drop("long.jsonl", []byte(b.String()))

	var file map[string]any
	opsWait(t, "the file stored in parts in status", func() bool {
		file, _ = opsStatus(t, d)["partial_file"].(map[string]any)
		return file != nil && file["stored_messages"] == float64(4096)
	})
	if got, want := file["path"], filepath.Join(d.Dir, "new", "long.jsonl"); got != want {
		t.Errorf("partial_file path %v, want %s", got, want)
	}
	if got := file["total_messages"]; got != float64(lines) {
		t.Errorf("partial_file total_messages %v, want %d", got, lines)
	}
	if out, _ := d.Ctl("status"); !strings.Contains(out, "storing:") {
		t.Errorf("status text has no storing: line:\n%s", out)
	}

	opsCtl(t, d, "resume")
	sub.WaitCount(lines, 60*time.Second)
	opsWait(t, "no file in parts in status", func() bool {
		_, ok := opsStatus(t, d)["partial_file"]
		return !ok && d.NewEmpty()
	})
	if missing, dups := tally(t, sub, lines); len(missing) != 0 || len(dups) != 0 {
		t.Errorf("missing %d and duplicated %d of %d messages", len(missing), len(dups), lines)
	}
}

// A spool directory removed while the daemon runs and made again at once
// with its subdirectories, as mkdir -p does, is reported in the log,
// watched and locked again, so a second daemon cannot take it.
func TestSpoolDir_RemovedAndMadeAgain(t *testing.T) {
	broker := harness.StartBroker(t, "")
	sub := harness.Subscribe(t, broker.Addr(), "#", 1)
	d := harness.NewDaemon(t, broker.URL(), "")
	d.DumpOnFailure()
	d.Start()

	if err := os.RemoveAll(d.Dir); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"tmp", "new", "failed"} {
		if err := os.MkdirAll(filepath.Join(d.Dir, name), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	harness.WaitFor(t, 10*time.Second, "the removal in the log", func() bool {
		return strings.Contains(d.Log(), "removed or replaced while the daemon ran")
	})
	d.Drop("after.msg", []byte("Topic: spool/after\n\nafter"))
	sub.WaitCount(1, 10*time.Second)

	// Its own database, control socket and client id, but the same spool
	// directory.
	second := harness.NewDaemon(t, broker.URL(), "")
	second.Dir = d.Dir
	second.WriteConfig(broker.URL(), "broker:\n  urls: ["+broker.URL()+"]\n  client_id: mqspool-u\n")
	out, code := harness.CommandTimeout(t, 10*time.Second, "run", "--config", second.Config)
	if code != 1 || !strings.Contains(out, "in use by another mqspool daemon") {
		t.Errorf("second daemon on the directory made again: exit %d, want 1 and the directory in use:\n%s", code, out)
	}
}

// A spool.dir given as a symbolic link may be pointed at a directory that
// another daemon holds. The first daemon then leaves that directory to the
// other one and logs why, so each file there is published once, not by
// both.
func TestSpoolDir_LinkToLockedDirectory(t *testing.T) {
	broker := harness.StartBroker(t, "")
	sub := harness.Subscribe(t, broker.Addr(), "#", 1)
	second := harness.NewDaemon(t, broker.URL(), "broker:\n  urls: ["+broker.URL()+"]\n  client_id: mqspool-u\n")
	second.DumpOnFailure()
	second.Start()

	first := harness.NewDaemon(t, broker.URL(), "")
	first.DumpOnFailure()
	own := first.Dir
	if err := os.MkdirAll(own, 0o755); err != nil {
		t.Fatal(err)
	}
	first.Dir = filepath.Join(first.Root, "spool-link")
	if err := os.Symlink(own, first.Dir); err != nil {
		t.Fatal(err)
	}
	first.WriteConfig(broker.URL(), "")
	first.Start()

	next := first.Dir + ".next"
	if err := os.Symlink(second.Dir, next); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(next, first.Dir); err != nil {
		t.Fatal(err)
	}
	harness.WaitFor(t, 10*time.Second, "the other daemon's lock in the first one's log", func() bool {
		return strings.Contains(first.Log(), "locked by another daemon")
	})
	if out, _ := first.Ctl("status"); !strings.Contains(out, "another daemon holds the lock") {
		t.Errorf("status does not show the intake stopped:\n%s", out)
	}
	const files = 20
	for i := range files {
		second.Drop(fmt.Sprintf("f%02d.msg", i), fmt.Appendf(nil, "Topic: spool/f%02d\n\nx", i))
	}
	sub.WaitCount(files, 10*time.Second)
	harness.WaitFor(t, 10*time.Second, "new/ emptied", second.NewEmpty)
	time.Sleep(3 * time.Second) // past a rescan of each daemon: a copy would arrive by then

	seen := map[string]int{}
	for _, m := range sub.Messages() {
		seen[m.Topic]++
	}
	for topic, n := range seen {
		if n > 1 {
			t.Errorf("%s published %d times: both daemons took the directory's files", topic, n)
		}
	}
	if len(seen) != files {
		t.Errorf("%d topics received, want %d", len(seen), files)
	}
}
