package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"
)

// diskPayload is the payload size of the disk runs.
const diskPayload = 1024

// diskPhase holds the system call counts, bytes written and database size
// of one daemon run.
type diskPhase struct {
	Messages  int64
	Fdatasync int64
	Fsync     int64
	// Writes and Reads count write(2) and read(2) calls. bbolt writes
	// with pwrite64, which is not among them.
	Writes     int64
	Reads      int64
	WriteBytes int64
	PeakDB     int64
	Elapsed    time.Duration
}

// commits estimates bbolt commits: bbolt calls fdatasync twice per
// commit on Linux, once for the data pages and once for the meta page.
func (p diskPhase) commits() float64 { return float64(p.Fdatasync) / 2 }

// runDisk ingests Disk single-message files of 1 KiB with the broker down
// and then drains them at QoS 1, each under perf stat, and records the
// fsync calls, the database's peak size and the bytes written.
func runDisk(e *env, r *report) error {
	root, err := e.dir("disk")
	if err != nil {
		return err
	}
	d, err := newDaemon(root, e.downURL, e.clientID("disk"))
	if err != nil {
		return err
	}
	k := ingestKind{Name: "1 KiB files", Files: e.sizes.Disk, PerFile: 1}
	leaf := filepath.Join(d.newDir(), "bench", "data")
	if err := writeFiles(leaf, k, diskPayload); err != nil {
		return err
	}
	ingest, err := diskRun(e, d, func() (time.Time, error) { return waitEmpty(leaf, e.sizes.Wait) })
	if err != nil {
		return fmt.Errorf("ingest phase: %w", err)
	}

	if err := d.writeConfig(e.broker.url(), e.clientID("disk")); err != nil {
		return err
	}
	e.sub.reset()
	drain, err := diskRun(e, d, func() (time.Time, error) { return e.sub.wait(int64(k.Files), e.sizes.Wait) })
	if err != nil {
		return fmt.Errorf("drain phase: %w", err)
	}
	ingest.Messages, drain.Messages = int64(k.Files), int64(k.Files)
	r.addDisk(ingest, drain, int64(k.Files)*diskPayload)
	return nil
}

// diskRun starts d under perf stat, samples the database size every
// 20 ms until done returns, reads write_bytes and stops d.
func diskRun(e *env, d *daemon, done func() (time.Time, error)) (diskPhase, error) {
	if err := d.start(e.bin, true); err != nil {
		return diskPhase{}, err
	}
	var peak atomic.Int64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go sampleSize(d.db, &peak, stop, sampled)

	end, werr := done()
	written, ioerr := procIO(d.pid, "write_bytes")
	close(stop)
	<-sampled
	serr := d.stop()
	if werr != nil {
		return diskPhase{}, fmt.Errorf("%w (daemon log in %s)", werr, d.root)
	}
	if ioerr != nil {
		return diskPhase{}, ioerr
	}
	if serr != nil {
		return diskPhase{}, fmt.Errorf("stop mqspool: %w", serr)
	}
	counts, err := perfCounts(d.perfOut)
	if err != nil {
		return diskPhase{}, err
	}
	p := diskPhase{Fdatasync: counts["fdatasync"], Fsync: counts["fsync"],
		Writes: counts["write"], Reads: counts["read"], WriteBytes: written,
		PeakDB: max(peak.Load(), fileSize(d.db)), Elapsed: end.Sub(d.started)}
	logf("disk phase: %+v", p)
	return p, nil
}

func sampleSize(path string, peak *atomic.Int64, stop, done chan struct{}) {
	defer close(done)
	for {
		if n := fileSize(path); n > peak.Load() {
			peak.Store(n)
		}
		select {
		case <-stop:
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// fileSize returns the size of path, or 0 when it cannot be read.
func fileSize(path string) int64 {
	info, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return info.Size()
}
