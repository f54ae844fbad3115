package spool

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// The spool does not write bbolt's list of free pages on every commit
// (see openChecked), so after a crash bbolt rebuilds the list by walking
// every page. It walks in a goroutine of its own and panics on a damaged
// page, which no recover in this process can catch. Open therefore checks
// such a file in a child process first: a panic ends the child, and the
// file is renamed aside as damaged.

// checkChildEnv names the environment variable that, with checkChildArg
// as the only argument, turns a process into the child that checks the
// database at the path it holds. Both are needed, so a variable left in
// a user's environment does not take over every command.
const (
	checkChildEnv = "MQSPOOL_SPOOL_CHECK"
	checkChildArg = "internal-spool-check"
)

// Exit codes of the child. A panic exits with 2 as well.
const (
	checkChildDamaged = 2
	checkChildLocked  = 3
)

// checkChildReady is set by ServeCheck in a process whose executable can
// serve a check. Without it, Open checks in this process.
var checkChildReady atomic.Bool

// ServeCheck makes this executable able to check spool databases for Open
// in a child process. In the child it runs the check and exits; otherwise
// it returns at once. Call it first in main, before any other work.
func ServeCheck() {
	path := os.Getenv(checkChildEnv)
	if path == "" || len(os.Args) != 2 || os.Args[1] != checkChildArg {
		os.Unsetenv(checkChildEnv)
		checkChildReady.Store(true)
		return
	}
	os.Exit(runCheckChild(path))
}

func runCheckChild(path string) int {
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: DefaultLockTimeout})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		if errors.Is(err, berrors.ErrTimeout) {
			return checkChildLocked
		}
		return checkChildDamaged
	}
	defer db.Close()
	if err := checkDB(db); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return checkChildDamaged
	}
	return 0
}

// needsPageWalk reports whether the newest meta page of the file at path
// has no stored list of free pages, so that bbolt walks every page to
// rebuild it. A file that cannot be read is left to bbolt to report.
func needsPageWalk(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	metas := readMetas(f)
	return len(metas) > 0 && metas[0].freelist == noFreelist
}

// noFreelist is the free list page id that bbolt writes into the meta page
// when it did not store the list.
const noFreelist = 0xFFFFFFFFFFFFFFFF

// checkInChild runs the consistency check of the file at path in a child
// process. It returns an error wrapping ErrCorrupt when the check failed
// or the child crashed, and ErrLocked when another process holds the file.
func checkInChild(path string) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find this executable to check %s in a child process: %w", path, err)
	}
	cmd := exec.Command(exe, checkChildArg)
	cmd.Env = append(os.Environ(), checkChildEnv+"="+path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err = cmd.Run()

	var exit *exec.ExitError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &exit) && exit.ExitCode() == checkChildLocked:
		return fmt.Errorf("%w: %s: stop the running daemon or use another spool.db", ErrLocked, path)
	case errors.As(err, &exit):
		return fmt.Errorf("%w: %s: check in a child process failed (%v): %s",
			ErrCorrupt, path, err, firstLine(stderr.String()))
	}
	return fmt.Errorf("run the check of %s in a child process: %w", path, err)
}

// firstLine returns the first line of s, so that a panic's stack does not
// flood the log.
func firstLine(s string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return line
}
