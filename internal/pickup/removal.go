package pickup

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
)

// holdRescan reports whether a rescan must wait because new/, the scan
// marker or one of Options.OwnFiles is missing while the watched spool
// directory is still at its path. That is how an rm -rf of the spool
// directory looks before it ends, and a rescan would create the missing
// entries again, so the removal would fail with "Directory not empty".
// A held rescan schedules restoreDue, which lets the next one run.
func (p *Pickup) holdRescan() bool {
	if p.restoreApproved {
		p.restoreApproved = false
		p.removalEntries = -1
		return false
	}
	if p.syncLost || p.syncWD < 0 || !p.ownEntryMissing() || p.spoolDirGone() {
		return false
	}
	if p.restoreAt.IsZero() {
		p.restoreAt = p.now().Add(restoreDelay)
	}
	return true
}

// ownEntryMissing reports whether new/, the scan marker once created, or
// one of Options.OwnFiles is missing from the spool directory.
func (p *Pickup) ownEntryMissing() bool {
	names := append([]string{filepath.Base(p.newDir)}, p.opts.OwnFiles...)
	if p.markerMade {
		names = append(names, stampMarkerName)
	}
	for _, name := range names {
		if _, err := os.Lstat(filepath.Join(p.opts.Dir, name)); errors.Is(err, fs.ErrNotExist) {
			return true
		}
	}
	return false
}

// spoolDirShrinking reports whether the spool directory's tree has fewer
// entries than at the previous call, as while rm -rf empties it. The
// first call has nothing to compare with and reports true.
func (p *Pickup) spoolDirShrinking() bool {
	entries := 0
	filepath.WalkDir(p.opts.Dir, func(string, fs.DirEntry, error) error {
		entries++
		return nil
	})
	previous := p.removalEntries
	p.removalEntries = entries
	return previous < 0 || entries < previous
}
