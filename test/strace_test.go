package test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mqspool/mqspool/test/harness"
)

// TestStrace_DaemonDurableOrder runs the daemon under strace while it
// ingests and forwards files of each QoS, moves a bad file to failed/ and
// writes QoS 1 and 2 messages from a subscription into its inbox. It then
// checks in the trace that every deletion, acknowledgement and packet
// comes after the fsyncs it depends on, as docs/durability.md orders
// them. A kill -9 test cannot see a missing fsync, because the page
// cache survives the kill.
func TestStrace_DaemonDurableOrder(t *testing.T) {
	harness.RequireStrace(t)
	b := harness.StartBroker(t, "")
	inbox := filepath.Join(t.TempDir(), "inbox")
	d := harness.NewDaemon(t, b.URL(), fmt.Sprintf("subscriptions:\n  - filter: down/#\n    qos: 2\n    dir: %s\n", inbox))
	d.DumpOnFailure()
	traceFile := filepath.Join(d.Root, "daemon.trace")
	d.Wrap = harness.StraceCommand(traceFile, true)
	d.Start()

	files := map[string]string{ // payload -> file under new/
		"up-qos0": "q0.msg", "up-qos1": "q1.msg", "up-qos2": "q2.msg", "up-raw": "up/raw/r1",
	}
	for payload, rel := range files {
		data := payload
		if strings.HasSuffix(rel, ".msg") {
			data = fmt.Sprintf("Topic: up/%s\nQoS: %c\n\n%s", payload, payload[len(payload)-1], payload)
		}
		d.Drop(rel, []byte(data))
	}
	d.Drop("bad.msg", []byte("Topic: up/bad\nQoS: 7\n\nbad"))
	harness.WaitFor(t, 15*time.Second, "every file taken from new/", d.NewEmpty)
	harness.WaitFor(t, 15*time.Second, "QoS 2 PUBCOMP from the broker", func() bool {
		return b.Contains("Sending PUBCOMP to mqspool-t")
	})

	mosquittoPub(t, b, "down/one", 1, "down-qos1")
	mosquittoPub(t, b, "down/two", 2, "down-qos2")
	harness.WaitFor(t, 15*time.Second, "PUBCOMP for the downlink QoS 2 message", func() bool {
		return b.Contains("Received PUBCOMP from mqspool-t")
	})
	if code := d.Stop(10 * time.Second); code != 0 {
		t.Fatalf("mqspool exited with %d", code)
	}
	harness.WaitTraceEnd(t, traceFile, 10*time.Second)
	tr, err := harness.ParseTrace(traceFile)
	if err != nil {
		t.Fatal(err)
	}

	cs := commits(tr, d.DB)
	checkDatabaseCreated(t, tr, d.DB, filepath.Join(d.Dir, "new"))
	checkDirsSynced(t, tr, func(dir string) bool { return dir != filepath.Dir(d.Socket) }, 0)
	checkIngest(t, tr, cs, filepath.Join(d.Dir, "new"), len(files))
	out, in := mqttTraffic(t, tr)
	checkUplink(t, tr, cs, out, in, d.Dir, files)
	checkDownlink(t, tr, cs, out, in, inbox)
	checkFailedMove(t, tr, d.Dir, "bad.msg")
}

// checkDatabaseCreated requires that the directory of a newly created
// spool.db is synced before the first file is removed from new/: until
// then the database, and every message committed to it, can vanish in a
// power cut.
func checkDatabaseCreated(t *testing.T, tr *harness.Trace, db, newDir string) {
	t.Helper()
	create, ok := findCall(tr, func(c harness.Syscall) bool {
		return c.Name == "openat" && c.RetPath() == db && strings.Contains(c.Args[2], "O_CREAT")
	})
	if !ok {
		t.Errorf("the trace does not show %s being opened for writing", db)
		return
	}
	firstUnlink, ok := findCall(tr, func(c harness.Syscall) bool {
		p, isUnlink := unlinkPath(c)
		return isUnlink && underDir(p, newDir)
	})
	if !ok {
		return
	}
	sync, ok := syncAfter(tr, filepath.Dir(db), create.End)
	if !ok || sync.End > firstUnlink.Start {
		t.Errorf("%s was created (%s) but its directory was not synced before the first ingested file "+
			"was removed (%s): a power cut can lose the database with the only copy of its messages",
			db, describe(create), describe(firstUnlink))
	}
}

// checkIngest requires that a spool.db commit became durable between the
// last read of each file unlinked from new/ and its unlink. It also
// requires a sync of the file's directory after the unlink.
func checkIngest(t *testing.T, tr *harness.Trace, cs []span, newDir string, want int) {
	t.Helper()
	n := 0
	for _, c := range byStart(tr) {
		p, ok := unlinkPath(c)
		if !ok || !underDir(p, newDir) {
			continue
		}
		n++
		read := lastRead(tr, p, c.Start)
		if read == 0 {
			t.Errorf("%s was unlinked (%s) without being read", p, describe(c))
			continue
		}
		if commitsBetween(cs, read, c.Start) == 0 {
			t.Errorf("%s was unlinked (%s) with no spool.db commit between its read (line %d) and the "+
				"unlink: a power cut loses its messages", p, describe(c), read)
		}
		if _, ok := syncAfter(tr, filepath.Dir(p), c.End); !ok {
			t.Errorf("%s was unlinked (%s) but its directory was never synced afterwards", p, describe(c))
		}
	}
	if n != want {
		t.Errorf("%d files unlinked from new/, want %d", n, want)
	}
}

// checkUplink requires that each PUBLISH follows the commit of its file's
// messages, each QoS 1 or 2 PUBLISH also a later commit (its flow), and
// each PUBREL a commit after its PUBREC was read.
//
// NOTE: the trace does not show what a commit contains, so the flow's
// commit is counted, not identified. An unrelated commit in between (the
// pickup's Forget) would hide a PUBLISH sent before its flow was durable.
// The removal of a message after its PUBACK is not checked for the same
// reason.
func checkUplink(t *testing.T, tr *harness.Trace, cs []span, out, in []packet, spoolDir string, files map[string]string) {
	t.Helper()
	seen := map[byte]int{}
	for _, p := range out {
		if p.typ != typePublish {
			continue
		}
		rel, ok := files[string(p.payload)]
		if !ok {
			t.Errorf("PUBLISH with unexpected payload %q: %s", p.payload, describe(p.call))
			continue
		}
		seen[p.qos]++
		read := lastRead(tr, filepath.Join(spoolDir, "new", rel), p.call.Start)
		need := 1 // the ingest commit
		if p.qos > 0 {
			need = 2 // and the commit of its flow
		}
		if got := commitsBetween(cs, read, p.call.Start); got < need {
			t.Errorf("QoS %d PUBLISH %q was written (%s) after %d spool.db commits since its file "+
				"was read (line %d), want at least %d: the ingest commit, and for QoS 1 and 2 the "+
				"commit of its flow (sent)", p.qos, p.payload, describe(p.call), got, read, need)
		}
	}
	for qos := range byte(3) {
		if seen[qos] == 0 {
			t.Errorf("no QoS %d PUBLISH in the trace", qos)
		}
	}
	if checkAckAfterCommit(t, out, in, cs, typePubrel, typePubrec) == 0 {
		t.Error("no PUBREL in the trace")
	}
}

// checkDownlink requires that each PUBACK or PUBREC for a PUBLISH from
// the broker is written only after the inbox file was written, fsynced and
// renamed into new/, and new/ was fsynced. A PUBREC also waits for the
// commit of incoming-stored. Each PUBCOMP waits for a commit that
// followed the PUBREL.
func checkDownlink(t *testing.T, tr *harness.Trace, cs []span, out, in []packet, inbox string) {
	t.Helper()
	checked := map[byte]int{}
	for _, p := range in {
		if p.typ != typePublish || p.qos == 0 {
			continue
		}
		ackType := byte(typePuback)
		if p.qos == 2 {
			ackType = typePubrec
		}
		ack, ok := nextPacket(out, ackType, p.id, p.call.End)
		if !ok {
			t.Errorf("no %s for the QoS %d PUBLISH %q read at %s", packetName(ackType), p.qos, p.payload, describe(p.call))
			continue
		}
		checked[p.qos]++
		what := fmt.Sprintf("%s %d for %q (%s)", packetName(ackType), p.id, p.payload, describe(ack.call))
		step := checkInboxSteps(t, tr, p, ack.call.Start, inbox, what)
		if step > 0 && p.qos == 2 && commitsBetween(cs, step, ack.call.Start) == 0 {
			t.Errorf("%s was written without a spool.db commit (incoming-stored) after the inbox sync", what)
		}
	}
	if checked[1] == 0 || checked[2] == 0 {
		t.Errorf("acknowledged downlink messages by QoS: %v, want QoS 1 and 2", checked)
	}
	if checkAckAfterCommit(t, out, in, cs, typePubcomp, typePubrel) == 0 {
		t.Error("no PUBCOMP in the trace")
	}
}

// checkInboxSteps finds the inbox file of PUBLISH p and checks that its
// write, fsync, rename into new/ and fsync of new/ all completed, in that
// order, before line before. It returns the end of the last step, or 0
// when a step is missing.
func checkInboxSteps(t *testing.T, tr *harness.Trace, p packet, before int, inbox, what string) int {
	t.Helper()
	write, ok := findCall(tr, func(c harness.Syscall) bool {
		data, _ := c.Strings(1)
		return c.Name == "write" && c.Start > p.call.End && underDir(c.FDPath(0), filepath.Join(inbox, "tmp")) &&
			len(data) == 1 && bytes.HasSuffix(data[0], p.payload)
	})
	if !ok || write.End > before {
		t.Errorf("%s: no write of its inbox file in tmp/ before it", what)
		return 0
	}
	tmp := write.FDPath(0)
	steps := []struct {
		name  string
		match func(harness.Syscall) bool
	}{
		{"fsync of " + tmp, func(c harness.Syscall) bool { return isSync(c, tmp) }},
		{"rename of " + tmp + " into new/", func(c harness.Syscall) bool {
			from, to, ok := renamePaths(c)
			return ok && from == tmp && underDir(to, filepath.Join(inbox, "new"))
		}},
		{"fsync of " + filepath.Join(inbox, "new"), func(c harness.Syscall) bool {
			return isSync(c, filepath.Join(inbox, "new"))
		}},
	}
	last := write.End
	for _, s := range steps {
		c, ok := findCall(tr, func(c harness.Syscall) bool { return c.Start > last && s.match(c) })
		if !ok || c.End > before {
			t.Errorf("%s was written before the %s completed: a power cut after the "+
				"acknowledgement can lose the message", what, s.name)
			return 0
		}
		last = c.End
	}
	return last
}

// checkFailedMove requires that a bad file leaves new/ only by a rename
// into failed/, and that its .reason file is synced before its own rename
// into failed/. failed/ must be synced after both renames and before new/,
// so that after a power cut the file is in one of the two.
func checkFailedMove(t *testing.T, tr *harness.Trace, spoolDir, rel string) {
	t.Helper()
	src := filepath.Join(spoolDir, "new", rel)
	unlinked := func(c harness.Syscall) bool {
		p, ok := unlinkPath(c)
		return ok && p == src
	}
	if c, ok := findCall(tr, unlinked); ok {
		t.Errorf("bad file %s was unlinked (%s) instead of moved to failed/", src, describe(c))
	}

	movedAway := func(c harness.Syscall) bool {
		from, _, ok := renamePaths(c)
		return ok && from == src
	}
	move, ok := findCall(tr, movedAway)
	if !ok {
		t.Errorf("bad file %s was not renamed into failed/", src)
		return
	}
	_, dst, _ := renamePaths(move)
	if !underDir(dst, filepath.Join(spoolDir, "failed")) {
		t.Errorf("bad file %s was renamed to %s, not into failed/", src, dst)
		return
	}

	reasonMoves := checkDurableMoves(t, tr, filepath.Join(spoolDir, "tmp"), filepath.Join(spoolDir, "failed"), true, 1<<62)
	if reasonMoves == 0 {
		t.Errorf("no .reason file was renamed into failed/ for %s", dst)
	}
	reasonPlaced := func(c harness.Syscall) bool {
		_, to, ok := renamePaths(c)
		return ok && to == dst+".reason"
	}
	reason, ok := findCall(tr, reasonPlaced)
	if !ok {
		t.Errorf("no rename into place of %s.reason", dst)
		return
	}

	failedSync, ok := syncAfter(tr, filepath.Dir(dst), max(move.End, reason.End))
	if !ok {
		t.Errorf("%s is not synced after the moves of %s and its reason", filepath.Dir(dst), rel)
		return
	}
	newSync, ok := syncAfter(tr, filepath.Dir(src), move.End)
	if !ok {
		t.Errorf("%s is not synced after %s left it (%s)", filepath.Dir(src), rel, describe(move))
		return
	}
	if newSync.Start < failedSync.End {
		t.Errorf("%s (%s) was synced before failed/ (%s): a power cut between them can leave the file "+
			"in neither", filepath.Dir(src), describe(newSync), describe(failedSync))
	}
}

// TestStrace_CommandsDurableOrder runs publish, spool requeue-failed,
// spool salvage and spool compact under strace and checks that each
// makes its result durable (file fsync, rename, directory fsync) before it
// exits with status 0.
func TestStrace_CommandsDurableOrder(t *testing.T) {
	harness.RequireStrace(t)
	// No broker listens there: the daemon only ingests, so spool.db keeps
	// the messages for salvage and compact.
	d := harness.NewDaemon(t, fmt.Sprintf("mqtt://127.0.0.1:%d", harness.FreePort(t)), "")
	d.DumpOnFailure()
	d.Start()
	for i := range 3 {
		d.Drop(fmt.Sprintf("m%d.msg", i), []byte(fmt.Sprintf("Topic: cli/%d\nQoS: 1\n\nqueued-%d", i, i)))
	}
	harness.WaitFor(t, 15*time.Second, "files taken from new/", d.NewEmpty)
	if code := d.Stop(10 * time.Second); code != 0 {
		t.Fatalf("mqspool exited with %d", code)
	}
	newDir := filepath.Join(d.Dir, "new")
	failedDir := filepath.Join(d.Dir, "failed")

	t.Run("publish", func(t *testing.T) {
		tr, exit := traceCommand(t, d, "publish", "--config", d.Config, "--topic", "cli/p", "--message", "published")
		checkDirsSynced(t, tr, everyDir, exit)
		if checkDurableMoves(t, tr, filepath.Join(d.Dir, "tmp"), newDir, true, exit) != 1 {
			t.Error("publish did not rename exactly one file into new/")
		}
	})
	t.Run("requeue-failed", func(t *testing.T) {
		for _, rel := range []string{"bad.msg", "sub/dir/bad"} {
			p := filepath.Join(failedDir, rel)
			writeFile(t, p, "Topic: cli/r\n\nrequeued")
			writeFile(t, p+".reason", "test reason")
		}
		tr, exit := traceCommand(t, d, "spool", "requeue-failed", "--config", d.Config)
		checkDirsSynced(t, tr, everyDir, exit)
		if n := checkDurableMoves(t, tr, failedDir, newDir, false, exit); n != 2 {
			t.Errorf("requeue-failed renamed %d files into new/, want 2", n)
		}
	})
	t.Run("salvage", func(t *testing.T) {
		aside := filepath.Join(d.Root, "state", "spool.db.copy")
		data, err := os.ReadFile(d.DB)
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, aside, string(data))
		tr, exit := traceCommand(t, d, "spool", "salvage", "--config", d.Config, aside)
		checkDirsSynced(t, tr, everyDir, exit)
		if n := checkDurableMoves(t, tr, filepath.Join(d.Dir, "tmp"), newDir, true, exit); n != 3 {
			t.Errorf("salvage renamed %d files into new/, want 3", n)
		}
	})
	t.Run("compact", func(t *testing.T) {
		tr, exit := traceCommand(t, d, "spool", "compact", "--config", d.Config)
		checkCompact(t, tr, d.DB, exit)
	})
}

// checkCompact requires that the compacted copy is synced after its last
// write, and fsynced after its mode and owner were set, before it is
// renamed over spool.db. The directory must be synced after the rename and
// before the command exits.
func checkCompact(t *testing.T, tr *harness.Trace, db string, exit int) {
	t.Helper()
	tmp := db + ".compact"
	rename, ok := findCall(tr, func(c harness.Syscall) bool {
		from, to, ok := renamePaths(c)
		return ok && from == tmp && to == db
	})
	if !ok {
		t.Fatalf("compact did not rename %s over %s", tmp, db)
	}
	written := 0
	for _, c := range tr.Calls {
		if c.OK() && (c.Name == "pwrite64" || c.Name == "ftruncate") && c.FDPath(0) == tmp {
			written = max(written, c.End)
		}
	}
	if written == 0 {
		t.Errorf("the trace shows no write of %s", tmp)
	}
	if _, ok := findCall(tr, func(c harness.Syscall) bool {
		return isSync(c, tmp) && c.Start > written && c.End < rename.Start
	}); !ok {
		t.Errorf("%s was renamed over %s (%s) without a sync after its last write (line %d)",
			tmp, db, describe(rename), written)
	}

	// The mode and owner are metadata that fdatasync may leave unsynced.
	changed := 0
	for _, c := range tr.Calls {
		if c.OK() && (c.Name == "fchmodat" || c.Name == "fchownat") && c.Path(0, 1) == tmp {
			changed = max(changed, c.End)
		}
	}
	if changed == 0 {
		t.Errorf("the trace shows no change of the mode or owner of %s", tmp)
	}
	if _, ok := findCall(tr, func(c harness.Syscall) bool {
		return c.Name == "fsync" && c.FDPath(0) == tmp && c.Start > changed && c.End < rename.Start
	}); !ok {
		t.Errorf("%s was renamed over %s (%s) without an fsync after its mode and owner were set (line %d)",
			tmp, db, describe(rename), changed)
	}
	if sync, ok := syncAfter(tr, filepath.Dir(db), rename.End); !ok || sync.End > exit {
		t.Errorf("%s was not synced after the rename (%s) and before compact exited", filepath.Dir(db), describe(rename))
	}
}

// traceCommand runs the mqspool binary with args under strace and returns
// the parsed trace and the line of its exit, which must be with status 0.
func traceCommand(t *testing.T, d *harness.Daemon, args ...string) (*harness.Trace, int) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "command.trace")
	cmdline := append(harness.StraceCommand(file, false), d.Bin)
	out, err := exec.Command(cmdline[0], append(cmdline[1:], args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("mqspool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	tr, err := harness.ParseTrace(file)
	if err != nil {
		t.Fatal(err)
	}
	return tr, exitLine(t, tr)
}

// everyDir makes checkDirsSynced check every directory.
func everyDir(string) bool { return true }

// writeFile creates path and its directories with data.
func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}
