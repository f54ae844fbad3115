package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// ingestPayload is the payload size of every ingested message.
const ingestPayload = 100

// ingestKind is one layout of files in new/.
type ingestKind struct {
	Name string
	// Files and PerFile: Files files of PerFile messages each.
	Files, PerFile int
	JSONL          bool
}

func ingestKinds(sz sizes) []ingestKind {
	return []ingestKind{
		{Name: "single-message files", Files: sz.IngestFiles, PerFile: 1},
		{Name: ".jsonl batches", Files: sz.IngestLines / sz.JSONLPerFile, PerFile: sz.JSONLPerFile, JSONL: true},
	}
}

// runIngest times the real daemon taking the files out of new/ with the
// broker down, against a bare readdir, read and unlink loop. Like the
// drain, they take turns for DrainRounds rounds and the medians are
// compared.
func runIngest(e *env, r *report) error {
	for _, k := range ingestKinds(e.sizes) {
		var own, bare, decoded []rate
		for range e.sizes.DrainRounds {
			o, err := ingestMqspool(e, k)
			if err != nil {
				return err
			}
			b, err := ingestBare(e, k, false)
			if err != nil {
				return err
			}
			own, bare = append(own, o), append(bare, b)
			if !k.JSONL {
				continue
			}
			d, err := ingestBare(e, k, true)
			if err != nil {
				return err
			}
			decoded = append(decoded, d)
		}
		r.addIngest(k, own, bare)
		if k.JSONL {
			r.addIngestDecoded(k, own, decoded)
		}
	}
	return nil
}

// ingestMqspool times the daemon from its start until new/ is empty.
func ingestMqspool(e *env, k ingestKind) (rate, error) {
	root, err := e.dir("ingest")
	if err != nil {
		return rate{}, err
	}
	d, err := newDaemon(root, e.downURL, e.clientID("ingest"))
	if err != nil {
		return rate{}, err
	}
	leaf := filepath.Join(d.newDir(), "bench", "data")
	if err := writeFiles(leaf, k, ingestPayload); err != nil {
		return rate{}, err
	}
	if err := d.start(e.bin, false); err != nil {
		return rate{}, err
	}
	done, werr := waitEmpty(leaf, e.sizes.Wait)
	serr := d.stop()
	if werr != nil {
		return rate{}, fmt.Errorf("mqspool ingest of %s: %w (daemon log in %s)", k.Name, werr, root)
	}
	if serr != nil {
		return rate{}, fmt.Errorf("stop mqspool after ingest: %w", serr)
	}
	if !dirEmpty(filepath.Join(d.dir, "failed")) {
		return rate{}, fmt.Errorf("mqspool rejected files of %s: see %s/failed", k.Name, d.dir)
	}
	r := rate{Messages: int64(k.Files * k.PerFile), Elapsed: done.Sub(d.started)}
	logf("mqspool ingest %s: %d in %s", k.Name, r.Messages, r.Elapsed)
	return r, nil
}

// ingestBare reads and unlinks the same files with no fsync, the floor
// any ingest pays. With decode set it also decodes each line of a .jsonl
// file with encoding/json, the least a reader of JSON lines does.
func ingestBare(e *env, k ingestKind, decode bool) (rate, error) {
	root, err := e.dir("bare")
	if err != nil {
		return rate{}, err
	}
	leaf := filepath.Join(root, "new", "bench", "data")
	if err := writeFiles(leaf, k, ingestPayload); err != nil {
		return rate{}, err
	}
	start := time.Now()
	entries, err := os.ReadDir(leaf)
	if err != nil {
		return rate{}, fmt.Errorf("read directory %s: %w", leaf, err)
	}
	var read, lines int64
	for _, ent := range entries {
		path := filepath.Join(leaf, ent.Name())
		b, err := os.ReadFile(path)
		if err != nil {
			return rate{}, fmt.Errorf("read %s: %w", path, err)
		}
		read += int64(len(b))
		if decode {
			n, err := decodeLines(b)
			if err != nil {
				return rate{}, fmt.Errorf("decode %s: %w", path, err)
			}
			lines += n
		}
		if err := os.Remove(path); err != nil {
			return rate{}, fmt.Errorf("remove %s: %w", path, err)
		}
	}
	r := rate{Messages: int64(k.Files * k.PerFile), Elapsed: time.Since(start)}
	logf("bare loop %s (decode %v): %d in %s (%d bytes, %d lines decoded)", k.Name, decode,
		r.Messages, r.Elapsed, read, lines)
	return r, nil
}

// decodeLines decodes each line of b into the fields the benchmark's
// files use and returns how many lines it decoded.
func decodeLines(b []byte) (int64, error) {
	var n int64
	for line := range bytes.Lines(b) {
		var m struct {
			Topic   string `json:"topic"`
			Payload string `json:"payload"`
			QoS     int    `json:"qos"`
		}
		if err := json.Unmarshal(line, &m); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// writeFiles writes k's files into dir with modification times a minute
// in the past, as files that waited while the daemon was down, so the
// pickup takes them without waiting for them to settle.
func writeFiles(dir string, k ingestKind, size int) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	content, ext, err := fileContent(k, size)
	if err != nil {
		return err
	}
	past := time.Now().Add(-time.Minute)
	for i := range k.Files {
		path := filepath.Join(dir, fmt.Sprintf("m%07d%s", i, ext))
		if err := os.WriteFile(path, content, 0o644); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
		if err := os.Chtimes(path, past, past); err != nil {
			return fmt.Errorf("set times of %s: %w", path, err)
		}
	}
	return nil
}

// fileContent returns one file's bytes and its name's extension: a raw
// payload, whose topic is its directory bench/data, or PerFile JSON lines.
func fileContent(k ingestKind, size int) ([]byte, string, error) {
	payload := bytes.Repeat([]byte("p"), size)
	if !k.JSONL {
		return payload, "", nil
	}
	line, err := json.Marshal(map[string]any{"topic": dataTopic, "payload": string(payload), "qos": 1})
	if err != nil {
		return nil, "", fmt.Errorf("encode JSON line: %w", err)
	}
	return bytes.Repeat(append(line, '\n'), k.PerFile), ".jsonl", nil
}
