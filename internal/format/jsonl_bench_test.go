package format

import (
	"bytes"
	"fmt"
	"testing"
)

// BenchmarkParseJSONL_100Lines parses a .jsonl file of 100 lines of
// about 100 bytes each, the shape of the ingest benchmark's batches.
func BenchmarkParseJSONL_100Lines(b *testing.B) {
	var file bytes.Buffer
	for i := range 100 {
		fmt.Fprintf(&file, `{"topic":"bench/jsonl/%03d","payload":"%s","qos":1}`+"\n",
			i, bytes.Repeat([]byte("x"), 50))
	}
	data := file.Bytes()

	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		n := 0
		if err := EachJSONL(data, 0, func(Entry) error { n++; return nil }); err != nil {
			b.Fatal(err)
		}
		if n != 100 {
			b.Fatalf("parsed %d lines, want 100", n)
		}
	}
}
