package pickup

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/mqspool/mqspool/internal/spool"
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
