package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// memoryPayload is the payload size of the messages queued for the
// memory runs.
const memoryPayload = 100

// rssSample is how long RssAnon is sampled, every 100 ms, after start.
const rssSample = 5 * time.Second

// memoryResult is the peak RssAnon with a queue depth.
type memoryResult struct {
	Queued  int
	RssAnon int64
	DBBytes int64
}

// runMemory samples the daemon's RssAnon with each queue depth and the
// broker down, then times the first publish with the largest queue.
func runMemory(e *env, r *report) error {
	var largest *daemon
	for _, n := range e.sizes.Memory {
		d, res, err := memoryAt(e, n)
		if err != nil {
			return err
		}
		r.memory = append(r.memory, res)
		largest = d
	}
	first, peak, err := firstPublish(e, largest)
	if err != nil {
		return err
	}
	long, err := longJSONL(e)
	if err != nil {
		return err
	}
	r.addMemory(first, peak, long)
	for _, n := range e.sizes.Backlog {
		res, err := backlogAt(e, n)
		if err != nil {
			return err
		}
		r.backlog = append(r.backlog, res)
	}
	r.addBacklog()
	return nil
}

// backlogLimit is spool.max_messages for the backlog runs, so that the
// spool fills at once and the other files wait in new/.
const backlogLimit = 1000

// backlogResult is the peak RssAnon with files waiting in new/.
type backlogResult struct {
	Files   int
	RssAnon int64
}

// backlogAt writes n single-message files into new/ and samples RssAnon
// of a daemon started with the broker down and room for backlogLimit
// messages, so the rest of the files wait in new/.
func backlogAt(e *env, n int) (backlogResult, error) {
	root, err := e.dir(fmt.Sprintf("backlog-%d", n))
	if err != nil {
		return backlogResult{}, err
	}
	d, err := newDaemon(root, e.downURL, e.clientID("backlog"))
	if err != nil {
		return backlogResult{}, err
	}
	d.maxMessages = backlogLimit
	if err := d.writeConfig(e.downURL, e.clientID("backlog")); err != nil {
		return backlogResult{}, err
	}
	kind := ingestKind{Name: "single-message files", Files: n, PerFile: 1}
	if err := writeFiles(filepath.Join(d.newDir(), "bench", "data"), kind, ingestPayload); err != nil {
		return backlogResult{}, err
	}
	if err := d.start(e.bin, false); err != nil {
		return backlogResult{}, err
	}
	peak, perr := peakRssAnon(d.pid, rssSample)
	if err := d.stop(); err != nil {
		return backlogResult{}, fmt.Errorf("stop mqspool with %d files waiting: %w", n, err)
	}
	if perr != nil {
		return backlogResult{}, perr
	}
	logf("RssAnon with %d files waiting in new/: %d KiB", n, peak>>10)
	return backlogResult{Files: n, RssAnon: peak}, nil
}

// memoryAt prefills n messages, runs the daemon with the broker down and
// returns the peak RssAnon it saw, and the daemon for reuse.
func memoryAt(e *env, n int) (*daemon, memoryResult, error) {
	root, err := e.dir(fmt.Sprintf("memory-%d", n))
	if err != nil {
		return nil, memoryResult{}, err
	}
	d, err := newDaemon(root, e.downURL, e.clientID("memory"))
	if err != nil {
		return nil, memoryResult{}, err
	}
	if err := prefill(d.db, n, memoryPayload, 1); err != nil {
		return nil, memoryResult{}, err
	}
	if err := d.start(e.bin, false); err != nil {
		return nil, memoryResult{}, err
	}
	peak, perr := peakRssAnon(d.pid, rssSample)
	if err := d.stop(); err != nil {
		return nil, memoryResult{}, fmt.Errorf("stop mqspool with %d queued: %w", n, err)
	}
	if perr != nil {
		return nil, memoryResult{}, perr
	}
	res := memoryResult{Queued: n, RssAnon: peak, DBBytes: fileSize(d.db)}
	logf("RssAnon with %d queued: %d KiB", n, peak>>10)
	return d, res, nil
}

// peakRssAnon samples RssAnon of pid every 100 ms for span.
func peakRssAnon(pid int, span time.Duration) (int64, error) {
	var peak int64
	for end := time.Now().Add(span); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		v, err := procStatus(pid, "RssAnon")
		if err != nil {
			return 0, err
		}
		peak = max(peak, v)
	}
	return peak, nil
}

// firstPublish restarts d with the broker up and returns the time from
// start to the first arrival and the peak RssAnon while draining.
func firstPublish(e *env, d *daemon) (time.Duration, int64, error) {
	if err := d.writeConfig(e.broker.url(), e.clientID("first")); err != nil {
		return 0, 0, err
	}
	e.sub.reset()
	if err := d.start(e.bin, false); err != nil {
		return 0, 0, err
	}
	first, ferr := e.sub.waitFirst(30 * time.Second)
	peak, perr := peakRssAnon(d.pid, rssSample)
	serr := d.stop()
	// Let the messages still in flight arrive before the next run.
	time.Sleep(2 * time.Second)
	if ferr != nil {
		return 0, 0, fmt.Errorf("first publish: %w", ferr)
	}
	if perr != nil {
		return 0, 0, perr
	}
	if serr != nil {
		return 0, 0, fmt.Errorf("stop mqspool after first publish: %w", serr)
	}
	logf("first publish after %s, RssAnon while draining %d KiB", first.Sub(d.started), peak>>10)
	return first.Sub(d.started), peak, nil
}

// longJSONLBytes is the size of the .jsonl file for the long-file run:
// the largest the default publish.max_message_bytes (1 MiB) allows.
const longJSONLBytes = 16 << 20

// longJSONLResult is the peak RssAnon while the daemon ingested one
// .jsonl file of short lines.
type longJSONLResult struct {
	Lines   int
	RssAnon int64
	Elapsed time.Duration
}

// longJSONL drops one .jsonl file of longJSONLBytes with short lines into
// new/, starts the daemon with the broker down, and samples RssAnon every
// 50 ms until the file is gone.
func longJSONL(e *env) (longJSONLResult, error) {
	root, err := e.dir("long-jsonl")
	if err != nil {
		return longJSONLResult{}, err
	}
	d, err := newDaemon(root, e.downURL, e.clientID("long-jsonl"))
	if err != nil {
		return longJSONLResult{}, err
	}
	leaf := filepath.Join(d.newDir(), "bench")
	lines, err := writeLongJSONL(filepath.Join(leaf, "long.jsonl"))
	if err != nil {
		return longJSONLResult{}, err
	}
	if err := d.start(e.bin, false); err != nil {
		return longJSONLResult{}, err
	}

	var peak int64
	deadline := time.Now().Add(e.sizes.Wait)
	for !dirEmpty(leaf) && time.Now().Before(deadline) {
		v, err := procStatus(d.pid, "RssAnon")
		if err != nil {
			d.stop()
			return longJSONLResult{}, err
		}
		peak = max(peak, v)
		time.Sleep(50 * time.Millisecond)
	}
	elapsed := time.Since(d.started)
	empty := dirEmpty(leaf)
	if err := d.stop(); err != nil {
		return longJSONLResult{}, fmt.Errorf("stop mqspool after the long .jsonl: %w", err)
	}
	if !empty || !dirEmpty(filepath.Join(d.dir, "failed")) {
		return longJSONLResult{}, fmt.Errorf("mqspool did not ingest the long .jsonl (daemon log in %s)", root)
	}
	logf("long .jsonl of %d lines: RssAnon peak %d KiB in %s", lines, peak>>10, elapsed)
	return longJSONLResult{Lines: lines, RssAnon: peak, Elapsed: elapsed}, nil
}

// writeLongJSONL writes a .jsonl file of longJSONLBytes with short lines
// and a modification time a minute old, so the daemon takes it at once.
func writeLongJSONL(name string) (int, error) {
	var b bytes.Buffer
	lines := 0
	for {
		line := fmt.Sprintf(`{"topic":"bench/long","payload":"%07d"}`+"\n", lines)
		if b.Len()+len(line) > longJSONLBytes {
			break
		}
		b.WriteString(line)
		lines++
	}
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		return 0, err
	}
	if err := os.WriteFile(name, b.Bytes(), 0o644); err != nil {
		return 0, err
	}
	old := time.Now().Add(-time.Minute)
	return lines, os.Chtimes(name, old, old)
}
