package pickup

import (
	"io/fs"
	"path/filepath"
	"time"
)

// staleTmpAge is the age at which a file in tmp/ counts as left behind by
// a producer that died between writing and renaming.
const staleTmpAge = 24 * time.Hour

// housekeepingLogInterval bounds how often left-behind files and a large
// failed/ are logged.
const housekeepingLogInterval = time.Hour

// housekeeping counts files left in tmp/ for longer than a day and the
// files in failed/, for the status and the metrics, and logs them and a
// failed/ over its limit. It deletes nothing: what to do with such files
// is the operator's call.
func (p *Pickup) housekeeping() {
	now := p.now()
	stale := countOlder(p.tmpDir, now.Add(-staleTmpAge))
	p.updateStats(func(s *Stats) { s.StaleTmpFiles = stale })
	failedFiles, failedBytes := p.failed.refresh()

	over := p.opts.FailedWarnBytes > 0 && failedBytes > p.opts.FailedWarnBytes
	if (stale == 0 && !over) || !p.housekeepingLog.allow(now, housekeepingLogInterval) {
		return
	}
	if stale > 0 {
		p.log.Warn("files left in tmp/ for over a day; a producer may have died before renaming them into new/",
			"dir", p.tmpDir, "files", stale)
	}
	if over {
		p.log.Warn("failed/ is larger than spool.failed_warn_bytes; read the .reason files, fix and requeue or remove them",
			"dir", p.failedDir, "files", failedFiles, "bytes", failedBytes, "limit_bytes", p.opts.FailedWarnBytes)
	}
}

// countOlder returns how many regular files directly in dir were last
// modified before cutoff.
func countOlder(dir string, cutoff time.Time) int {
	n := 0
	filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil || path == dir || !e.Type().IsRegular() {
			return nil
		}
		if info, err := e.Info(); err == nil && info.ModTime().Before(cutoff) {
			n++
		}
		return nil
	})
	return n
}
