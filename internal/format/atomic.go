package format

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// WriteFileAtomic drops data into the spool directory dir as new/name the
// way producers should: it writes tmp/ under a unique name, syncs the file,
// renames it to new/name without replacing an existing file, and syncs the
// directory. name is a slash-separated path relative to new/; missing
// directories under new/ are created. When new/name exists the drop fails
// with an error matching [os.ErrExist] and the temporary file is removed.
func WriteFileAtomic(dir, name string, data []byte) error {
	if err := CheckName(name); err != nil {
		return err
	}
	tmp, err := WriteTemp(filepath.Join(dir, "tmp"), "drop-", 0o644, data)
	if err != nil {
		return err
	}
	dst := filepath.Join(dir, "new", filepath.FromSlash(name))
	if err := MkdirAllSync(filepath.Dir(dst)); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := RenameNoReplace(tmp, dst); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("move %s into new/: %w", name, err)
	}
	return SyncDir(filepath.Dir(dst))
}

// WriteTemp writes data to a new file in dir, named prefix and a random
// suffix, created with permissions perm (less the umask), and syncs it.
// It returns the file's path. On error no file is left behind.
func WriteTemp(dir, prefix string, perm os.FileMode, data []byte) (string, error) {
	f, err := createUnique(dir, prefix, perm)
	if err != nil {
		return "", err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", fmt.Errorf("write %s: %w", f.Name(), err)
	}
	return f.Name(), nil
}

// createUnique creates a file in dir that did not exist, named prefix and
// 16 random hex digits, and tries another name when one is taken.
func createUnique(dir, prefix string, perm os.FileMode) (*os.File, error) {
	var err error
	for range 100 {
		var rnd [8]byte
		rand.Read(rnd[:])
		name := filepath.Join(dir, prefix+hex.EncodeToString(rnd[:]))
		var f *os.File
		f, err = os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, os.ErrExist) {
			break
		}
	}
	return nil, fmt.Errorf("create temporary file in %s: %w", dir, err)
}

// RenameNoReplace renames oldpath to newpath, failing with an error that
// matches [os.ErrExist] when newpath exists. On file systems without
// RENAME_NOREPLACE it checks first and renames, which leaves a short race.
func RenameNoReplace(oldpath, newpath string) error {
	err := unix.Renameat2(unix.AT_FDCWD, oldpath, unix.AT_FDCWD, newpath, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
		// TODO: the fallback can still replace a file created between the
		// Lstat and the Rename.
		if _, serr := os.Lstat(newpath); serr == nil {
			return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: os.ErrExist}
		}
		return os.Rename(oldpath, newpath)
	}
	if err != nil {
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: err}
	}
	return nil
}

// SyncDir syncs a directory so that entries created, renamed or removed
// in it are durable.
func SyncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open directory to sync: %w", err)
	}
	err = f.Sync()
	f.Close()
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// MkdirAllSync creates dir and its missing parents, syncing the parent of
// each directory it creates so that the new entries are durable. The
// umask sets their mode: systemd's UMask=0007 gives the group the same
// rights as the owner, as in the spool directories that tmpfiles.d
// creates.
func MkdirAllSync(dir string) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	parent := filepath.Dir(dir)
	if parent != dir {
		if err := MkdirAllSync(parent); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, 0o777); err != nil && !errors.Is(err, os.ErrExist) {
		return err // names the operation and the path
	} else if err != nil {
		return DanglingLink(dir)
	}
	return SyncDir(parent)
}

// ErrDanglingLink reports a directory path that is a symbolic link whose
// target does not exist. Its error names the fix, so callers add none.
var ErrDanglingLink = errors.New("dangling symbolic link")

// DanglingLink returns an error wrapping ErrDanglingLink when dir is a
// symbolic link whose target is missing, and nil when dir can be reached.
// The target is not created, since it may be on a file system not
// mounted yet.
func DanglingLink(dir string) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	target, err := missingLinkTarget(dir)
	if err != nil {
		return fmt.Errorf("mkdir %s: exists but cannot be reached: %w", dir, err)
	}
	return fmt.Errorf("mkdir %s: %w: its target %s does not exist: create that directory, "+
		"or point the link at an existing one", dir, ErrDanglingLink, target)
}

// maxLinkHops is the number of symbolic links that Linux follows in one
// path lookup before it fails with ELOOP (40, per path_resolution(7)).
const maxLinkHops = 40

// missingLinkTarget follows the chain of symbolic links that starts at
// link and returns the absolute path at its end that does not exist, so
// that a relative target or a link to another link names the directory
// to create.
func missingLinkTarget(link string) (string, error) {
	for range maxLinkHops {
		target, err := os.Readlink(link)
		if err != nil {
			return "", err
		}
		if !filepath.IsAbs(target) {
			target = filepath.Join(filepath.Dir(link), target)
		}
		info, err := os.Lstat(target)
		if err != nil || info.Mode()&os.ModeSymlink == 0 {
			return target, nil
		}
		link = target
	}
	return "", unix.ELOOP
}
