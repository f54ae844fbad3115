package inbox

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// A second inbox on a directory in use fails to open and leaves the first
// one's tmp/ alone, since those files are about to be renamed into new/.
// Once the first is closed, the directory can be opened again.
func TestInbox_Lock_SecondOpenFails(t *testing.T) {
	dir := t.TempDir()
	first := openTest(t, Options{Dir: dir})
	pending := filepath.Join(dir, "tmp", "pending.msg")
	if err := os.WriteFile(pending, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}

	second, err := Open(Options{Dir: dir})
	if !errors.Is(err, ErrInUse) || second != nil {
		t.Fatalf("second Open: err = %v, want ErrInUse", err)
	}
	if _, err := os.Stat(pending); err != nil {
		t.Errorf("the second Open touched the first inbox's tmp/: %v", err)
	}

	first.Close()
	third, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	defer third.Close()
	if _, err := os.Stat(pending); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a left-over file in tmp/ was not removed at the next Open: %v", err)
	}
}

// An inbox on a read-only file system, with tmp/ and new/ in place, is
// counted and locked, since locking the directory needs no write. A
// read-only mount takes the place of a directory owned by another user,
// which a test run as root cannot set up.
func TestInbox_Lock_ReadOnlyDir(t *testing.T) {
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"); err != nil {
		t.Skipf("mount a tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	for _, sub := range []string{"tmp", "new"} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "new", "a.msg"), []byte("Topic: a\n\nx"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("", dir, "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		t.Skipf("remount the tmpfs read-only: %v", err)
	}

	first := openTest(t, Options{Dir: dir})
	st := first.Stats()
	if st.WriteError != "" {
		t.Errorf("write error %q, want none before a write", st.WriteError)
	}
	if st.BacklogStale || st.BacklogFiles != 1 {
		t.Errorf("backlog %d files (stale %v), want 1 counted", st.BacklogFiles, st.BacklogStale)
	}
	if _, err := Open(Options{Dir: dir}); !errors.Is(err, ErrInUse) {
		t.Errorf("second Open: err = %v, want ErrInUse", err)
	}
}

// A consumer that removes the whole inbox directory gets a new one from
// the inbox, and the new one is locked as the first was.
func TestInbox_Lock_RecreatedDirLockedAgain(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "inbox")
	first := openTest(t, Options{Dir: dir})
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}

	first.recount()
	if _, err := os.Stat(filepath.Join(dir, "new")); err != nil {
		t.Fatalf("inbox not created again: %v", err)
	}
	if _, err := Open(Options{Dir: dir}); !errors.Is(err, ErrInUse) {
		t.Errorf("Open of the recreated directory: err = %v, want ErrInUse", err)
	}
}

// A consumer that removes the inbox and makes tmp/ and new/ again itself
// leaves a new directory that the inbox locks as it did the first.
func TestInbox_Lock_RecreatedByConsumer(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "inbox")
	first := openTest(t, Options{Dir: dir})
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	for _, sub := range []string{"tmp", "new"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			t.Fatal(err)
		}
	}

	first.recount()
	second, err := Open(Options{Dir: dir})
	if second != nil {
		second.Close()
	}
	if !errors.Is(err, ErrInUse) {
		t.Errorf("Open of the recreated directory: err = %v, want ErrInUse", err)
	}
}

// When the new directory cannot be locked at first, a later write locks
// it before it writes there.
func TestInbox_Lock_RetriedAfterFailure(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "inbox")
	first := openTest(t, Options{Dir: dir})
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	other := openTest(t, Options{Dir: dir})

	if err := first.makeDirs(); !errors.Is(err, ErrInUse) {
		t.Fatalf("makeDirs while another inbox has the lock: err = %v, want ErrInUse", err)
	}
	if err := first.makeDirs(); !errors.Is(err, ErrInUse) {
		t.Errorf("second makeDirs while another inbox has the lock: err = %v, want ErrInUse", err)
	}
	other.Close()
	if err := first.makeDirs(); err != nil {
		t.Fatalf("makeDirs after the other inbox closed: %v", err)
	}
	third, err := Open(Options{Dir: dir})
	if third != nil {
		third.Close()
	}
	if !errors.Is(err, ErrInUse) {
		t.Errorf("Open after the lock was taken again: err = %v, want ErrInUse", err)
	}
}
