package pickup

import (
	"io/fs"
	"path/filepath"
	"strings"
	"time"
)

// staleTmpAge is the age at which a file in tmp/ counts as left behind by
// a producer that died between writing and renaming.
const staleTmpAge = 24 * time.Hour

// housekeepingLogInterval bounds how often left-behind files and a large
// failed/ are logged.
const housekeepingLogInterval = time.Hour

// housekeeping counts files left in tmp/ for longer than a day, for the
// status, and logs them and a failed/ over its limit. It deletes nothing:
// what to do with such files is the operator's call.
func (p *Pickup) housekeeping() {
	now := p.now()
	stale := countOlder(p.tmpDir, now.Add(-staleTmpAge))
	p.updateStats(func(s *Stats) { s.StaleTmpFiles = stale })
	failedFiles, failedBytes := failedUsage(p.failedDir)

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

// FailedUsage returns the number of undelivered files in the failed/
// directory of spoolDir and the bytes of all files there, .reason files
// included. Symbolic links, FIFOs and sockets that the pickup rejected
// count as files. It reads the directory each time, so the figures are
// current.
func FailedUsage(spoolDir string) (files int, bytes int64) {
	return failedUsage(filepath.Join(spoolDir, "failed"))
}

func failedUsage(dir string) (files int, bytes int64) {
	filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil || path == dir || e.IsDir() {
			return nil // the root itself is never an entry, even when it is a file
		}
		if info, err := e.Info(); err == nil {
			bytes += info.Size()
		}
		if !strings.HasSuffix(path, ".reason") {
			files++
		}
		return nil
	})
	return files, bytes
}
