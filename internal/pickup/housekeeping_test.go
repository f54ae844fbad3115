package pickup

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

func TestHousekeeping_CountsStaleTmp(t *testing.T) {
	dir := t.TempDir()
	p, err := New(Options{Dir: dir, FailedWarnBytes: 10}, nil)
	if err != nil {
		t.Fatal(err)
	}

	old := filepath.Join(dir, "tmp", "left-behind")
	os.WriteFile(old, []byte("x"), 0o644)
	twoDaysAgo := time.Now().Add(-48 * time.Hour)
	os.Chtimes(old, twoDaysAgo, twoDaysAgo)
	os.WriteFile(filepath.Join(dir, "tmp", "in-progress"), []byte("x"), 0o644)
	os.WriteFile(filepath.Join(dir, "failed", "bad.msg"), []byte("0123456789"), 0o644)
	os.WriteFile(filepath.Join(dir, "failed", "bad.msg.reason"), []byte("why"), 0o644)

	p.housekeeping()
	s := p.Stats()
	if s.StaleTmpFiles != 1 {
		t.Errorf("StaleTmpFiles = %d, want 1", s.StaleTmpFiles)
	}
	if _, err := os.Stat(old); err != nil {
		t.Errorf("housekeeping removed a file: %v", err)
	}
}

func TestFailedUsage_CountsFilesAndReasonBytes(t *testing.T) {
	dir := t.TempDir()
	if _, err := New(Options{Dir: dir}, nil); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(dir, "failed", "site"), 0o755)
	os.WriteFile(filepath.Join(dir, "failed", "bad.msg"), []byte("0123456789"), 0o644)
	os.WriteFile(filepath.Join(dir, "failed", "bad.msg.reason"), []byte("why"), 0o644)
	os.WriteFile(filepath.Join(dir, "failed", "site", "b.json"), []byte("{}"), 0o644)

	files, bytes := FailedUsage(dir)
	if files != 2 {
		t.Errorf("files = %d, want 2 (the .reason file does not count)", files)
	}
	if bytes != 15 {
		t.Errorf("bytes = %d, want 15", bytes)
	}

	// A file that arrives later counts at once, without a rescan.
	os.WriteFile(filepath.Join(dir, "failed", "late.msg"), []byte("12345"), 0o644)
	if files, bytes = FailedUsage(dir); files != 3 || bytes != 20 {
		t.Errorf("after one more file: %d files, %d bytes; want 3 and 20", files, bytes)
	}
}

func TestFailedUsage_CountsLinksAndFIFOs(t *testing.T) {
	dir := t.TempDir()
	failed := filepath.Join(dir, "failed")
	if err := os.MkdirAll(failed, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/hostname", filepath.Join(failed, "link.txt")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(failed, "pipe.txt"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(failed, "pipe.txt.reason"), []byte("why"), 0o644)

	if files, _ := FailedUsage(dir); files != 2 {
		t.Errorf("files = %d, want 2: a link and a FIFO rejected at ingest", files)
	}
}

func TestFailedUsage_FailedIsAFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "failed"), []byte("not a directory"), 0o644); err != nil {
		t.Fatal(err)
	}
	if files, bytes := FailedUsage(dir); files != 0 || bytes != 0 {
		t.Errorf("failed/ is a regular file: %d files, %d bytes; want 0 and 0", files, bytes)
	}
}
