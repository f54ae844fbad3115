package main

import (
	"fmt"
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
	r.addMemory(first, peak)
	return nil
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
