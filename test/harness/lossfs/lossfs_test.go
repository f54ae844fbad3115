package lossfs

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func writeFile(t *testing.T, path string, data []byte, sync bool) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	if sync {
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
	}
}

func cut(t *testing.T, f *FS) CutStats {
	t.Helper()
	stats, err := f.Cut()
	if err != nil {
		t.Fatalf("cut: %v", err)
	}
	return stats
}

func requireContent(t *testing.T, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s = %q, want %q", filepath.Base(path), got, want)
	}
}

func TestCut_UnsyncedWriteLost(t *testing.T) {
	f := Start(t)
	path := filepath.Join(f.Mountpoint, "a")
	writeFile(t, path, []byte("hello"), false)
	requireContent(t, path, []byte("hello"))

	stats := cut(t, f)
	if stats.Files != 1 {
		t.Errorf("cut undid %d files, want 1", stats.Files)
	}
	if stats.Bytes != 0 {
		t.Errorf("cut wrote back %d bytes, want 0", stats.Bytes)
	}
	if stats.Truncated != 5 {
		t.Errorf("cut truncated %d bytes, want 5", stats.Truncated)
	}
	requireContent(t, path, nil)
}

func TestCut_SyncedWriteKept(t *testing.T) {
	f := Start(t)
	path := filepath.Join(f.Mountpoint, "a")
	writeFile(t, path, []byte("hello"), true)
	if n := f.Pending(); n != 0 {
		t.Errorf("%d files pending after fsync, want 0", n)
	}

	cut(t, f)
	requireContent(t, path, []byte("hello"))
}

func TestCut_WritesAfterSyncUndone(t *testing.T) {
	f := Start(t)
	path := filepath.Join(f.Mountpoint, "a")
	writeFile(t, path, []byte("synced"), true)
	file, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	if _, err := file.WriteAt([]byte("XY"), 1); err != nil {
		t.Fatal(err)
	}
	if _, err := file.WriteAt([]byte("tail"), 10); err != nil {
		t.Fatal(err)
	}
	if _, err := file.WriteAt([]byte("Z"), 2); err != nil {
		t.Fatal(err)
	}
	// Reading fills the page cache with the new contents, which the cut
	// must not serve afterwards.
	requireContent(t, path, []byte("sXZced\x00\x00\x00\x00tail"))
	file.Close()

	cut(t, f)
	requireContent(t, path, []byte("synced"))
}

func TestCut_FdatasyncKeepsData(t *testing.T) {
	f := Start(t)
	path := filepath.Join(f.Mountpoint, "a")
	writeFile(t, path, []byte("first"), false)
	file, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Fdatasync(int(file.Fd())); err != nil {
		t.Fatal(err)
	}
	file.Close()

	cut(t, f)
	requireContent(t, path, []byte("first"))
}

func TestCut_SyncedThenRenamedKept(t *testing.T) {
	f := Start(t)
	if err := os.Mkdir(filepath.Join(f.Mountpoint, "new"), 0o755); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(f.Mountpoint, "a.tmp")
	dst := filepath.Join(f.Mountpoint, "new", "a")
	writeFile(t, tmp, []byte("payload"), true)
	if err := os.Rename(tmp, dst); err != nil {
		t.Fatal(err)
	}

	cut(t, f)
	requireContent(t, dst, []byte("payload"))
	if _, err := os.Stat(tmp); !os.IsNotExist(err) {
		t.Errorf("stat %s after the rename and cut: %v, want not exist", tmp, err)
	}
}

func TestCut_UnsyncedRenamedUndoneAtNewName(t *testing.T) {
	f := Start(t)
	tmp := filepath.Join(f.Mountpoint, "a.tmp")
	dst := filepath.Join(f.Mountpoint, "a")
	writeFile(t, tmp, []byte("payload"), false)
	if err := os.Rename(tmp, dst); err != nil {
		t.Fatal(err)
	}

	cut(t, f)
	requireContent(t, dst, nil)
}

func TestCut_TruncateUndone(t *testing.T) {
	f := Start(t)
	path := filepath.Join(f.Mountpoint, "a")
	writeFile(t, path, []byte("0123456789"), true)
	if err := os.Truncate(path, 4); err != nil {
		t.Fatal(err)
	}
	requireContent(t, path, []byte("0123"))

	cut(t, f)
	requireContent(t, path, []byte("0123456789"))
}

func TestCut_TruncateThroughHandleUndone(t *testing.T) {
	f := Start(t)
	path := filepath.Join(f.Mountpoint, "a")
	writeFile(t, path, []byte("0123456789"), true)
	file, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := file.Truncate(2); err != nil {
		t.Fatal(err)
	}
	if err := file.Truncate(20); err != nil {
		t.Fatal(err)
	}
	file.Close()

	cut(t, f)
	requireContent(t, path, []byte("0123456789"))
}

func TestCut_OpenTruncUndone(t *testing.T) {
	f := Start(t)
	path := filepath.Join(f.Mountpoint, "a")
	writeFile(t, path, []byte("old contents"), true)
	if err := os.WriteFile(path, []byte("new"), 0o644); err != nil {
		t.Fatal(err)
	}
	requireContent(t, path, []byte("new"))

	cut(t, f)
	requireContent(t, path, []byte("old contents"))
}

func TestUnlink_DropsUndoLog(t *testing.T) {
	f := Start(t)
	path := filepath.Join(f.Mountpoint, "a")
	writeFile(t, path, []byte("gone"), false)
	if n := f.Pending(); n != 1 {
		t.Fatalf("%d files pending after an unsynced write, want 1", n)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if n := f.Pending(); n != 0 {
		t.Errorf("%d files pending after the unlink, want 0", n)
	}

	stats := cut(t, f)
	if stats.Files != 0 {
		t.Errorf("cut undid %d files, want 0", stats.Files)
	}
}

func TestRename_OverwrittenTargetLogDropped(t *testing.T) {
	f := Start(t)
	src := filepath.Join(f.Mountpoint, "src")
	dst := filepath.Join(f.Mountpoint, "dst")
	writeFile(t, dst, []byte("unsynced target"), false)
	writeFile(t, src, []byte("synced source"), true)
	if err := os.Rename(src, dst); err != nil {
		t.Fatal(err)
	}
	if n := f.Pending(); n != 0 {
		t.Errorf("%d files pending after the target was replaced, want 0", n)
	}

	cut(t, f)
	requireContent(t, dst, []byte("synced source"))
}

func TestHardLink_KeepsUndoLog(t *testing.T) {
	f := Start(t)
	path := filepath.Join(f.Mountpoint, "a")
	link := filepath.Join(f.Mountpoint, "b")
	writeFile(t, path, []byte("x"), true)
	writeFile(t, path, []byte("yy"), false)
	if err := os.Link(path, link); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}

	cut(t, f)
	requireContent(t, link, []byte("x"))
}

// TestMmap_ReadsWritesAndCut checks the access pattern of bbolt: pwrite
// through a descriptor, reads through a read-only shared mapping. Another
// process maps the file, because a page fault on the mount in this
// process can wait for a FUSE server goroutine that the Go runtime has
// stopped for garbage collection, and then neither ever proceeds.
func TestMmap_ReadsWritesAndCut(t *testing.T) {
	f := Start(t)
	path := filepath.Join(f.Mountpoint, "db")
	page := bytes.Repeat([]byte{'a'}, 4096)
	writeFile(t, path, page, true)

	file, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := file.WriteAt([]byte("bbbb"), 100); err != nil {
		t.Fatal(err)
	}
	if got := readMapped(t, path); got != "bbbb" {
		t.Errorf("mapping shows %q after pwrite, want %q", got, "bbbb")
	}
	file.Close()

	cut(t, f)
	if got := readMapped(t, path); got != "aaaa" {
		t.Errorf("mapping shows %q after the cut, want %q", got, "aaaa")
	}
}

// readMapped returns bytes 100 to 104 of path as a child process reads
// them through a read-only shared mapping.
func readMapped(t *testing.T, path string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestMmapReader$")
	cmd.Env = append(os.Environ(), mmapFileEnv+"="+path)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("mmap reader: %v\n%s", err, out)
	}
	got, _, _ := strings.Cut(string(out), "\n")
	return got
}

const mmapFileEnv = "LOSSFS_MMAP_FILE"

// TestMmapReader is the child process of readMapped. It does nothing
// unless the environment names a file.
func TestMmapReader(t *testing.T) {
	path := os.Getenv(mmapFileEnv)
	if path == "" {
		t.Skip("runs only as the child process of readMapped")
	}
	file, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	mem, err := syscall.Mmap(int(file.Fd()), 0, 4096, syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		t.Fatalf("mmap %s: %v", path, err)
	}
	defer syscall.Munmap(mem)
	fmt.Printf("%s\n", mem[100:104])
}

func TestWrite_ReachesServerBeforeReturn(t *testing.T) {
	f := Start(t)
	file, err := os.Create(filepath.Join(f.Mountpoint, "a"))
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	if _, err := file.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	// The descriptor is still open, so no close has flushed anything.
	if n := f.Pending(); n != 1 {
		t.Errorf("%d files pending right after write(2), want 1", n)
	}
}

func TestCut_DirectoryEntriesKept(t *testing.T) {
	f := Start(t)
	dir := filepath.Join(f.Mountpoint, "d")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "a"), []byte("x"), false)

	cut(t, f)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != "a" {
		t.Errorf("entries after the cut = %v, want just a", entries)
	}
}
