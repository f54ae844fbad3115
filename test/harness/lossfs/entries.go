package lossfs

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// entryLog contains the directory entry changes that a Cut undoes in the
// volatile-entries mode: those made in each directory since its last
// fsync.
//
// A change that removes an entry moves it into the holding directory
// instead, or hard-links it there first, so that the inode stays as it
// was and an undo can move it back. The holding directory is a sibling
// of the backing directory, outside the mount's root, and a Cut or
// Unmount empties it.
type entryLog struct {
	holdPath string
	hold     *os.File
	nextHeld int
	dirs     map[fileID]*dirState
	// changes contains every change with a pending part, oldest first.
	changes []*entryChange
	// ctimes is the FS's table of shown change times.
	ctimes shownCtimes
	// kept contains the inodes that an undo restored, with the change
	// time to show for each once the Cut has finished moving it.
	kept []keptCtime
}

// keptCtime is an inode that an undo restored, open with O_PATH.
type keptCtime struct {
	fd    int
	shown unix.Timespec
}

// dirState is a backing directory with entry changes since its last
// fsync.
type dirState struct {
	// file keeps the directory open, so that the *at calls of an undo
	// follow it through renames, and so that its inode number is not
	// reused while the log refers to it.
	file    *os.File
	pending []*entryPart
}

// entryPart is the change of one name in one directory.
type entryPart struct {
	dir  *dirState
	name string
	// held is the name in the holding directory of the inode that the
	// change took away from dir/name, or "" when there was none or the
	// inode is a directory that a rename moved, which a second link
	// cannot keep.
	held    string
	heldDir bool
	// ctime is the change time that the mount showed for that inode
	// before the change.
	ctime   unix.Timespec
	durable bool
}

// entryChange is one create, link, removal or rename. A create or link
// has only a part for the new name (added), a removal only one for the
// old name (removed), a rename both.
type entryChange struct {
	added   *entryPart
	removed *entryPart
	// dir is set when a rename moved a directory.
	dir bool
}

// newEntryLog creates the holding directory next to backing and checks
// that it is on the same file system, which hard links and renames into
// it need.
func newEntryLog(backing string, ctimes shownCtimes) (*entryLog, error) {
	backing = filepath.Clean(backing)
	holdPath := filepath.Join(filepath.Dir(backing), "."+filepath.Base(backing)+".lossfs-held")
	if err := os.RemoveAll(holdPath); err != nil {
		return nil, fmt.Errorf("empty the holding directory %s: %w", holdPath, err)
	}
	if err := os.Mkdir(holdPath, 0o700); err != nil {
		return nil, fmt.Errorf("create the holding directory %s: %w", holdPath, err)
	}
	hold, err := os.Open(holdPath)
	if err != nil {
		return nil, fmt.Errorf("open the holding directory: %w", err)
	}
	var holdStat, backingStat syscall.Stat_t
	if err := syscall.Fstat(int(hold.Fd()), &holdStat); err != nil {
		hold.Close()
		return nil, fmt.Errorf("stat %s: %w", holdPath, err)
	}
	if err := syscall.Stat(backing, &backingStat); err != nil {
		hold.Close()
		return nil, fmt.Errorf("stat %s: %w", backing, err)
	}
	if holdStat.Dev != backingStat.Dev {
		hold.Close()
		os.Remove(holdPath)
		return nil, fmt.Errorf("holding directory %s is on another file system than %s: use a backing directory that is not a mountpoint", holdPath, backing)
	}
	return &entryLog{holdPath: holdPath, hold: hold, dirs: map[fileID]*dirState{}, ctimes: ctimes}, nil
}

// close drops every change, which keeps the entries as they are now,
// and removes the holding directory.
//
// NOTE: a renamed file whose old directory was not synced loses its held
// link here, which moves the change time that the mount shows for it.
func (l *entryLog) close() error {
	l.reset()
	l.hold.Close()
	if err := os.RemoveAll(l.holdPath); err != nil {
		return fmt.Errorf("remove the holding directory: %w", err)
	}
	return nil
}

// reset drops every change and closes the directories.
func (l *entryLog) reset() {
	for id, d := range l.dirs {
		d.file.Close()
		delete(l.dirs, id)
	}
	l.changes = nil
}

// dirFor returns the state of the backing directory at path, and starts
// one if there is none.
func (l *entryLog) dirFor(path string) (*dirState, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return nil, fmt.Errorf("stat directory %s: %w", path, err)
	}
	id := fileID{dev: st.Dev, ino: st.Ino}
	if d, ok := l.dirs[id]; ok {
		return d, nil
	}
	file, err := os.OpenFile(path, os.O_RDONLY|syscall.O_DIRECTORY, 0)
	if err != nil {
		return nil, fmt.Errorf("open directory %s: %w", path, err)
	}
	d := &dirState{file: file}
	l.dirs[id] = d
	return d, nil
}

// newPart starts a pending part in dir for name.
func (l *entryLog) newPart(d *dirState, name string) *entryPart {
	p := &entryPart{dir: d, name: name}
	d.pending = append(d.pending, p)
	return p
}

// holdName returns an unused name in the holding directory.
func (l *entryLog) holdName() string {
	l.nextHeld++
	return strconv.Itoa(l.nextHeld)
}

// recordAdded records that name was created in the backing directory
// dirPath.
func (l *entryLog) recordAdded(dirPath, name string) error {
	d, err := l.dirFor(dirPath)
	if err != nil {
		return err
	}
	l.changes = append(l.changes, &entryChange{added: l.newPart(d, name)})
	return nil
}

// remove removes name from the backing directory dirPath by moving it
// into the holding directory, with the checks of unlink(2), or of
// rmdir(2) when isDir is set.
func (l *entryLog) remove(dirPath, name string, isDir bool) syscall.Errno {
	d, err := l.dirFor(dirPath)
	if err != nil {
		return toErrno(err)
	}
	var st unix.Stat_t
	if err := unix.Fstatat(dirFd(d), name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return toErrno(err)
	}
	isDirEntry := st.Mode&unix.S_IFMT == unix.S_IFDIR
	if isDir && !isDirEntry {
		return syscall.ENOTDIR
	}
	if !isDir && isDirEntry {
		return syscall.EISDIR
	}
	if isDir {
		if errno := requireEmpty(filepath.Join(dirPath, name)); errno != 0 {
			return errno
		}
	}
	held := l.holdName()
	if err := unix.Renameat2(dirFd(d), name, l.holdFd(), held, unix.RENAME_NOREPLACE); err != nil {
		return toErrno(err)
	}
	p := l.newPart(d, name)
	p.held, p.heldDir, p.ctime = held, isDirEntry, l.ctimes.shown(&st)
	l.changes = append(l.changes, &entryChange{removed: p})
	return 0
}

// requireEmpty returns ENOTEMPTY unless the directory at path is empty.
func requireEmpty(path string) syscall.Errno {
	dir, err := os.Open(path)
	if err != nil {
		return toErrno(err)
	}
	defer dir.Close()
	if _, err := dir.Readdirnames(1); err == nil {
		return syscall.ENOTEMPTY
	} else if !errors.Is(err, io.EOF) {
		return toErrno(err)
	}
	return 0
}

func dirFd(d *dirState) int     { return int(d.file.Fd()) }
func (l *entryLog) holdFd() int { return int(l.hold.Fd()) }

// synced makes the pending parts of the directory durable and removes
// the entries held for them, because no undo needs them any more.
// Directories stay in the holding directory until the next Cut or
// Unmount: an undo of a change inside one may still move an entry into
// it.
func (l *entryLog) synced(id fileID) error {
	d, ok := l.dirs[id]
	if !ok {
		return nil
	}
	for _, p := range d.pending {
		p.durable = true
		if p.held != "" && !p.heldDir {
			if err := l.unlinkHeld(p.held); err != nil {
				return fmt.Errorf("remove held entry %s of %s: %w", p.held, p.name, err)
			}
			p.held = ""
		}
	}
	d.pending = nil
	l.dropDurable()
	return nil
}

// unlinkHeld removes a held link. The inode may have other links, so it
// keeps showing the change time it had.
func (l *entryLog) unlinkHeld(name string) error {
	fd, err := unix.Openat(l.holdFd(), name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if err := unix.Unlinkat(l.holdFd(), name, 0); err != nil {
		return err
	}
	return l.ctimes.keep(fd, l.ctimes.shown(&st))
}

// dropDurable drops the changes whose parts are all durable.
func (l *entryLog) dropDurable() {
	kept := l.changes[:0]
	for _, c := range l.changes {
		if c.pending() {
			kept = append(kept, c)
		}
	}
	clear(l.changes[len(kept):])
	l.changes = kept
}

func (c *entryChange) pending() bool {
	return (c.added != nil && !c.added.durable) || (c.removed != nil && !c.removed.durable)
}

// undoAll undoes the pending parts of every change, newest first, then
// empties the holding directory and drops every change. It returns
// the number of parts undone.
//
// Within one directory the durable changes are those before its last
// fsync, so when a pending part is undone, every later change of the
// same name is undone already: the name is as this change left it.
func (l *entryLog) undoAll() (int, error) {
	undone := 0
	for i := len(l.changes) - 1; i >= 0; i-- {
		n, err := l.undo(l.changes[i])
		undone += n
		if err != nil {
			return undone, err
		}
	}
	l.reset()
	return undone, l.emptyHold()
}

// undo undoes the pending parts of one change and returns how many it
// undid.
func (l *entryLog) undo(c *entryChange) (int, error) {
	if c.dir && !c.added.durable && !c.removed.durable {
		// The directory has no held link, so it moves back itself.
		if err := l.keepAt(c.added.dir.file, c.added.name, c.removed.ctime); err != nil {
			return 0, err
		}
		if err := l.move(c.added.dir.file, c.added.name, c.removed.dir.file, c.removed.name); err != nil {
			return 0, err
		}
		return 2, l.restore(c.added, c.added.ctime)
	}
	undone := 0
	if c.added != nil && !c.added.durable {
		// NOTE: an inode that keeps another link, as after an undone
		// link(2), shows the change time of this move from here on.
		if err := l.move(c.added.dir.file, c.added.name, l.hold, l.holdName()); err != nil {
			return undone, err
		}
		if err := l.restore(c.added, c.added.ctime); err != nil {
			return undone, err
		}
		undone++
	}
	if c.removed != nil && !c.removed.durable && c.removed.held != "" {
		shown := c.removed.ctime
		if c.added != nil && c.added.durable {
			// The new name stays, so the inode keeps the change time
			// that the program saw after the rename.
			var st unix.Stat_t
			if err := unix.Fstatat(l.holdFd(), c.removed.held, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				return undone, fmt.Errorf("stat held entry %s of %s: %w", c.removed.held, c.removed.name, err)
			}
			shown = l.ctimes.shown(&st)
		}
		if err := l.restore(c.removed, shown); err != nil {
			return undone, err
		}
		undone++
	}
	return undone, nil
}

// restore moves the entry held for p back to its name, if there is one,
// and makes it show the change time shown once the Cut has finished.
func (l *entryLog) restore(p *entryPart, shown unix.Timespec) error {
	if p.held == "" {
		return nil
	}
	if err := l.keepAt(l.hold, p.held, shown); err != nil {
		return err
	}
	return l.move(l.hold, p.held, p.dir.file, p.name)
}

// keepAt opens name in dir for keepCtimes, which sets the change time
// that the mount shows for it to shown. An undo of an older change of
// the same inode comes later and overrides shown.
func (l *entryLog) keepAt(dir *os.File, name string, shown unix.Timespec) error {
	fd, err := unix.Openat(int(dir.Fd()), name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s in %s to keep its change time: %w", name, dir.Name(), err)
	}
	l.kept = append(l.kept, keptCtime{fd: fd, shown: shown})
	return nil
}

// keepCtimes sets the shown change times of the inodes that undoAll
// restored, and closes them. The Cut calls it last, because emptying the
// holding directory and the undo logs of the data move change times too.
func (l *entryLog) keepCtimes() error {
	var first error
	for _, k := range l.kept {
		if err := l.ctimes.keep(k.fd, k.shown); err != nil && first == nil {
			first = err
		}
		unix.Close(k.fd)
	}
	l.kept = nil
	return first
}

// move renames an entry without replacing one: an entry at the target
// means that the log missed a change.
func (l *entryLog) move(fromDir *os.File, from string, toDir *os.File, to string) error {
	err := unix.Renameat2(int(fromDir.Fd()), from, int(toDir.Fd()), to, unix.RENAME_NOREPLACE)
	if err != nil {
		return fmt.Errorf("move %s in %s to %s in %s to undo a directory entry change: %w", from, fromDir.Name(), to, toDir.Name(), err)
	}
	return nil
}

// emptyHold removes everything in the holding directory.
func (l *entryLog) emptyHold() error {
	names, err := l.hold.Readdirnames(-1)
	if _, serr := l.hold.Seek(0, io.SeekStart); err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("list the holding directory %s: %w", l.holdPath, err)
	}
	for _, name := range names {
		if err := os.RemoveAll(filepath.Join(l.holdPath, name)); err != nil {
			return fmt.Errorf("empty the holding directory: %w", err)
		}
	}
	return nil
}

// rename renames name in the backing directory fromPath to newName in
// toPath, as renameat2(2) with flags 0 or RENAME_NOREPLACE, and records
// both parts. It keeps the inode that the old name refers to, unless it
// is a directory, and the entry that the rename replaces, in the holding
// directory.
func (l *entryLog) rename(fromPath, name, toPath, newName string, flags uint32) syscall.Errno {
	if flags&^unix.RENAME_NOREPLACE != 0 {
		// NOTE: RENAME_EXCHANGE and RENAME_WHITEOUT are not modeled.
		return syscall.EINVAL
	}
	from, err := l.dirFor(fromPath)
	if err != nil {
		return toErrno(err)
	}
	to, err := l.dirFor(toPath)
	if err != nil {
		return toErrno(err)
	}
	var src unix.Stat_t
	if err := unix.Fstatat(dirFd(from), name, &src, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return toErrno(err)
	}
	srcDir := src.Mode&unix.S_IFMT == unix.S_IFDIR

	added := &entryPart{dir: to, name: newName}
	sameInode, errno := l.holdTarget(added, toPath, &src, flags)
	if errno != 0 {
		return errno
	}
	if sameInode {
		// Both names stay, and nothing changes.
		return toErrno(unix.Renameat2(dirFd(from), name, dirFd(to), newName, uint(flags)))
	}

	removed := &entryPart{dir: from, name: name, ctime: l.ctimes.shown(&src)}
	if !srcDir {
		removed.held = l.holdName()
		if err := unix.Linkat(dirFd(from), name, l.holdFd(), removed.held, 0); err != nil {
			l.unhold(added)
			return toErrno(err)
		}
	}

	if err := unix.Renameat2(dirFd(from), name, dirFd(to), newName, uint(flags)); err != nil {
		l.unhold(added)
		l.unhold(removed)
		return toErrno(err)
	}
	to.pending = append(to.pending, added)
	from.pending = append(from.pending, removed)
	l.changes = append(l.changes, &entryChange{added: added, removed: removed, dir: srcDir})
	return 0
}

// holdTarget moves the entry that a rename of src would replace at
// p.name into the holding directory, or hard-links it there, and
// records its name in p. It makes the checks of rename(2) that moving
// the target aside would otherwise skip. It returns true when the target
// is another name of the source inode, which makes rename(2) do nothing.
func (l *entryLog) holdTarget(p *entryPart, toPath string, src *unix.Stat_t, flags uint32) (bool, syscall.Errno) {
	var dst unix.Stat_t
	err := unix.Fstatat(dirFd(p.dir), p.name, &dst, unix.AT_SYMLINK_NOFOLLOW)
	if errors.Is(err, unix.ENOENT) {
		return false, 0
	}
	if err != nil {
		return false, toErrno(err)
	}
	if flags&unix.RENAME_NOREPLACE != 0 {
		return false, syscall.EEXIST
	}
	if dst.Dev == src.Dev && dst.Ino == src.Ino {
		return true, 0
	}

	srcDir := src.Mode&unix.S_IFMT == unix.S_IFDIR
	dstDir := dst.Mode&unix.S_IFMT == unix.S_IFDIR
	held := l.holdName()
	switch {
	case srcDir && !dstDir:
		return false, syscall.ENOTDIR
	case !srcDir && dstDir:
		return false, syscall.EISDIR
	case dstDir:
		if errno := requireEmpty(filepath.Join(toPath, p.name)); errno != 0 {
			return false, errno
		}
		err = unix.Renameat2(dirFd(p.dir), p.name, l.holdFd(), held, unix.RENAME_NOREPLACE)
	default:
		err = unix.Linkat(dirFd(p.dir), p.name, l.holdFd(), held, 0)
	}
	if err != nil {
		return false, toErrno(err)
	}
	p.held, p.heldDir, p.ctime = held, dstDir, l.ctimes.shown(&dst)
	return false, 0
}

// unhold takes back what holdTarget or rename put into the holding
// directory for p, after the rename failed.
func (l *entryLog) unhold(p *entryPart) {
	switch {
	case p.held == "":
	case p.heldDir:
		unix.Renameat2(l.holdFd(), p.held, dirFd(p.dir), p.name, unix.RENAME_NOREPLACE)
	default:
		unix.Unlinkat(l.holdFd(), p.held, 0)
	}
	p.held = ""
}
