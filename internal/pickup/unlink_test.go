package pickup

import (
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mqspool/mqspool/internal/spool"
	"github.com/mqspool/mqspool/test/harness"
)

// identityOf returns the identity that the pickup stores for the file at
// dir/name.
func identityOf(t *testing.T, dir, name string) spool.FileID {
	t.Helper()
	st, err := lstat(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return spool.FileID{Dev: st.Dev, Ino: st.Ino, Size: st.Size, Ctime: st.Ctim.Nano(), Mtime: st.Mtim.Nano(), Name: name}
}

func openTestDir(t *testing.T, dir string) int {
	t.Helper()
	fd, err := openDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

func writeFile(t *testing.T, name, data string) {
	t.Helper()
	if err := os.WriteFile(name, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestUnlinkIfSame_RemovesFileAsRead(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "a"), "old")
	id := identityOf(t, dir, "a")

	if err := unlinkIfSame(openTestDir(t, dir), "a", id); err != nil {
		t.Fatalf("unlinkIfSame: %v", err)
	}
	if exists(filepath.Join(dir, "a")) {
		t.Errorf("file with the stored identity still exists, want it removed")
	}
}

// A producer may rename a new file over the name of a committed one
// before the pickup removes it. Removing the new file would lose it
// unread.
func TestUnlinkIfSame_KeepsReplacedFile(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "a"), "old")
	id := identityOf(t, dir, "a")
	writeFile(t, filepath.Join(dir, "b"), "new")
	if err := os.Rename(filepath.Join(dir, "b"), filepath.Join(dir, "a")); err != nil {
		t.Fatal(err)
	}

	if err := unlinkIfSame(openTestDir(t, dir), "a", id); err != nil {
		t.Fatalf("unlinkIfSame: %v", err)
	}
	data, err := os.ReadFile(filepath.Join(dir, "a"))
	if err != nil {
		t.Fatalf("file renamed over the committed one: %v, want it kept", err)
	}
	if string(data) != "new" {
		t.Errorf("file content %q, want %q", data, "new")
	}
}

// A committed file that cannot be removed must keep its stored identity,
// or a later rescan takes it as a new file and appends it again.
func TestPickup_UnremovableFileKeepsIdentity(t *testing.T) {
	if !harness.RunUnprivileged(t) {
		return
	}
	opts := testOptions(t)
	writeDirect(t, opts.Dir, "t/a", "removable")
	writeDirect(t, opts.Dir, "locked/b", "unremovable")
	locked := filepath.Join(opts.Dir, "new", "locked")
	if err := os.Chmod(locked, 0o555); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(locked, 0o755) })
	fake := newFakeStore()
	start(t, opts, fake)

	waitFor(t, 5*time.Second, "identity of t/a forgotten", func() bool { return fake.forgottenCount() > 0 })
	// Two rescans, each of which would append locked/b again if its
	// identity were gone.
	time.Sleep(2*opts.RescanInterval + 500*time.Millisecond)
	for _, id := range fake.forgottenIDs() {
		if id.Name == "locked/b" {
			t.Errorf("identity of locked/b forgotten although it is still in new/")
		}
	}
	if got := fake.names(); len(got) != 2 {
		t.Errorf("appended files %v, want t/a and locked/b once each", got)
	}
	if !exists(filepath.Join(locked, "b")) {
		t.Errorf("locked/b was removed from a directory the daemon may not write")
	}
}

// Removals whose directory sync failed are not durable: a power cut can
// bring the files back, so their identities must stay, or the files are
// appended again.
func TestPickup_FailedDirectorySyncKeepsIdentities(t *testing.T) {
	opts := testOptions(t)
	opts.RescanInterval = 100 * time.Millisecond
	writeDirect(t, opts.Dir, "t/a", "payload")
	fake := newFakeStore()
	var syncs atomic.Int32
	start(t, opts, fake, func(p *Pickup) {
		p.fsyncDir = func(int) error {
			syncs.Add(1)
			return unix.EIO
		}
	})

	waitFor(t, 5*time.Second, "file appended and its directory synced", func() bool {
		return fake.count() == 1 && syncs.Load() > 0
	})
	time.Sleep(5 * opts.RescanInterval)
	if n := fake.forgottenCount(); n != 0 {
		t.Errorf("%d identities forgotten although the sync of their directory failed", n)
	}
}
