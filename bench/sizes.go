package main

import (
	"fmt"
	"time"
)

// sizes are the message counts and time bounds of one run.
type sizes struct {
	// Drain is the number of messages each drain run delivers.
	Drain int
	// DrainRounds is how many times mqspool and its reference take turns
	// at each drain and each ingest; the median round of each is
	// reported.
	DrainRounds int
	// PubChunk is the most lines fed to one mosquitto_pub run, which
	// silently drops lines once 65535 packet ids are outstanding.
	PubChunk int
	// ClientLimit bounds each Go client run; the rate is taken over
	// what arrived by then.
	ClientLimit time.Duration
	// IngestFiles is the number of single-message files; IngestLines
	// messages go into .jsonl files of JSONLPerFile lines each.
	IngestFiles  int
	IngestLines  int
	JSONLPerFile int
	// Memory lists the queue depths at which RssAnon is sampled; the
	// last one is also used for the time to the first publish.
	Memory []int
	// Backlog lists the numbers of files waiting in new/ behind a full
	// spool at which RssAnon is sampled.
	Backlog []int
	// Disk is the number of 1 KiB messages for the commit and write
	// counts.
	Disk int
	// Wait bounds every wait for a delivery or an empty new/.
	Wait time.Duration
}

func sizesFor(scale string) (sizes, error) {
	switch scale {
	case "full":
		return sizes{
			Drain: 100_000, DrainRounds: 5, PubChunk: 50_000, ClientLimit: 30 * time.Second,
			IngestFiles: 100_000, IngestLines: 100_000, JSONLPerFile: 100,
			Memory: []int{10_000, 100_000, 1_000_000}, Backlog: []int{10_000, 300_000}, Disk: 100_000,
			Wait: 10 * time.Minute,
		}, nil
	case "small":
		return sizes{
			Drain: 10_000, DrainRounds: 1, PubChunk: 5_000, ClientLimit: 10 * time.Second,
			IngestFiles: 10_000, IngestLines: 10_000, JSONLPerFile: 100,
			Memory: []int{1_000, 10_000, 100_000}, Backlog: []int{1_000, 40_000}, Disk: 10_000,
			Wait: 3 * time.Minute,
		}, nil
	}
	return sizes{}, fmt.Errorf("BENCH_SCALE %q is invalid: use full or small", scale)
}
