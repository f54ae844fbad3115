package harness

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// Binary builds cmd/mqspool once per test process (with the race detector
// when the tests run with it) and returns the path.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "mqspool-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "mqspool")
		args := []string{"build", "-o", binPath}
		if raceEnabled {
			args = append(args, "-race")
		}
		args = append(args, "./cmd/mqspool")
		cmd := exec.Command("go", args...)
		cmd.Dir = repoRoot()
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Daemon is a configured mqspool run process.
type Daemon struct {
	t      testing.TB
	Bin    string
	Root   string // temporary directory holding everything below
	Dir    string // spool.dir
	DB     string // spool.db
	Socket string // control.socket
	Config string // the YAML file
	// Env is added to the environment of the next Start.
	Env []string
	// Wrap, when set, is the command that the next Start runs with the
	// mqspool command line as its arguments. It must exec mqspool in the
	// same process, so that the PID stays the daemon's.
	Wrap []string

	mu   sync.Mutex // guards cmd, log and exit
	cmd  *exec.Cmd
	log  *bytes.Buffer
	exit chan error
}

// NewDaemon writes a config for brokerURL with the test defaults (client
// id mqspool-t, keep alive 5s, short backoff) plus extra YAML, which may
// override any of them. It does not start the process.
func NewDaemon(t testing.TB, brokerURL, extra string) *Daemon {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: runs the mqspool binary; run without -short")
	}
	root := t.TempDir()
	d := &Daemon{
		t: t, Bin: Binary(t), Root: root,
		Dir:    filepath.Join(root, "spool"),
		DB:     filepath.Join(root, "state", "spool.db"),
		Socket: filepath.Join(root, "run", "mqspool.sock"),
		Config: filepath.Join(root, "mqspool.yaml"),
		log:    &bytes.Buffer{},
	}
	if err := os.MkdirAll(filepath.Dir(d.DB), 0o755); err != nil {
		t.Fatal(err)
	}
	d.WriteConfig(brokerURL, extra)
	t.Cleanup(d.Kill)
	return d
}

// WriteConfig replaces the config file; the next Start reads it.
func (d *Daemon) WriteConfig(brokerURL, extra string) {
	base := map[string]string{
		"broker":    fmt.Sprintf("broker:\n  urls: [%s]\n  client_id: mqspool-t\n  keep_alive: 5s\n  connect_timeout: 3s\n", brokerURL),
		"reconnect": "reconnect:\n  min_delay: 100ms\n  max_delay: 1s\n",
		"spool":     fmt.Sprintf("spool:\n  dir: %s\n  db: %s\n  min_free_bytes: 0\n", d.Dir, d.DB),
		"pickup":    "pickup:\n  settle: 300ms\n  rescan_interval: 2s\n",
		"control":   fmt.Sprintf("control:\n  socket: %s\n", d.Socket),
		"log":       "log:\n  level: debug\n",
	}
	// A section in extra replaces the default one of the same name. The
	// spool section is the exception: the test's directory and database
	// go first into the one in extra, so that a test that sets a limit
	// never runs on the defaults under /var.
	if at := strings.Index("\n"+extra, "\nspool:\n"); at >= 0 {
		extra = extra[:at] + base["spool"] + extra[at+len("spool:\n"):]
		delete(base, "spool")
	}
	for name := range base {
		if strings.Contains("\n"+extra, "\n"+name+":") {
			delete(base, name)
		}
	}
	var b strings.Builder
	for _, section := range []string{"broker", "reconnect", "spool", "pickup", "control", "log"} {
		b.WriteString(base[section])
	}
	b.WriteString(extra)
	if err := os.WriteFile(d.Config, []byte(b.String()), 0o644); err != nil {
		d.t.Fatal(err)
	}
}

// Start runs "mqspool run" and waits until new/ exists.
func (d *Daemon) Start() {
	d.t.Helper()
	args := []string{d.Bin, "run", "--config", d.Config}
	if len(d.Wrap) > 0 {
		args = append(slices.Clone(d.Wrap), args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(daemonEnviron(), "GORACE=halt_on_error=1 atexit_sleep_ms=0")
	cmd.Env = append(cmd.Env, d.Env...)
	d.mu.Lock()
	fmt.Fprintf(d.log, "---- start %s\n", time.Now().Format(time.RFC3339Nano))
	cmd.Stdout = &lockedWriter{mu: &d.mu, w: d.log}
	cmd.Stderr = cmd.Stdout
	d.mu.Unlock()
	if err := cmd.Start(); err != nil {
		d.t.Fatalf("start mqspool: %v", err)
	}
	exit := make(chan error, 1)
	go func() { exit <- cmd.Wait() }()

	d.mu.Lock()
	d.cmd, d.exit = cmd, exit
	starts := strings.Count(d.log.String(), "---- start")
	d.mu.Unlock()

	// "spool opened" is logged after the signal handlers are installed
	// and new/ exists, so a signal sent after Start returns is handled.
	WaitFor(d.t, 10*time.Second, "mqspool to open its spool", func() bool {
		log := d.Log()
		i := nthIndex(log, "---- start", starts)
		return i >= 0 && strings.Contains(log[i:], "spool opened")
	})
}

// nthIndex returns the index of the n-th (from 1) occurrence of sub in s,
// or -1.
func nthIndex(s, sub string, n int) int {
	at := -1
	for range n {
		i := strings.Index(s[at+1:], sub)
		if i < 0 {
			return -1
		}
		at += 1 + i
	}
	return at
}

// Stop sends SIGTERM and returns the exit code, failing the test if the
// process does not exit within timeout.
func (d *Daemon) Stop(timeout time.Duration) int {
	d.t.Helper()
	return d.signalWait(syscall.SIGTERM, timeout)
}

// Kill sends SIGKILL and waits.
func (d *Daemon) Kill() { d.signalWait(syscall.SIGKILL, 10*time.Second) }

// Running reports whether the process has not exited.
func (d *Daemon) Running() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd == nil {
		return false
	}
	select {
	case err := <-d.exit:
		d.exit <- err
		return false
	default:
		return true
	}
}

// Signal sends sig without waiting.
func (d *Daemon) Signal(sig syscall.Signal) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd != nil {
		d.cmd.Process.Signal(sig)
	}
}

func (d *Daemon) signalWait(sig syscall.Signal, timeout time.Duration) int {
	d.mu.Lock()
	cmd, exit := d.cmd, d.exit
	d.cmd = nil
	d.mu.Unlock()
	if cmd == nil {
		return -1
	}
	cmd.Process.Signal(sig)
	select {
	case err := <-exit:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		return 0
	case <-time.After(timeout):
		cmd.Process.Kill()
		<-exit
		d.t.Errorf("mqspool did not exit within %s of %s", timeout, sig)
		return -1
	}
}

// Log returns what the daemon logged over all its runs.
func (d *Daemon) Log() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.log.String()
}

// Drop writes data as tmp/NAME and renames it into new/REL, the way a
// producer should.
func (d *Daemon) Drop(rel string, data []byte) {
	d.t.Helper()
	tmp := filepath.Join(d.Dir, "tmp", strings.ReplaceAll(rel, "/", "_")+".part")
	if err := os.MkdirAll(filepath.Dir(tmp), 0o755); err != nil {
		d.t.Fatal(err)
	}
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		d.t.Fatal(err)
	}
	dst := filepath.Join(d.Dir, "new", rel)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		d.t.Fatal(err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		d.t.Fatal(err)
	}
}

// NewEmpty reports whether new/ holds no regular files.
func (d *Daemon) NewEmpty() bool {
	empty := true
	filepath.WalkDir(filepath.Join(d.Dir, "new"), func(p string, e os.DirEntry, err error) error {
		if err == nil && e.Type().IsRegular() {
			empty = false
		}
		return nil
	})
	return empty
}

// DumpOnFailure logs the daemon's output when the test has failed.
func (d *Daemon) DumpOnFailure() {
	d.t.Cleanup(func() {
		if d.t.Failed() || os.Getenv("MQSPOOL_TEST_LOG") != "" {
			log := d.Log()
			if len(log) > 20000 {
				log = "...\n" + log[len(log)-20000:]
			}
			d.t.Logf("mqspool log:\n%s", log)
			if d.Running() {
				out, _ := exec.Command(d.Bin, "status", "--socket", d.Socket).CombinedOutput()
				d.t.Logf("mqspool status:\n%s", out)
				files, _ := exec.Command("find", d.Dir).CombinedOutput()
				d.t.Logf("spool directory:\n%s", files)
			}
		}
	})
}

// PID returns the process id of the running daemon, or 0.
func (d *Daemon) PID() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd == nil {
		return 0
	}
	return d.cmd.Process.Pid
}

// OpenFDs returns the number of open file descriptors of the running
// daemon, or -1.
func (d *Daemon) OpenFDs() int {
	d.mu.Lock()
	cmd := d.cmd
	d.mu.Unlock()
	if cmd == nil {
		return -1
	}
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", cmd.Process.Pid))
	if err != nil {
		return -1
	}
	return len(entries)
}

// WaitExit waits for the process to end on its own and reports whether it
// was killed by SIGKILL.
func (d *Daemon) WaitExit(timeout time.Duration) (killed bool) {
	d.t.Helper()
	ee, started := d.waitOwnExit(timeout)
	if !started || ee == nil {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

// ExitCode waits up to timeout for the daemon to exit on its own and
// returns its exit status, -1 for a signal. It fails the test if the
// daemon was not started or is still running then.
func (d *Daemon) ExitCode(timeout time.Duration) int {
	d.t.Helper()
	ee, started := d.waitOwnExit(timeout)
	if !started {
		d.t.Fatal("ExitCode: the daemon was not started")
	}
	if ee == nil {
		return 0
	}
	return ee.ExitCode()
}

// waitOwnExit waits up to timeout for the running process to end on its
// own and returns its exit error, nil for status 0. started is false when
// no process runs. It fails the test when the process outlives timeout.
func (d *Daemon) waitOwnExit(timeout time.Duration) (ee *exec.ExitError, started bool) {
	d.t.Helper()
	d.mu.Lock()
	cmd, exit := d.cmd, d.exit
	d.mu.Unlock()
	if cmd == nil {
		return nil, false
	}
	select {
	case err := <-exit:
		d.mu.Lock()
		d.cmd = nil
		d.mu.Unlock()
		errors.As(err, &ee)
		return ee, true
	case <-time.After(timeout):
		d.t.Fatalf("mqspool still running after %s", timeout)
		return nil, true
	}
}

// RSSAnonKiB returns the daemon's anonymous resident memory in KiB (bbolt's
// mapped file pages are not anonymous and do not count), or -1.
func (d *Daemon) RSSAnonKiB() int {
	d.mu.Lock()
	cmd := d.cmd
	d.mu.Unlock()
	if cmd == nil {
		return -1
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "RssAnon:"); ok {
			var kib int
			fmt.Sscanf(strings.TrimSpace(rest), "%d", &kib)
			return kib
		}
	}
	return -1
}

// MemoryScale is how many times more memory the daemon binary uses than
// a normal build: about 3 when it is built with the race detector, whose
// shadow memory counts in RssAnon.
func MemoryScale() int {
	if raceEnabled {
		return 3
	}
	return 1
}

// testOnlyEnv lists the variables that steer the tests. They share the
// daemon's MQSPOOL_ prefix, and the daemon warns of every such variable
// that names no setting, so they stay out of its environment.
var testOnlyEnv = []string{"MQSPOOL_LARGE_MESSAGES", "MQSPOOL_LARGE_TESTS", "MQSPOOL_SOAK", "MQSPOOL_SOAK_SEED", "MQSPOOL_TEST_LOG"}

// daemonEnviron returns the test's environment without testOnlyEnv.
func daemonEnviron() []string {
	return slices.DeleteFunc(os.Environ(), func(kv string) bool {
		name, _, _ := strings.Cut(kv, "=")
		return slices.Contains(testOnlyEnv, name)
	})
}
