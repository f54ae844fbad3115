package format

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// Directories that the daemon creates below failed/ or an inbox take
// their mode from the umask, so that the unit's UMask=0007 lets the group
// remove what is in them.
func TestMkdirAllSync_ModeFromUmask(t *testing.T) {
	old := syscall.Umask(0o007)
	defer syscall.Umask(old)
	dir := filepath.Join(t.TempDir(), "failed", "site1", "temp")

	if err := MkdirAllSync(dir); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{dir, filepath.Dir(dir)} {
		info, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if perm := info.Mode().Perm(); perm != 0o770 {
			t.Errorf("%s has mode %o, want 770 under umask 007", d, perm)
		}
	}
}

// A symbolic link whose target is missing is reported with the target,
// which is not created: it may be on a disk not mounted yet.
func TestMkdirAllSync_DanglingLink(t *testing.T) {
	base := t.TempDir()
	target := filepath.Join(base, "not-mounted", "spool")
	link := filepath.Join(base, "spool")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}

	err := MkdirAllSync(link)
	if !errors.Is(err, ErrDanglingLink) {
		t.Fatalf("MkdirAllSync of a dangling link: %v, want ErrDanglingLink", err)
	}
	if _, err := os.Stat(target); err == nil {
		t.Errorf("the link's target %s was created", target)
	}
}

// A relative target, or a link to another link, is reported as the
// absolute path that is missing, which is the directory to create.
func TestMkdirAllSync_DanglingLinkNamesMissingPath(t *testing.T) {
	cases := []struct {
		name  string
		links [][2]string // link name, then its target with $DIR for the test's directory
	}{
		{"relative target", [][2]string{{"spool", "mnt/spool"}}},
		{"link to a link", [][2]string{{"spool", "next"}, {"next", "$DIR/mnt/spool"}}},
		{"relative link to a relative link", [][2]string{{"spool", "next"}, {"next", "./mnt/spool"}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.MkdirAll(filepath.Join(dir, "mnt"), 0o755); err != nil {
				t.Fatal(err)
			}
			for _, l := range c.links {
				target := strings.Replace(l[1], "$DIR", dir, 1)
				if err := os.Symlink(target, filepath.Join(dir, l[0])); err != nil {
					t.Fatal(err)
				}
			}

			err := MkdirAllSync(filepath.Join(dir, "spool"))
			if !errors.Is(err, ErrDanglingLink) {
				t.Fatalf("MkdirAllSync: %v, want ErrDanglingLink", err)
			}
			want := "its target " + filepath.Join(dir, "mnt", "spool") + " does not exist"
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not contain %q", err, want)
			}
		})
	}
}
