package harness

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// RunUnprivileged runs the calling test again as the user nobody (uid
// 65534) when the tests run as root, since file permissions do not limit
// root. It returns true where the test body is to run: in a process that
// is not root, including that child.
func RunUnprivileged(t *testing.T) bool {
	t.Helper()
	if os.Geteuid() != 0 {
		return true
	}
	// The test binary lies in a directory only root may enter, so the
	// child runs a copy.
	dir, err := os.MkdirTemp("", "mqspool-unprivileged-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	tmp := filepath.Join(dir, "tmp")
	if err := os.Mkdir(tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{dir, tmp} {
		if err := os.Chmod(name, 0o777); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, filepath.Base(os.Args[0]))
	copyExecutable(t, os.Args[0], bin)

	args := []string{"-test.run=^" + t.Name() + "$", "-test.count=1", "-test.v"}
	if deadline, ok := t.Deadline(); ok {
		args = append(args, "-test.timeout="+time.Until(deadline).String())
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if credentialDenied(err) {
		// File permissions do not limit root, so the test cannot run.
		t.Skipf("root may not switch to uid 65534 here, as in a user namespace that maps only root, "+
			"so the test cannot run: %v", err)
	}
	t.Logf("run as uid 65534:\n%s", out)
	if err != nil {
		t.Fatalf("test as uid 65534 failed: %v", err)
	}
	if !ranTest(string(out), t.Name()) {
		t.Fatalf("test as uid 65534 did not run %s", t.Name())
	}
	return false
}

// ranTest reports whether the verbose output of a test binary shows that
// the test name passed or was skipped, rather than matching no test.
func ranTest(out, name string) bool {
	return strings.Contains(out, "--- PASS: "+name+" ") || strings.Contains(out, "--- SKIP: "+name+" ")
}

// credentialDenied reports whether err is a failure to start a process
// because the kernel rejected its setgroups, setgid or setuid: EPERM
// without the capability, EINVAL for an id the user namespace does not
// map.
func credentialDenied(err error) bool {
	var exitErr *exec.ExitError
	if err == nil || errors.As(err, &exitErr) {
		return false
	}
	return errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EINVAL)
}

func copyExecutable(t *testing.T, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}
