package spool

import (
	"errors"
	"testing"
)

// part returns messages [start, start+n) of the file with id as one part.
func part(file FileBatch, start, n int, more bool) FileBatch {
	return FileBatch{ID: file.ID, Messages: file.Messages[start : start+n], Start: start, More: more}
}

func progress(t *testing.T, s *Spool, id FileID) (int, bool) {
	t.Helper()
	n, complete, err := s.FileProgress(id)
	if err != nil {
		t.Fatalf("FileProgress: %v", err)
	}
	return n, complete
}

func TestAppendParts_StoreInOrderAndRecordProgress(t *testing.T) {
	s := openSpool(t, testOptions(t))
	f := batch("big.jsonl", 0, 7)

	p1 := part(f, 0, 3, true)
	mustAppend(t, s, p1)
	if n, complete := progress(t, s, f.ID); n != 3 || complete {
		t.Fatalf("progress after the first part: %d stored, complete %v; want 3, false", n, complete)
	}
	if seen, _ := s.Seen(f.ID); !seen {
		t.Error("a file with a part stored is not seen")
	}

	files := []FileBatch{part(f, 3, 4, false)}
	mustAppend(t, s, files...)
	if n, complete := progress(t, s, f.ID); n != 7 || !complete {
		t.Fatalf("progress after the last part: %d stored, complete %v; want 7, true", n, complete)
	}
	equal(t, "second part's sequence numbers", [2]uint64{files[0].FirstSeq, uint64(files[0].Count)}, [2]uint64{4, 4})
	equal(t, "payloads", payloadsOf(drain(t, s.NewCursor())),
		[]string{"payload 0", "payload 1", "payload 2", "payload 3", "payload 4", "payload 5", "payload 6"})
}

// A run that stopped after some parts starts the file again, and the
// parts it repeats are skipped. A whole file appended again after its
// last part is a repeat.
func TestAppendParts_RepeatedPartsSkipped(t *testing.T) {
	s := openSpool(t, testOptions(t))
	f := batch("big.jsonl", 0, 6)
	mustAppend(t, s, part(f, 0, 4, true))

	again := []FileBatch{part(f, 2, 4, false)}
	mustAppend(t, s, again...)
	equal(t, "messages stored", s.Stats().Messages, int64(6))
	equal(t, "overlapping part's first new sequence number and count",
		[2]uint64{again[0].FirstSeq, uint64(again[0].Count)}, [2]uint64{5, 2})

	whole := []FileBatch{f}
	mustAppend(t, s, whole...)
	equal(t, "messages after appending the whole file again", s.Stats().Messages, int64(6))
	equal(t, "repeat's first sequence number and count",
		[2]uint64{whole[0].FirstSeq, uint64(whole[0].Count)}, [2]uint64{1, 6})
	equal(t, "payloads", payloadsOf(drain(t, s.NewCursor())),
		[]string{"payload 0", "payload 1", "payload 2", "payload 3", "payload 4", "payload 5"})
}

func TestAppendParts_GapRejected(t *testing.T) {
	s := openSpool(t, testOptions(t))
	f := batch("big.jsonl", 0, 6)
	mustAppend(t, s, part(f, 0, 2, true))

	n, err := s.Append([]FileBatch{part(f, 3, 3, false)})
	if err == nil || n != 0 {
		t.Fatalf("Append of a part after a gap: %d accepted, err %v; want an error", n, err)
	}
	if errors.Is(err, ErrFull) || errors.Is(err, ErrTooLarge) {
		t.Errorf("gap reported as a full spool: %v", err)
	}
	equal(t, "messages stored", s.Stats().Messages, int64(2))
}

// A part that does not fit waits like a whole file; the parts before it
// stay stored and the identity keeps their progress.
func TestAppendParts_FullSpoolKeepsProgress(t *testing.T) {
	opts := testOptions(t)
	opts.MaxMessages = 5
	s := openSpool(t, opts)
	f := batch("big.jsonl", 0, 8)
	mustAppend(t, s, part(f, 0, 4, true))

	n, err := s.Append([]FileBatch{part(f, 4, 4, false)})
	if !errors.Is(err, ErrFull) || n != 0 {
		t.Fatalf("Append of a part over the limit: %d accepted, err %v; want ErrFull", n, err)
	}
	if n, complete := progress(t, s, f.ID); n != 4 || complete {
		t.Errorf("progress after the refused part: %d stored, complete %v; want 4, false", n, complete)
	}
}

// Forgetting a file in parts, as the pickup does when the file is gone
// from new/, removes its progress.
func TestAppendParts_ForgetRemovesProgress(t *testing.T) {
	s := openSpool(t, testOptions(t))
	f := batch("big.jsonl", 0, 4)
	mustAppend(t, s, part(f, 0, 2, true))
	if err := s.Forget([]FileID{f.ID}); err != nil {
		t.Fatal(err)
	}
	if n, complete := progress(t, s, f.ID); n != 0 || complete {
		t.Errorf("progress after Forget: %d stored, complete %v; want 0, false", n, complete)
	}
}
