package harness

import (
	"context"
	"errors"
	"os/exec"
	"testing"
	"time"
)

// Command runs the mqspool binary with args and returns its combined
// output and exit code.
func Command(t testing.TB, args ...string) (string, int) {
	t.Helper()
	return combinedOutput(t, exec.Command(Binary(t), args...), args)
}

// CommandTimeout runs the mqspool binary with args like Command, but
// kills it after timeout, for a command that may not end by itself. A
// killed command returns exit code -1.
func CommandTimeout(t testing.TB, timeout time.Duration, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return combinedOutput(t, exec.CommandContext(ctx, Binary(t), args...), args)
}

// combinedOutput runs cmd and returns its combined output and exit code,
// failing the test when it cannot be started.
func combinedOutput(t testing.TB, cmd *exec.Cmd, args []string) (string, int) {
	t.Helper()
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	case err != nil:
		t.Fatalf("run mqspool %v: %v", args, err)
	}
	return string(out), 0
}

// Ctl runs "mqspool ARGS --socket" against the daemon's control socket.
func (d *Daemon) Ctl(args ...string) (string, int) {
	d.t.Helper()
	return Command(d.t, append(args, "--socket", d.Socket)...)
}

// WaitEvery polls cond every interval until it holds or timeout passes.
// Use it in place of WaitFor when cond starts a process.
func WaitEvery(t testing.TB, timeout, interval time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(interval)
	}
}
