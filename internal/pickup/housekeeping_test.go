package pickup

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestHousekeeping_CountsStaleTmpAndFailed(t *testing.T) {
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
	if s.FailedFiles != 1 {
		t.Errorf("FailedFiles = %d, want 1 (the .reason file does not count)", s.FailedFiles)
	}
	if s.FailedBytes != 13 {
		t.Errorf("FailedBytes = %d, want 13", s.FailedBytes)
	}
	if _, err := os.Stat(old); err != nil {
		t.Errorf("housekeeping removed a file: %v", err)
	}
}
