package daemon

import (
	"bytes"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mqspool/mqspool/internal/config"
	"github.com/mqspool/mqspool/internal/control"
	"github.com/mqspool/mqspool/internal/inbox"
)

func TestLockSpoolDir_SecondLockFails(t *testing.T) {
	dir := t.TempDir()
	first, err := lockSpoolDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lockSpoolDir(dir); err == nil || !strings.Contains(err.Error(), "in use by another mqspool daemon") {
		t.Errorf("second lock: %v, want an in-use error", err)
	}
	first.Close()
	again, err := lockSpoolDir(dir)
	if err != nil {
		t.Errorf("lock after release: %v", err)
	}
	again.Close()
}

func TestDeriveClientID_DiffersBySpool(t *testing.T) {
	a, err := deriveClientID("/var/lib/mqspool/a.db")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := deriveClientID("/var/lib/mqspool/b.db")
	again, _ := deriveClientID("/var/lib/mqspool/a.db")
	if a == b {
		t.Errorf("two databases on one host share client id %s", a)
	}
	if a != again {
		t.Errorf("client id not stable: %s then %s", a, again)
	}
	if len(a) > 23 {
		t.Errorf("client id %s is longer than 23 characters", a)
	}
}

// A daemon that finds the spool directory in use fails before it opens
// the database, so it leaves no new database file behind.
func TestNew_SpoolDirInUseCreatesNoDatabase(t *testing.T) {
	cfg := offlineConfig(t)
	lock, err := lockSpoolDir(cfg.Spool.Dir)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()

	if _, err := New(cfg, slog.New(slog.DiscardHandler), nil); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("New = %v, want an in-use error", err)
	}
	if _, err := os.Stat(cfg.Spool.DB); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the failed start left %s behind (stat: %v)", cfg.Spool.DB, err)
	}
}

// A daemon whose inbox directory another daemon holds fails to start,
// leaves that inbox's tmp/ alone, and releases what it took, so a later
// start succeeds.
func TestNew_InboxInUseFails(t *testing.T) {
	cfg := offlineConfig(t)
	dir := filepath.Join(t.TempDir(), "inbox")
	cfg.Subscriptions = []config.Subscription{{Filter: "cmd/#", QoS: 1, Dir: dir}}
	other, err := inbox.Open(inbox.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	pending := filepath.Join(dir, "tmp", "pending.msg")
	if err := os.WriteFile(pending, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}

	_, err = New(cfg, slog.New(slog.DiscardHandler), nil)
	if !errors.Is(err, inbox.ErrInUse) {
		t.Fatalf("New = %v, want inbox.ErrInUse", err)
	}
	if _, err := os.Stat(pending); err != nil {
		t.Errorf("the failed start removed the other daemon's file in tmp/: %v", err)
	}

	other.Close()
	d, err := New(cfg, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatalf("New after the other daemon let go: %v", err)
	}
	d.abandon()
}

// A daemon whose control socket another daemon listens on fails to start
// instead of leaving status and ctl to the other one.
func TestNew_ControlSocketInUseFails(t *testing.T) {
	cfg := offlineConfig(t)
	ln, err := net.Listen("unix", cfg.Control.Socket)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	_, err = New(cfg, slog.New(slog.DiscardHandler), nil)
	if !errors.Is(err, control.ErrSocketInUse) || !strings.Contains(err.Error(), "control.socket") {
		t.Fatalf("New = %v, want control.ErrSocketInUse naming control.socket", err)
	}
	if _, err := os.Stat(cfg.Spool.DB); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the failed start left %s behind (stat: %v)", cfg.Spool.DB, err)
	}

	ln.Close()
	d, err := New(cfg, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatalf("New after the other daemon let go: %v", err)
	}
	d.abandon()
}

// Two daemons started at once with one control socket: neither listens
// yet when the second starts, so only the lock beside the socket can stop
// it from taking the socket over.
func TestNew_ControlSocketClaimedBeforeListen(t *testing.T) {
	first := offlineConfig(t)
	d1, err := New(first, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}

	second := offlineConfig(t)
	second.Control.Socket = first.Control.Socket
	_, err = New(second, slog.New(slog.DiscardHandler), nil)
	if !errors.Is(err, control.ErrSocketInUse) {
		t.Errorf("second New = %v, want control.ErrSocketInUse", err)
	}

	d1.abandon()
	d2, err := New(second, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatalf("New after the first daemon let go: %v", err)
	}
	d2.abandon()
}

// A lock file that the daemon cannot open, such as one left by a daemon
// run as another user, does not stop the start, but the lost protection
// is logged.
func TestNew_ControlSocketLockUnavailableLogged(t *testing.T) {
	cfg := offlineConfig(t)
	if err := os.Mkdir(cfg.Control.Socket+".lock", 0o700); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	d, err := New(cfg, slog.New(slog.NewTextHandler(&logs, nil)), nil)
	if err != nil {
		t.Fatalf("New with an unusable lock file: %v", err)
	}
	d.abandon()

	if !strings.Contains(logs.String(), "control socket not locked") {
		t.Errorf("no warning about the unusable lock file:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), cfg.Control.Socket+".lock") {
		t.Errorf("the warning does not name the lock file:\n%s", logs.String())
	}
}

// A spool directory removed while the daemon runs takes its lock file
// along. When the pickup creates the directory again, the daemon locks it
// again, so a second daemon still cannot take it.
func TestClaimSpoolDir_AfterRemoval(t *testing.T) {
	cfg := offlineConfig(t)
	d, logs := newLoggedDaemon(t, cfg)
	if !d.claimSpoolDir() {
		t.Fatal("claim failed although nothing changed")
	}

	if err := os.RemoveAll(cfg.Spool.Dir); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(cfg.Spool.Dir, "new"), 0o755); err != nil {
		t.Fatal(err)
	}
	if !d.claimSpoolDir() {
		t.Fatal("claim of the directory created again failed")
	}
	if !strings.Contains(logs.String(), "are lost to mqspool") {
		t.Errorf("log does not report the replaced directory:\n%s", logs.String())
	}

	if other, err := lockSpoolDir(cfg.Spool.Dir); err == nil {
		other.Close()
		t.Error("a second daemon could lock the spool directory created again")
	}
}

// A second daemon may lock a spool directory that replaced the first
// daemon's before the first one notices. The first then leaves the
// directory to it, since both taking its files would publish them twice,
// and takes it once the second lets go.
func TestClaimSpoolDir_LockedByAnotherDaemon(t *testing.T) {
	cfg := offlineConfig(t)
	d, logs := newLoggedDaemon(t, cfg)
	if err := os.RemoveAll(cfg.Spool.Dir); err != nil {
		t.Fatal(err)
	}
	other, err := lockSpoolDir(cfg.Spool.Dir)
	if err != nil {
		t.Fatalf("second daemon's lock: %v", err)
	}

	if d.claimSpoolDir() || d.claimSpoolDir() {
		t.Fatal("claim granted while another daemon holds the directory")
	}
	if n := strings.Count(logs.String(), "locked by another daemon"); n != 1 {
		t.Errorf("%d errors about the other daemon's lock, want 1:\n%s", n, logs.String())
	}
	if !(controlHandler{d: d}).Status().SpoolDirLockedElsewhere {
		t.Error("status does not show the spool directory locked elsewhere")
	}
	other.Close()
	if !d.claimSpoolDir() {
		t.Fatal("claim failed after the other daemon let go")
	}
	if (controlHandler{d: d}).Status().SpoolDirLockedElsewhere {
		t.Error("status still shows the spool directory locked elsewhere after the claim")
	}
	if !strings.Contains(logs.String(), "takes new files again") {
		t.Errorf("log does not report the claim taken back:\n%s", logs.String())
	}
	if third, err := lockSpoolDir(cfg.Spool.Dir); err == nil {
		third.Close()
		t.Error("a third daemon could lock the directory the first took back")
	}
}

// A spool.db that the start moved aside as damaged shows in status with
// where it went, so an operator who looks later still finds it.
func TestStatus_ShowsDamagedDatabase(t *testing.T) {
	cfg := offlineConfig(t)
	if err := os.WriteFile(cfg.Spool.DB, make([]byte, 16384), 0o600); err != nil {
		t.Fatal(err)
	}
	d, err := New(cfg, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.abandon()

	got := controlHandler{d: d}.Status().DamagedDatabase
	if !strings.HasPrefix(got, cfg.Spool.DB+".corrupt-") {
		t.Errorf("status damaged database = %q, want %s.corrupt-TIMESTAMP", got, cfg.Spool.DB)
	}
}

// A spool.dir link pointed at another daemon's directory and back leads
// to the lock this daemon still holds. The daemon logs that it takes new
// files again, and a second spell reports the other daemon again.
func TestClaimSpoolDir_LinkPointedBack(t *testing.T) {
	cfg := offlineConfig(t)
	own := filepath.Join(t.TempDir(), "own")
	if err := os.MkdirAll(own, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg.Spool.Dir = filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(own, cfg.Spool.Dir); err != nil {
		t.Fatal(err)
	}
	d, logs := newLoggedDaemon(t, cfg)
	other, err := lockSpoolDir(filepath.Join(t.TempDir(), "other"))
	if err != nil {
		t.Fatalf("other daemon's lock: %v", err)
	}
	defer other.Close()

	for spell := 1; spell <= 2; spell++ {
		repoint(t, cfg.Spool.Dir, filepath.Dir(other.Name()))
		if d.claimSpoolDir() {
			t.Fatalf("spell %d: claim granted on the other daemon's directory", spell)
		}
		repoint(t, cfg.Spool.Dir, own)
		if !d.claimSpoolDir() {
			t.Fatalf("spell %d: claim failed with the link pointed back", spell)
		}
	}
	if n := strings.Count(logs.String(), "locked by another daemon"); n != 2 {
		t.Errorf("%d errors about the other daemon's lock, want 2:\n%s", n, logs.String())
	}
	if n := strings.Count(logs.String(), "takes new files again"); n != 2 {
		t.Errorf("%d reports of the claim taken back, want 2:\n%s", n, logs.String())
	}
}

// repoint points the symbolic link at link to target by a rename, as
// ln -sfn does.
func repoint(t *testing.T, link, target string) {
	t.Helper()
	next := link + ".next"
	if err := os.Symlink(target, next); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(next, link); err != nil {
		t.Fatal(err)
	}
}

// A lock file removed alone from a spool directory still in place loses
// no files, so the daemon locks a new one with a warning, not with the
// error for a replaced directory.
func TestClaimSpoolDir_LockFileRemovedAlone(t *testing.T) {
	cfg := offlineConfig(t)
	d, logs := newLoggedDaemon(t, cfg)
	if err := os.Remove(filepath.Join(cfg.Spool.Dir, spoolDirLock)); err != nil {
		t.Fatal(err)
	}

	if !d.claimSpoolDir() {
		t.Fatal("claim failed after the lock file was removed")
	}
	if !strings.Contains(logs.String(), "lock file was removed") {
		t.Errorf("log does not report the removed lock file:\n%s", logs.String())
	}
	if strings.Contains(logs.String(), "are lost to mqspool") {
		t.Errorf("log reports lost files although only the lock file was removed:\n%s", logs.String())
	}
}

// newLoggedDaemon returns a daemon made by New from cfg, with its log
// kept in the returned buffer, and abandons it when the test ends.
func newLoggedDaemon(t *testing.T, cfg *config.Config) (*Daemon, *bytes.Buffer) {
	t.Helper()
	logs := &bytes.Buffer{}
	d, err := New(cfg, slog.New(slog.NewTextHandler(logs, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.abandon)
	return d, logs
}
