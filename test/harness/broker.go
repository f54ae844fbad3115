// Package harness starts the real components that mqspool's integration,
// fault and crash tests run against: a mosquitto broker on a free loopback
// port, the mqspool binary, an MQTT 5 subscriber and a recording proxy.
// Everything listens on 127.0.0.1 only and is stopped by t.Cleanup.
package harness

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Broker is a mosquitto process with persistence in a temporary directory.
type Broker struct {
	t     testing.TB
	Port  int
	dir   string
	extra string

	mu  sync.Mutex // guards cmd and log
	cmd *exec.Cmd
	log *bytes.Buffer
}

// RequireMosquitto skips the test when mosquitto is not installed, except
// under CI, where a missing broker is a failure of the CI setup.
func RequireMosquitto(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: needs mosquitto and the mqspool binary; run without -short")
	}
	if _, err := exec.LookPath("mosquitto"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("mosquitto not found in PATH; .ci/run must install it: %v", err)
		}
		t.Skip("mosquitto not installed: apt-get install mosquitto mosquitto-clients")
	}
}

// StartBroker starts mosquitto on a free port of 127.0.0.1. extra is
// appended to the generated mosquitto.conf (for example
// "max_inflight_messages 5").
func StartBroker(t testing.TB, extra string) *Broker {
	t.Helper()
	RequireMosquitto(t)
	b := &Broker{t: t, Port: FreePort(t), dir: t.TempDir(), extra: extra}
	b.Start()
	t.Cleanup(b.Kill)
	return b
}

// Addr returns host:port of the listener.
func (b *Broker) Addr() string { return fmt.Sprintf("127.0.0.1:%d", b.Port) }

// URL returns the broker's mqtt:// URL.
func (b *Broker) URL() string { return "mqtt://" + b.Addr() }

// Start runs mosquitto and waits until it accepts connections.
func (b *Broker) Start() {
	b.t.Helper()
	conf := filepath.Join(b.dir, "mosquitto.conf")
	text := fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location %s/\nlog_dest stderr\nlog_type all\n%s\n",
		b.Port, b.dir, b.extra)
	if os.Geteuid() == 0 {
		// Run as root, mosquitto switches to its own user, which cannot
		// write the persistence file into the test's directory. A restart
		// would then lose every session.
		text = "user root\n" + text
	}
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		b.t.Fatal(err)
	}

	b.mu.Lock()
	if b.log == nil {
		b.log = &bytes.Buffer{}
	}
	cmd := exec.Command("mosquitto", "-c", conf)
	cmd.Stdout = &lockedWriter{mu: &b.mu, w: b.log}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		b.mu.Unlock()
		b.t.Fatalf("start mosquitto: %v", err)
	}
	b.cmd = cmd
	b.mu.Unlock()

	WaitFor(b.t, 10*time.Second, "mosquitto accepting on "+b.Addr(), func() bool {
		c, err := net.DialTimeout("tcp", b.Addr(), 200*time.Millisecond)
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
}

// SetExtra replaces the extra configuration used by the next Start.
func (b *Broker) SetExtra(extra string) { b.extra = extra }

// Stop sends SIGTERM, so mosquitto saves its sessions, and waits.
func (b *Broker) Stop() { b.signalAndWait(syscall.SIGTERM) }

// Kill sends SIGKILL and deletes the persistence file, so the broker
// loses every session.
func (b *Broker) Kill() {
	b.signalAndWait(syscall.SIGKILL)
	os.Remove(filepath.Join(b.dir, "mosquitto.db"))
}

// Restart stops with SIGTERM (sessions kept) and starts again.
func (b *Broker) Restart() {
	b.Stop()
	b.RequireSaved()
	b.Start()
}

// Pause sends SIGSTOP; Resume sends SIGCONT.
func (b *Broker) Pause()  { b.signal(syscall.SIGSTOP) }
func (b *Broker) Resume() { b.signal(syscall.SIGCONT) }

func (b *Broker) signal(sig syscall.Signal) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cmd != nil && b.cmd.Process != nil {
		b.cmd.Process.Signal(sig)
	}
}

func (b *Broker) signalAndWait(sig syscall.Signal) {
	b.mu.Lock()
	cmd := b.cmd
	b.cmd = nil
	b.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGCONT)
	cmd.Process.Signal(sig)
	cmd.Wait()
}

// Log returns what mosquitto has logged so far.
func (b *Broker) Log() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.log.String()
}

// lockedWriter lets the process write the log while tests read it.
type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// WaitFor polls cond every 20 ms until it holds or timeout passes.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Contains reports whether the broker log has a line containing s.
func (b *Broker) Contains(s string) bool { return strings.Contains(b.Log(), s) }

// RequireSaved fails the test when mosquitto could not save its
// persistence file, which would make a "sessions kept" restart lose them.
func (b *Broker) RequireSaved() {
	b.t.Helper()
	if b.Contains("Error saving in-memory database") {
		b.t.Fatalf("mosquitto could not save its sessions:\n%s", b.Log())
	}
}
