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

// startVolatile mounts lossfs with volatile directory entries and
// creates the directories a and b, durable in the root.
func startVolatile(t *testing.T) *FS {
	t.Helper()
	f := Start(t)
	if err := f.SetVolatileEntries(true); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"a", "b"} {
		if err := os.Mkdir(filepath.Join(f.Mountpoint, name), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	syncDir(t, f.Mountpoint)
	return f
}

func syncDir(t *testing.T, dir string) {
	t.Helper()
	d, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		t.Fatalf("fsync %s: %v", dir, err)
	}
}

func requireMissing(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("lstat %s: %v, want not exist", path, err)
	}
}

func requireExists(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Lstat(path); err != nil {
		t.Errorf("lstat %s: %v, want it to exist", path, err)
	}
}

func inodeOf(t *testing.T, path string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Lstat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func requireEntries(t *testing.T, stats CutStats, want int) {
	t.Helper()
	if stats.Entries != want {
		t.Errorf("cut undid %d entry changes, want %d", stats.Entries, want)
	}
}

func TestVolatile_CreateLostWithoutDirSync(t *testing.T) {
	f := startVolatile(t)
	path := filepath.Join(f.Mountpoint, "a", "x")
	writeFile(t, path, []byte("synced data"), true)

	stats := cut(t, f)
	requireEntries(t, stats, 1)
	if stats.Files != 0 {
		t.Errorf("cut undid the data of %d files, want 0 for a file that is gone", stats.Files)
	}
	requireMissing(t, path)
}

func TestVolatile_CreateKeptByDirSync(t *testing.T) {
	f := startVolatile(t)
	path := filepath.Join(f.Mountpoint, "a", "x")
	writeFile(t, path, []byte("synced data"), true)
	syncDir(t, filepath.Dir(path))

	requireEntries(t, cut(t, f), 0)
	requireContent(t, path, []byte("synced data"))
}

func TestVolatile_CreateKeptDataLost(t *testing.T) {
	f := startVolatile(t)
	path := filepath.Join(f.Mountpoint, "a", "x")
	writeFile(t, path, []byte("unsynced data"), false)
	syncDir(t, filepath.Dir(path))

	stats := cut(t, f)
	if stats.Files != 1 {
		t.Errorf("cut undid the data of %d files, want 1", stats.Files)
	}
	requireContent(t, path, nil)
}

func TestVolatile_FdatasyncOfDirKeepsEntries(t *testing.T) {
	f := startVolatile(t)
	path := filepath.Join(f.Mountpoint, "a", "x")
	writeFile(t, path, []byte("data"), true)
	dir, err := os.Open(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	err = unix.Fdatasync(int(dir.Fd()))
	dir.Close()
	if err != nil {
		t.Fatal(err)
	}

	cut(t, f)
	requireContent(t, path, []byte("data"))
}

func TestVolatile_MkdirLostWithContents(t *testing.T) {
	f := startVolatile(t)
	dir := filepath.Join(f.Mountpoint, "a", "d")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "x"), []byte("data"), true)
	syncDir(t, dir)

	requireEntries(t, cut(t, f), 1)
	requireMissing(t, dir)
}

func TestVolatile_MkdirKeptByParentSync(t *testing.T) {
	f := startVolatile(t)
	dir := filepath.Join(f.Mountpoint, "a", "d")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "x"), []byte("data"), true)
	syncDir(t, filepath.Dir(dir))

	requireEntries(t, cut(t, f), 1)
	requireExists(t, dir)
	requireMissing(t, filepath.Join(dir, "x"))
}

func TestVolatile_SymlinkFifoLinkLost(t *testing.T) {
	f := startVolatile(t)
	dir := filepath.Join(f.Mountpoint, "a")
	writeFile(t, filepath.Join(dir, "x"), []byte("data"), true)
	syncDir(t, dir)
	if err := os.Symlink("x", filepath.Join(dir, "symlink")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(dir, "x"), filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}

	requireEntries(t, cut(t, f), 3)
	for _, name := range []string{"symlink", "fifo", "link"} {
		requireMissing(t, filepath.Join(dir, name))
	}
	requireContent(t, filepath.Join(dir, "x"), []byte("data"))
}

func TestVolatile_SymlinkFifoLinkKeptByDirSync(t *testing.T) {
	f := startVolatile(t)
	dir := filepath.Join(f.Mountpoint, "a")
	writeFile(t, filepath.Join(dir, "x"), []byte("data"), true)
	if err := os.Symlink("x", filepath.Join(dir, "symlink")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(dir, "x"), filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	syncDir(t, dir)

	requireEntries(t, cut(t, f), 0)
	requireContent(t, filepath.Join(dir, "symlink"), []byte("data"))
	requireContent(t, filepath.Join(dir, "link"), []byte("data"))
	requireExists(t, filepath.Join(dir, "fifo"))
}

func TestVolatile_UnlinkUndoneWithSameInode(t *testing.T) {
	f := startVolatile(t)
	path := filepath.Join(f.Mountpoint, "a", "x")
	writeFile(t, path, []byte("synced"), true)
	syncDir(t, filepath.Dir(path))
	ino := inodeOf(t, path)
	writeFile(t, path, []byte("unsynced"), false)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	requireMissing(t, path)

	stats := cut(t, f)
	requireEntries(t, stats, 1)
	if stats.Files != 1 {
		t.Errorf("cut undid the data of %d files, want 1", stats.Files)
	}
	requireContent(t, path, []byte("synced"))
	if got := inodeOf(t, path); got != ino {
		t.Errorf("inode after the cut = %d, want %d as before the unlink", got, ino)
	}
}

func TestVolatile_UnlinkKeptByDirSync(t *testing.T) {
	f := startVolatile(t)
	path := filepath.Join(f.Mountpoint, "a", "x")
	writeFile(t, path, []byte("synced"), true)
	syncDir(t, filepath.Dir(path))
	writeFile(t, path, []byte("unsynced"), false)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	syncDir(t, filepath.Dir(path))
	if n := f.Pending(); n != 0 {
		t.Errorf("%d files pending after the unlink became durable, want 0", n)
	}

	requireEntries(t, cut(t, f), 0)
	requireMissing(t, path)
}

func TestVolatile_RmdirUndoneAndKept(t *testing.T) {
	f := startVolatile(t)
	a := filepath.Join(f.Mountpoint, "a")
	b := filepath.Join(f.Mountpoint, "b")
	ino := inodeOf(t, a)
	for _, dir := range []string{a, b} {
		if err := os.Remove(dir); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(f.Mountpoint, "c"), 0o755); err != nil {
		t.Fatal(err)
	}
	syncDir(t, f.Mountpoint)
	// Only the removal of a stays pending.
	if err := os.Mkdir(a, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(a); err != nil {
		t.Fatal(err)
	}

	requireEntries(t, cut(t, f), 2)
	requireMissing(t, a)
	requireMissing(t, b)
	requireExists(t, filepath.Join(f.Mountpoint, "c"))

	f2 := startVolatile(t)
	dir := filepath.Join(f2.Mountpoint, "a")
	ino = inodeOf(t, dir)
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	requireEntries(t, cut(t, f2), 1)
	if got := inodeOf(t, dir); got != ino {
		t.Errorf("inode of the directory after the cut = %d, want %d as before the rmdir", got, ino)
	}
}

func TestVolatile_RemoveChecks(t *testing.T) {
	f := startVolatile(t)
	dir := filepath.Join(f.Mountpoint, "a")
	writeFile(t, filepath.Join(dir, "x"), nil, false)
	if err := syscall.Rmdir(dir); err != syscall.ENOTEMPTY {
		t.Errorf("rmdir of a directory with an entry: %v, want ENOTEMPTY", err)
	}
	if err := syscall.Unlink(dir); err != syscall.EISDIR {
		t.Errorf("unlink of a directory: %v, want EISDIR", err)
	}
	if err := syscall.Rmdir(filepath.Join(dir, "x")); err != syscall.ENOTDIR {
		t.Errorf("rmdir of a file: %v, want ENOTDIR", err)
	}
	requireExists(t, filepath.Join(dir, "x"))
}

// TestVolatile_RenameFile covers which names a renamed file has after a
// cut, by which of its two directories were synced after the rename.
func TestVolatile_RenameFile(t *testing.T) {
	for _, tc := range []struct {
		name         string
		syncA, syncB bool
		wantA, wantB bool
	}{
		{"neither synced", false, false, true, false},
		{"target synced", false, true, true, true},
		{"source synced", true, false, false, false},
		{"both synced", true, true, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := startVolatile(t)
			src := filepath.Join(f.Mountpoint, "a", "x")
			dst := filepath.Join(f.Mountpoint, "b", "y")
			writeFile(t, src, []byte("data"), true)
			syncDir(t, filepath.Dir(src))
			if err := os.Rename(src, dst); err != nil {
				t.Fatal(err)
			}
			if tc.syncA {
				syncDir(t, filepath.Dir(src))
			}
			if tc.syncB {
				syncDir(t, filepath.Dir(dst))
			}

			cut(t, f)
			for _, c := range []struct {
				path string
				want bool
			}{{src, tc.wantA}, {dst, tc.wantB}} {
				if c.want {
					requireContent(t, c.path, []byte("data"))
				} else {
					requireMissing(t, c.path)
				}
			}
		})
	}
}

func TestVolatile_RenameReplacedTargetBack(t *testing.T) {
	f := startVolatile(t)
	src := filepath.Join(f.Mountpoint, "a", "x")
	dst := filepath.Join(f.Mountpoint, "b", "y")
	writeFile(t, src, []byte("source"), true)
	writeFile(t, dst, []byte("target"), true)
	syncDir(t, filepath.Dir(src))
	syncDir(t, filepath.Dir(dst))
	ino := inodeOf(t, dst)
	if err := os.Rename(src, dst); err != nil {
		t.Fatal(err)
	}
	requireContent(t, dst, []byte("source"))

	requireEntries(t, cut(t, f), 2)
	requireContent(t, src, []byte("source"))
	requireContent(t, dst, []byte("target"))
	if got := inodeOf(t, dst); got != ino {
		t.Errorf("inode of the replaced target after the cut = %d, want %d", got, ino)
	}
}

func TestVolatile_RenameReplaceKeptByTargetSync(t *testing.T) {
	f := startVolatile(t)
	src := filepath.Join(f.Mountpoint, "a", "x")
	dst := filepath.Join(f.Mountpoint, "a", "y")
	writeFile(t, src, []byte("source"), true)
	writeFile(t, dst, []byte("target"), true)
	syncDir(t, filepath.Dir(src))
	if err := os.Rename(src, dst); err != nil {
		t.Fatal(err)
	}
	syncDir(t, filepath.Dir(src))

	requireEntries(t, cut(t, f), 0)
	requireMissing(t, src)
	requireContent(t, dst, []byte("source"))
}

func TestVolatile_RenameNoReplace(t *testing.T) {
	f := startVolatile(t)
	src := filepath.Join(f.Mountpoint, "a", "x")
	dst := filepath.Join(f.Mountpoint, "b", "y")
	writeFile(t, src, []byte("source"), true)
	writeFile(t, dst, []byte("target"), true)
	err := unix.Renameat2(unix.AT_FDCWD, src, unix.AT_FDCWD, dst, unix.RENAME_NOREPLACE)
	if err != unix.EEXIST {
		t.Errorf("rename without replacing onto an existing name: %v, want EEXIST", err)
	}
	requireContent(t, src, []byte("source"))
	requireContent(t, dst, []byte("target"))

	other := filepath.Join(f.Mountpoint, "b", "z")
	if err := unix.Renameat2(unix.AT_FDCWD, src, unix.AT_FDCWD, other, unix.RENAME_NOREPLACE); err != nil {
		t.Fatal(err)
	}
	requireContent(t, other, []byte("source"))
	// The creations of x and y are pending too, so all three go.
	requireEntries(t, cut(t, f), 4)
	requireMissing(t, src)
	requireMissing(t, dst)
	requireMissing(t, other)
}

func TestVolatile_RenameChecks(t *testing.T) {
	f := startVolatile(t)
	file := filepath.Join(f.Mountpoint, "a", "x")
	writeFile(t, file, nil, true)
	full := filepath.Join(f.Mountpoint, "a")
	empty := filepath.Join(f.Mountpoint, "b")
	// os.Rename rejects a directory as the target itself, so these
	// call rename(2) directly.
	if err := syscall.Rename(file, empty); err != syscall.EISDIR {
		t.Errorf("rename of a file onto a directory: %v, want EISDIR", err)
	}
	if err := syscall.Rename(empty, full); err != syscall.ENOTEMPTY {
		t.Errorf("rename of a directory onto one with entries: %v, want ENOTEMPTY", err)
	}
	if err := syscall.Rename(empty, file); err != syscall.ENOTDIR {
		t.Errorf("rename of a directory onto a file: %v, want ENOTDIR", err)
	}
	requireExists(t, file)
	requireExists(t, empty)
}

func TestVolatile_RenameSameInodeNothing(t *testing.T) {
	f := startVolatile(t)
	path := filepath.Join(f.Mountpoint, "a", "x")
	link := filepath.Join(f.Mountpoint, "a", "y")
	writeFile(t, path, []byte("data"), true)
	if err := os.Link(path, link); err != nil {
		t.Fatal(err)
	}
	syncDir(t, filepath.Dir(path))
	if err := os.Rename(path, link); err != nil {
		t.Fatal(err)
	}

	requireEntries(t, cut(t, f), 0)
	requireContent(t, path, []byte("data"))
	requireContent(t, link, []byte("data"))
}

// TestVolatile_RenameDir covers a renamed directory, which cannot have
// two names: when only the target directory was synced, it keeps the
// new name alone.
func TestVolatile_RenameDir(t *testing.T) {
	for _, tc := range []struct {
		name             string
		syncOld, syncNew bool
		wantOld, wantNew bool
	}{
		{"neither synced", false, false, true, false},
		{"target synced", false, true, false, true},
		{"source synced", true, false, false, false},
		{"both synced", true, true, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := startVolatile(t)
			oldPath := filepath.Join(f.Mountpoint, "a", "d")
			newPath := filepath.Join(f.Mountpoint, "b", "e")
			if err := os.Mkdir(oldPath, 0o755); err != nil {
				t.Fatal(err)
			}
			writeFile(t, filepath.Join(oldPath, "x"), []byte("data"), true)
			syncDir(t, oldPath)
			syncDir(t, filepath.Dir(oldPath))
			if err := os.Rename(oldPath, newPath); err != nil {
				t.Fatal(err)
			}
			if tc.syncOld {
				syncDir(t, filepath.Dir(oldPath))
			}
			if tc.syncNew {
				syncDir(t, filepath.Dir(newPath))
			}

			cut(t, f)
			for _, c := range []struct {
				path string
				want bool
			}{{oldPath, tc.wantOld}, {newPath, tc.wantNew}} {
				if c.want {
					requireContent(t, filepath.Join(c.path, "x"), []byte("data"))
				} else {
					requireMissing(t, c.path)
				}
			}
		})
	}
}

func TestVolatile_RenameDirOverEmptyDirBack(t *testing.T) {
	f := startVolatile(t)
	a := filepath.Join(f.Mountpoint, "a")
	b := filepath.Join(f.Mountpoint, "b")
	writeFile(t, filepath.Join(a, "x"), []byte("data"), true)
	syncDir(t, a)
	inoB := inodeOf(t, b)
	if err := syscall.Rename(a, b); err != nil {
		t.Fatal(err)
	}
	requireContent(t, filepath.Join(b, "x"), []byte("data"))

	requireEntries(t, cut(t, f), 2)
	requireContent(t, filepath.Join(a, "x"), []byte("data"))
	if got := inodeOf(t, b); got != inoB {
		t.Errorf("inode of the replaced directory after the cut = %d, want %d", got, inoB)
	}
}

// TestVolatile_ProducerProtocol drops a file as the spool directory
// protocol requires of producers: it survives the cut in new/, and tmp/,
// which the producer does not sync, is empty again.
func TestVolatile_ProducerProtocol(t *testing.T) {
	f := startVolatile(t)
	tmp := filepath.Join(f.Mountpoint, "a", "x.part")
	dst := filepath.Join(f.Mountpoint, "b", "x.msg")
	writeFile(t, tmp, []byte("payload"), true)
	if err := os.Rename(tmp, dst); err != nil {
		t.Fatal(err)
	}
	syncDir(t, filepath.Dir(dst))

	cut(t, f)
	requireContent(t, dst, []byte("payload"))
	requireMissing(t, tmp)
}

func TestVolatile_TurnedOffMakesEntriesDurable(t *testing.T) {
	f := startVolatile(t)
	created := filepath.Join(f.Mountpoint, "a", "x")
	removed := filepath.Join(f.Mountpoint, "b")
	writeFile(t, created, []byte("data"), true)
	if err := os.Remove(removed); err != nil {
		t.Fatal(err)
	}
	if err := f.SetVolatileEntries(false); err != nil {
		t.Fatal(err)
	}

	requireEntries(t, cut(t, f), 0)
	requireContent(t, created, []byte("data"))
	requireMissing(t, removed)
}

func TestVolatile_UnmountKeepsEntries(t *testing.T) {
	f := startVolatile(t)
	writeFile(t, filepath.Join(f.Mountpoint, "a", "x"), []byte("data"), true)
	if err := os.Remove(filepath.Join(f.Mountpoint, "b")); err != nil {
		t.Fatal(err)
	}
	if err := f.Unmount(); err != nil {
		t.Fatal(err)
	}
	requireContent(t, filepath.Join(f.Backing, "a", "x"), []byte("data"))
	requireMissing(t, filepath.Join(f.Backing, "b"))
	held := filepath.Join(filepath.Dir(f.Backing), ".backing.lossfs-held")
	requireMissing(t, held)
}

func ctimeOf(t *testing.T, path string) syscall.Timespec {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Lstat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ctim
}

// waitClockTick sleeps for longer than a tick of the coarse kernel clock
// that stamps change times (at most 10 ms, for HZ of 100 or more), so
// that a later change gets a later change time.
func waitClockTick() { time.Sleep(20 * time.Millisecond) }

func requireCtime(t *testing.T, path string, want syscall.Timespec) {
	t.Helper()
	if got := ctimeOf(t, path); got != want {
		t.Errorf("change time of %s = %d.%09d, want %d.%09d", path, got.Sec, got.Nsec, want.Sec, want.Nsec)
	}
}

func TestVolatile_UnlinkUndoneKeepsCtime(t *testing.T) {
	f := startVolatile(t)
	path := filepath.Join(f.Mountpoint, "a", "x")
	writeFile(t, path, []byte("synced"), true)
	syncDir(t, filepath.Dir(path))
	ctime := ctimeOf(t, path)
	waitClockTick()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}

	cut(t, f)
	requireCtime(t, path, ctime)

	// The next change of the program's own shows its real change time.
	waitClockTick()
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	if got := ctimeOf(t, path); got == ctime {
		t.Errorf("change time of %s did not move with a chmod after the cut", path)
	}
}

// TestVolatile_RenameKeepsCtime covers the change time of a renamed file
// after a cut: that from before the rename when the rename is undone
// as a whole, and that from after it when the new name stays.
func TestVolatile_RenameKeepsCtime(t *testing.T) {
	for _, tc := range []struct {
		name        string
		syncB       bool
		wantRenamed bool
	}{
		{"neither synced", false, false},
		{"target synced", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := startVolatile(t)
			src := filepath.Join(f.Mountpoint, "a", "x")
			dst := filepath.Join(f.Mountpoint, "b", "y")
			writeFile(t, src, []byte("data"), true)
			syncDir(t, filepath.Dir(src))
			before := ctimeOf(t, src)
			waitClockTick()
			if err := os.Rename(src, dst); err != nil {
				t.Fatal(err)
			}
			after := ctimeOf(t, dst)
			if tc.syncB {
				syncDir(t, filepath.Dir(dst))
			}
			waitClockTick()

			cut(t, f)
			want := before
			if tc.wantRenamed {
				want = after
				requireCtime(t, dst, want)
			}
			requireCtime(t, src, want)
		})
	}
}

func TestVolatile_SourceDirSyncKeepsCtime(t *testing.T) {
	f := startVolatile(t)
	src := filepath.Join(f.Mountpoint, "a", "x")
	dst := filepath.Join(f.Mountpoint, "b", "y")
	writeFile(t, src, []byte("data"), true)
	if err := os.Rename(src, dst); err != nil {
		t.Fatal(err)
	}
	syncDir(t, filepath.Dir(dst))
	ctime := ctimeOf(t, dst)
	waitClockTick()
	// The sync removes the link that held the old name for an undo.
	syncDir(t, filepath.Dir(src))
	requireCtime(t, dst, ctime)

	cut(t, f)
	requireCtime(t, dst, ctime)
}

func mkdir(t *testing.T, path string) {
	t.Helper()
	if err := os.Mkdir(path, 0o755); err != nil {
		t.Fatal(err)
	}
}

func rename(t *testing.T, from, to string) {
	t.Helper()
	if err := os.Rename(from, to); err != nil {
		t.Fatal(err)
	}
}

func remove(t *testing.T, path string) {
	t.Helper()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
}

func requireInode(t *testing.T, path string, want uint64) {
	t.Helper()
	if got := inodeOf(t, path); got != want {
		t.Errorf("inode of %s = %d, want %d", path, got, want)
	}
}

func requireHoldEmpty(t *testing.T, f *FS) {
	t.Helper()
	held, err := os.ReadDir(filepath.Join(filepath.Dir(f.Backing), ".backing.lossfs-held"))
	if err != nil {
		t.Fatal(err)
	}
	if len(held) != 0 {
		t.Errorf("holding directory after the cut contains %d entries, want 0", len(held))
	}
}

// TestVolatile_NameReusedUndone removes a file with unsynced data and
// creates another under its name: the cut brings back the first inode
// with its synced data.
func TestVolatile_NameReusedUndone(t *testing.T) {
	f := startVolatile(t)
	path := filepath.Join(f.Mountpoint, "a", "x")
	writeFile(t, path, []byte("one"), true)
	syncDir(t, filepath.Dir(path))
	ino := inodeOf(t, path)
	writeFile(t, path, []byte("two"), false)
	remove(t, path)
	writeFile(t, path, []byte("three"), true)

	cut(t, f)
	requireContent(t, path, []byte("one"))
	requireInode(t, path, ino)
}

// TestVolatile_RmdirWithPendingInside removes a synced file and then its
// directory. The file comes back only when the rmdir is undone too.
func TestVolatile_RmdirWithPendingInside(t *testing.T) {
	for _, syncParent := range []bool{false, true} {
		t.Run(fmt.Sprintf("parent synced %v", syncParent), func(t *testing.T) {
			f := startVolatile(t)
			dir := filepath.Join(f.Mountpoint, "a", "d")
			file := filepath.Join(dir, "x")
			mkdir(t, dir)
			syncDir(t, filepath.Dir(dir))
			writeFile(t, file, []byte("data"), true)
			syncDir(t, dir)
			remove(t, file)
			remove(t, dir)
			if syncParent {
				syncDir(t, filepath.Dir(dir))
			}

			cut(t, f)
			if syncParent {
				requireMissing(t, dir)
			} else {
				requireContent(t, file, []byte("data"))
			}
			requireHoldEmpty(t, f)
		})
	}
}

// TestVolatile_RenamedDirChangedInside creates a file in a renamed
// directory and syncs the directory but neither parent: the directory
// goes back to its old name with the file in it.
func TestVolatile_RenamedDirChangedInside(t *testing.T) {
	f := startVolatile(t)
	oldPath := filepath.Join(f.Mountpoint, "a", "d")
	newPath := filepath.Join(f.Mountpoint, "b", "e")
	mkdir(t, oldPath)
	syncDir(t, filepath.Dir(oldPath))
	rename(t, oldPath, newPath)
	writeFile(t, filepath.Join(newPath, "x"), []byte("data"), true)
	syncDir(t, newPath)

	cut(t, f)
	requireContent(t, filepath.Join(oldPath, "x"), []byte("data"))
	requireMissing(t, newPath)
}

func TestVolatile_RenameBackAndForth(t *testing.T) {
	f := startVolatile(t)
	x := filepath.Join(f.Mountpoint, "a", "x")
	y := filepath.Join(f.Mountpoint, "a", "y")
	writeFile(t, x, []byte("data"), true)
	syncDir(t, filepath.Dir(x))
	ino := inodeOf(t, x)
	rename(t, x, y)
	rename(t, y, x)
	rename(t, x, y)

	requireEntries(t, cut(t, f), 6)
	requireContent(t, x, []byte("data"))
	requireInode(t, x, ino)
	requireMissing(t, y)
	requireHoldEmpty(t, f)
}

// TestVolatile_RenameSourceNameReused syncs only the target directory of
// a rename and then creates a new file under the old name: the cut
// removes the new file and brings the renamed one back under both names.
func TestVolatile_RenameSourceNameReused(t *testing.T) {
	f := startVolatile(t)
	x := filepath.Join(f.Mountpoint, "a", "x")
	y := filepath.Join(f.Mountpoint, "b", "y")
	writeFile(t, x, []byte("old"), true)
	syncDir(t, filepath.Dir(x))
	rename(t, x, y)
	syncDir(t, filepath.Dir(y))
	writeFile(t, x, []byte("new"), true)

	cut(t, f)
	requireContent(t, x, []byte("old"))
	requireContent(t, y, []byte("old"))
	requireInode(t, x, inodeOf(t, y))
}

// TestVolatile_RenameOverLinkedTarget replaces a name whose inode has a
// second link and unsynced data. The replacement is durable, so the
// inode lives on under its other name, with its synced data.
func TestVolatile_RenameOverLinkedTarget(t *testing.T) {
	f := startVolatile(t)
	x := filepath.Join(f.Mountpoint, "a", "x")
	y := filepath.Join(f.Mountpoint, "a", "y")
	z := filepath.Join(f.Mountpoint, "b", "z")
	writeFile(t, x, []byte("source"), true)
	writeFile(t, y, []byte("target"), true)
	if err := os.Link(y, z); err != nil {
		t.Fatal(err)
	}
	syncDir(t, filepath.Dir(x))
	syncDir(t, filepath.Dir(z))
	writeFile(t, z, []byte("unsynced"), false)
	rename(t, x, y)
	syncDir(t, filepath.Dir(y))

	stats := cut(t, f)
	requireEntries(t, stats, 0)
	if stats.Files != 1 {
		t.Errorf("cut undid the data of %d files, want 1", stats.Files)
	}
	requireContent(t, y, []byte("source"))
	requireMissing(t, x)
	requireContent(t, z, []byte("target"))
}
