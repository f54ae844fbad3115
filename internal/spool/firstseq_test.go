package spool

import "testing"

func TestSpool_Append_FirstSeq(t *testing.T) {
	s := openSpool(t, testOptions(t))
	files := []FileBatch{batch("a", 0, 3), batch("b", 3, 2)}
	if n, err := s.Append(files); err != nil || n != 2 {
		t.Fatalf("append: %d, %v", n, err)
	}
	equal(t, "first seq of a", files[0].FirstSeq, uint64(1))
	equal(t, "first seq of b", files[1].FirstSeq, uint64(4))

	// A file appended again (a crash before its unlink) reports where its
	// messages went the first time.
	again := []FileBatch{batch("b", 3, 2)}
	if n, err := s.Append(again); err != nil || n != 1 {
		t.Fatalf("append again: %d, %v", n, err)
	}
	equal(t, "first seq of b appended again", again[0].FirstSeq, uint64(4))
}
