package spool

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// fillAndClose appends n messages with payloads of about size bytes and
// closes the spool cleanly.
func fillAndClose(t *testing.T, opts Options, n, size int) {
	t.Helper()
	s, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	for first := 0; first < n; first += 500 {
		f := batch("f", first, min(500, n-first))
		for i := range f.Messages {
			f.Messages[i].Payload = append(f.Messages[i].Payload, strings.Repeat("x", size)...)
		}
		mustAppend(t, s, f)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestCorruptRecordIsQuarantined(t *testing.T) {
	opts := testOptions(t)
	fillAndClose(t, opts, 100, 10)

	db, err := bolt.Open(opts.Path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketMessages)
		return b.Put(seqKey(50), flipBit(b.Get(seqKey(50)), 12))
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}

	var q quarantined
	opts.Quarantine = q.fn
	s := openSpool(t, opts)
	recs := drain(t, s.NewCursor())
	equal(t, "records read", len(recs), 99)
	for _, r := range recs {
		if r.Seq == 50 {
			t.Fatal("cursor returned the corrupt record")
		}
	}
	equal(t, "quarantined seqs", q.seqs, []uint64{50})
	equal(t, "quarantined message", q.msgs[0] == nil, true)
	equal(t, "messages", s.Stats().Messages, int64(99))
	equal(t, "seq 50 present", present(t, s, 50), false)
	// A second cursor finds nothing more to quarantine.
	equal(t, "records read again", len(drain(t, s.NewCursor())), 99)
	equal(t, "quarantine calls", q.count(), 1)
}

func TestTruncatedFileIsRenamedAside(t *testing.T) {
	opts := testOptions(t)
	fillAndClose(t, opts, 2000, 200)
	// bbolt grows the file ahead of use, so cut 1000 bytes from the end
	// of the pages in use rather than from the end of the file.
	if err := os.Truncate(opts.Path, inUseSize(t, opts.Path)-1000); err != nil {
		t.Fatal(err)
	}
	checkRenamedAndSalvaged(t, opts, 1900)
}

func TestTruncatedUnusedTailStillOpens(t *testing.T) {
	opts := testOptions(t)
	fillAndClose(t, opts, 2000, 200)
	if err := os.Truncate(opts.Path, inUseSize(t, opts.Path)); err != nil {
		t.Fatal(err)
	}
	s := openSpool(t, opts)
	equal(t, "renamed aside", s.RenamedAside(), "")
	equal(t, "messages", s.Stats().Messages, int64(2000))
}

// inUseSize returns the bytes of the pages below the high water mark.
func inUseSize(t *testing.T, path string) int64 {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var size int64
	db.View(func(tx *bolt.Tx) error {
		size = tx.Size()
		return nil
	})
	return size
}

func TestZeroedPageIsRenamedAside(t *testing.T) {
	opts := testOptions(t)
	fillAndClose(t, opts, 2000, 200)
	zeroMiddlePage(t, opts.Path)
	checkRenamedAndSalvaged(t, opts, 1900)
}

// After a crash the file holds no list of free pages, and bbolt walks every
// page to rebuild it, in a goroutine that panics on a damaged page. The
// check in a child process must catch that and rename the file aside.
func TestCrashImageWithZeroedPageIsRenamedAside(t *testing.T) {
	opts := testOptions(t)
	fillCrashImage(t, opts, 2000, 200)
	if !needsPageWalk(opts.Path) {
		t.Fatal("the crash image has a stored list of free pages; the test needs one without")
	}
	zeroMiddlePage(t, opts.Path)
	checkRenamedAndSalvaged(t, opts, 1900)
}

// A damaged list of free pages makes bbolt panic inside its Open, which
// then leaves the file open and locked by this process. The rename aside
// must not wait for that lock as if another process held it.
func TestDamagedFreePageListIsRenamedAside(t *testing.T) {
	opts := testOptions(t)
	fillAndClose(t, opts, 2000, 200)
	f, err := os.OpenFile(opts.Path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	metas := readMetas(f)
	if len(metas) == 0 || metas[0].freelist == noFreelist {
		t.Fatal("the file has no stored list of free pages; the test needs one")
	}
	garbage := bytes.Repeat([]byte{0x5a, 0xc3, 0x17, 0x88}, int(metas[0].pageSize)/4)
	if _, err := f.WriteAt(garbage, int64(metas[0].freelist)*int64(metas[0].pageSize)); err != nil {
		t.Fatal(err)
	}
	f.Close()

	checkRenamedAndSalvaged(t, opts, 1900)
}

func TestCleanCloseStoresFreePageList(t *testing.T) {
	opts := testOptions(t)
	fillAndClose(t, opts, 100, 10)
	if needsPageWalk(opts.Path) {
		t.Error("a cleanly closed file has no stored list of free pages, so every start walks all pages")
	}
}

// fillCrashImage writes n messages of size bytes through an open spool and
// copies the file to opts.Path before closing it, which is what a crash
// after the last commit leaves behind.
func fillCrashImage(t *testing.T, opts Options, n, size int) {
	t.Helper()
	live := opts
	live.Path = filepath.Join(t.TempDir(), "live.db")
	s, err := Open(live)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for first := 0; first < n; first += 500 {
		f := batch("f", first, min(500, n-first))
		for i := range f.Messages {
			f.Messages[i].Payload = append(f.Messages[i].Payload, strings.Repeat("x", size)...)
		}
		mustAppend(t, s, f)
	}
	data, err := os.ReadFile(live.Path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(opts.Path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// checkRenamedAndSalvaged opens the damaged database, expects it renamed
// aside and replaced by a working empty one, then salvages at least
// minCopied messages, in order, from the renamed file.
func checkRenamedAndSalvaged(t *testing.T, opts Options, minCopied int) {
	t.Helper()
	s := openSpool(t, opts)
	aside := s.RenamedAside()
	if aside == "" {
		t.Fatal("damaged database was not renamed aside")
	}
	if !strings.HasPrefix(filepath.Base(aside), "spool.db.corrupt-") {
		t.Fatalf("renamed to %s, want spool.db.corrupt-TIMESTAMP", aside)
	}
	equal(t, "messages in fresh spool", s.Stats().Messages, int64(0))
	mustAppend(t, s, batch("new", 0, 1))

	var last uint64
	copied, skipped, err := Salvage(aside, func(r Record) error {
		if r.Seq <= last {
			t.Fatalf("salvaged seq %d after %d", r.Seq, last)
		}
		last = r.Seq
		return nil
	})
	if err != nil {
		t.Fatalf("Salvage: %v", err)
	}
	t.Logf("salvaged %d, skipped %d", copied, skipped)
	if copied < minCopied || copied > 2000 {
		t.Fatalf("salvaged %d messages, want between %d and 2000", copied, minCopied)
	}
}

func TestSalvageIntactFile(t *testing.T) {
	opts := testOptions(t)
	fillAndClose(t, opts, 300, 10)
	var payloads []string
	copied, skipped, err := Salvage(opts.Path, func(r Record) error {
		payloads = append(payloads, string(r.Message.Payload))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	equal(t, "copied", copied, 300)
	equal(t, "skipped", skipped, 0)
	equal(t, "first payload", payloads[0], "payload 0"+strings.Repeat("x", 10))
}

func TestSalvagePageScanMatchesBolt(t *testing.T) {
	opts := testOptions(t)
	fillAndClose(t, opts, 1000, 100)
	f, err := os.Open(opts.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	found, skipped, err := scanPages(f, fileSize(opts.Path))
	if err != nil {
		t.Fatal(err)
	}
	equal(t, "found", len(found), 1000)
	equal(t, "skipped", skipped, 0)
}

func TestSalvageStopsOnCallbackError(t *testing.T) {
	opts := testOptions(t)
	fillAndClose(t, opts, 10, 1)
	stop := errors.New("stop")
	copied, _, err := Salvage(opts.Path, func(r Record) error {
		if r.Seq == 3 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) {
		t.Fatalf("Salvage error = %v, want the callback's error", err)
	}
	equal(t, "copied", copied, 2)
}

func TestUncleanStopRunsCheck(t *testing.T) {
	opts := testOptions(t)
	s, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	mustAppend(t, s, batch("a", 0, 3))
	// Close bbolt without the clean marker, as a kill would leave it.
	s.db.Close()

	s = openSpool(t, opts)
	equal(t, "renamed aside", s.RenamedAside(), "")
	equal(t, "messages", s.Stats().Messages, int64(3))
}

func TestOpenCreatesMissingDirectory(t *testing.T) {
	opts := testOptions(t)
	opts.Path = filepath.Join(t.TempDir(), "missing", "spool.db")
	s, err := Open(opts)
	if err != nil {
		t.Fatalf("Open in a missing directory: %v", err)
	}
	s.Close()
}

// A state directory that is a symbolic link to a missing target, as to a
// disk not mounted yet, is not created: the error names the target.
func TestOpenDanglingLinkNamesTarget(t *testing.T) {
	opts := testOptions(t)
	base := t.TempDir()
	target := filepath.Join(base, "not-mounted", "state")
	if err := os.Symlink(target, filepath.Join(base, "state")); err != nil {
		t.Fatal(err)
	}
	opts.Path = filepath.Join(base, "state", "spool.db")
	_, err := Open(opts)
	if err == nil || !strings.Contains(err.Error(), target) || !strings.Contains(err.Error(), "point the link") {
		t.Fatalf("Open below a dangling link: %v, want an error naming %s and the fix", err, target)
	}
	if _, err := os.Stat(target); err == nil {
		t.Errorf("Open created the link's target %s", target)
	}
}

func TestOpenUnusableDirectoryIsNotDamage(t *testing.T) {
	opts := testOptions(t)
	file := filepath.Join(t.TempDir(), "a-file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	opts.Path = filepath.Join(file, "spool.db")
	_, err := Open(opts)
	if err == nil {
		t.Fatal("Open succeeded below a regular file")
	}
	if errors.Is(err, ErrCorrupt) || strings.Contains(err.Error(), "renamed") {
		t.Fatalf("Open error = %v, want a plain open error", err)
	}
}

func TestGarbageFileIsRenamedAside(t *testing.T) {
	opts := testOptions(t)
	if err := os.WriteFile(opts.Path, []byte(strings.Repeat("not a database ", 2000)), 0o600); err != nil {
		t.Fatal(err)
	}
	s := openSpool(t, opts)
	if s.RenamedAside() == "" {
		t.Fatal("garbage file was not renamed aside")
	}
	if _, err := os.Stat(s.RenamedAside()); err != nil {
		t.Fatalf("renamed file: %v", err)
	}
	mustAppend(t, s, batch("a", 0, 1))
}

func TestLockedDamagedFileIsNotRenamed(t *testing.T) {
	opts := testOptions(t)
	if err := os.WriteFile(opts.Path, []byte(strings.Repeat("damaged ", 2000)), 0o600); err != nil {
		t.Fatal(err)
	}
	unlock, err := lockFile(opts.Path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()

	opts.LockTimeout = 50 * time.Millisecond
	if _, err := Open(opts); !errors.Is(err, ErrLocked) {
		t.Fatalf("Open error = %v, want ErrLocked", err)
	}
	if _, err := os.Stat(opts.Path); err != nil {
		t.Fatalf("locked file was moved: %v", err)
	}
}

func TestDamageFoundWhileRunningIsRenamedOnRestart(t *testing.T) {
	opts := testOptions(t)
	fillAndClose(t, opts, 2000, 200)
	zeroMiddlePage(t, opts.Path)

	// Pretend the file is too large to check after a clean stop.
	saved := alwaysCheckBelow
	alwaysCheckBelow = 0
	defer func() { alwaysCheckBelow = saved }()

	s, err := Open(opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	equal(t, "renamed aside at first open", s.RenamedAside(), "")
	c := s.NewCursor()
	for {
		_, ok, err := c.Next()
		if errors.Is(err, ErrCorrupt) {
			select {
			case <-s.Damaged():
			default:
				t.Error("Damaged not closed after ErrCorrupt")
			}
			break
		}
		if err != nil {
			t.Fatalf("Next error = %v, want ErrCorrupt", err)
		}
		if !ok {
			t.Fatal("cursor read past a zeroed page without an error")
		}
	}
	s.Close()

	s = openSpool(t, opts)
	if s.RenamedAside() == "" {
		t.Fatal("database was not renamed aside after damage was found while running")
	}
}

func zeroMiddlePage(t *testing.T, path string) {
	t.Helper()
	size := inUseSize(t, path)
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(make([]byte, 4096), size/2/4096*4096); err != nil {
		t.Fatal(err)
	}
}

func TestReadOnlyOpenOfEmptyFile(t *testing.T) {
	opts := testOptions(t)
	if err := os.WriteFile(opts.Path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	opts.ReadOnly = true
	_, err := Open(opts)
	if err == nil || !strings.Contains(err.Error(), "is empty (0 bytes)") {
		t.Errorf("read-only open of a 0-byte file: %v, want an error that says it is empty", err)
	}
}

// A value size in a leaf page that reaches past the end of the file
// passes bbolt's Check, and the first read of that value faults. Open
// must find it, so the restart after the fault renames the file aside
// instead of faulting again.
func TestOversizedValueIsRenamedAside(t *testing.T) {
	opts := testOptions(t)
	fillAndClose(t, opts, 2000, 200)
	setValueSize(t, opts.Path, []byte("payload 1000x"), 0xff0035)
	checkRenamedAndSalvaged(t, opts, 1900)
}

// setValueSize finds the leaf element whose key or value contains needle and
// overwrites its value size with size. It reads bbolt's page layout: a
// 16-byte page header with the element count at byte 10, then 16-byte
// leaf elements of flags, pos, ksize and vsize, in the machine's byte
// order, with pos counted from the element.
func setValueSize(t *testing.T, path string, needle []byte, size uint32) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	at := bytes.Index(data, needle)
	if at < 0 {
		t.Fatalf("%q not found in %s", needle, path)
	}
	pageSize := os.Getpagesize()
	page := at / pageSize * pageSize
	count := int(binary.NativeEndian.Uint16(data[page+10:]))
	for i := range count {
		elem := page + 16 + 16*i
		pos := int(binary.NativeEndian.Uint32(data[elem+4:]))
		ksize := int(binary.NativeEndian.Uint32(data[elem+8:]))
		vsize := int(binary.NativeEndian.Uint32(data[elem+12:]))
		if at < elem+pos || at >= elem+pos+ksize+vsize {
			continue
		}
		binary.NativeEndian.PutUint32(data[elem+12:], size)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Fatalf("no leaf element on the page at offset %d contains %q", page, needle)
}

// memoryFault imitates the runtime error that SetPanicOnFault makes of a
// fault on a mapped page.
type memoryFault struct{}

func (memoryFault) Error() string { return "unexpected fault address 0xdead" }
func (memoryFault) RuntimeError() {}
func (memoryFault) Addr() uintptr { return 0xdead }
func panicIn(s *Spool, v any) error {
	return func() (err error) { defer s.recoverPanic(&err, "read"); panic(v) }()
}

// A fault on a mapped page can come from damage that the check at open
// does not see. The next start must rename the database aside anyway, or
// the daemon faults and stops at every start.
func TestFaultMarksDatabaseForRenaming(t *testing.T) {
	opts := testOptions(t)
	fillAndClose(t, opts, 100, 10)
	s := openSpool(t, opts)
	if err := panicIn(s, memoryFault{}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("fault = %v, want ErrCorrupt", err)
	}
	s.Close()

	again := openSpool(t, opts)
	if again.RenamedAside() == "" {
		t.Fatal("the database that faulted was not renamed aside at the next open")
	}
	if _, err := os.Stat(opts.Path + damageMarkSuffix); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("damage mark still there after the rename (stat: %v)", err)
	}
	copied, _, err := Salvage(again.RenamedAside(), func(Record) error { return nil })
	if err != nil || copied != 100 {
		t.Errorf("salvage of the renamed file: %d messages, %v, want 100", copied, err)
	}
	again.Close()

	third := openSpool(t, opts)
	if third.RenamedAside() != "" {
		t.Error("the fresh database was renamed aside too")
	}
}

// A panic that is no memory fault, such as a bug in a transaction, leaves
// no mark, so it does not cost the queue its database.
func TestOtherPanicLeavesNoMark(t *testing.T) {
	opts := testOptions(t)
	fillAndClose(t, opts, 10, 10)
	s := openSpool(t, opts)
	panicIn(s, "assertion failed")
	s.Close()

	again := openSpool(t, opts)
	if again.RenamedAside() != "" {
		t.Error("database renamed aside after a panic that was no fault")
	}
	equal(t, "messages kept", again.Stats().Messages, int64(10))
}

// An open that the operating system refuses names the path once, and
// a permission problem names the fix.
func TestOpenError_PermissionNamesFix(t *testing.T) {
	path := "/var/lib/mqspool/spool.db"
	err := openError(path, &fs.PathError{Op: "open", Path: path, Err: syscall.EACCES})
	text := err.Error()
	if strings.Count(text, path) != 1 {
		t.Errorf("error %q names the path %d times, want once", text, strings.Count(text, path))
	}
	if !strings.Contains(text, "let the daemon's user read and write the file") {
		t.Errorf("error %q does not name the fix", text)
	}
	if !errors.Is(err, fs.ErrPermission) {
		t.Errorf("error %q no longer wraps fs.ErrPermission", text)
	}
}

// An empty spool.db is set up as a new database, with a warning, since
// an empty file where a database was expected may mean lost messages.
func TestEmptyFileWarns(t *testing.T) {
	opts := testOptions(t)
	if err := os.WriteFile(opts.Path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	opts.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	s := openSpool(t, opts)
	equal(t, "messages", s.Stats().Messages, int64(0))
	if !strings.Contains(logs.String(), "spool database is an empty file") {
		t.Errorf("no warning about the empty file:\n%s", logs.String())
	}
}

// An operator may replace a database that faulted by hand, with a copy
// from a backup, before the next start. The mark names the file that
// faulted, so the replacement is opened, not renamed aside.
func TestFaultMarkSparesReplacement(t *testing.T) {
	opts := testOptions(t)
	fillAndClose(t, opts, 10, 10)
	s := openSpool(t, opts)
	if err := panicIn(s, memoryFault{}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("fault = %v, want ErrCorrupt", err)
	}
	s.Close()

	backup := testOptions(t)
	fillAndClose(t, backup, 7, 10)
	if err := os.Rename(opts.Path, opts.Path+".bad"); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(backup.Path, opts.Path); err != nil {
		t.Fatal(err)
	}
	again := openSpool(t, opts)
	if again.RenamedAside() != "" {
		t.Errorf("the healthy replacement was renamed aside to %s", again.RenamedAside())
	}
	equal(t, "messages of the replacement", again.Stats().Messages, int64(7))
	if _, err := os.Stat(opts.Path + damageMarkSuffix); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("damage mark of the replaced file still there (stat: %v)", err)
	}
	again.Close()
}
