package pickup

import (
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// statfsFree returns the bytes available to unprivileged users on the
// file system that contains path.
func statfsFree(path string) (uint64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", path, err)
	}
	return st.Bavail * uint64(st.Bsize), nil
}

// underPressure checks free space and reports whether ingest must pause.
// It logs when pressure starts and ends. A failed check does not pause
// ingest, so a missing path cannot stop the daemon.
func (p *Pickup) underPressure() bool {
	if p.opts.MinFreeBytes == 0 || p.opts.FreeSpacePath == "" {
		return false
	}
	free, err := p.freeBytes(p.opts.FreeSpacePath)
	if err != nil {
		if p.spaceErrLog.allow(p.now(), time.Hour) {
			p.log.Error("check free disk space", "path", p.opts.FreeSpacePath, "err", err)
		}
		p.setError(err)
		return false
	}
	pressure := free < p.opts.MinFreeBytes
	was := p.Stats().DiskPressure
	switch {
	case pressure && !was:
		p.log.Warn("free disk space is low; ingest paused, files wait in new/ until space is freed "+
			"on that file system (or spool.min_free_bytes is lowered)",
			"path", p.opts.FreeSpacePath, "free_bytes", free, "min_free_bytes", p.opts.MinFreeBytes)
	case !pressure && was:
		p.log.Info("free disk space recovered; ingest resumed",
			"path", p.opts.FreeSpacePath, "free_bytes", free)
	}
	p.updateStats(func(s *Stats) { s.DiskPressure = pressure })
	return pressure
}
