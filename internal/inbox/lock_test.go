package inbox

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
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
