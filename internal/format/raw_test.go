package format

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestTopicFromPath(t *testing.T) {
	tests := []struct {
		rel, topic, err string
	}{
		{"site1/temp/0001.json", "site1/temp", ""},
		{"a/file", "a", ""},
		{"$SYS/x/f", "$SYS/x", ""},
		{"file", "", "directly in new/"},
		{"../x/f", "", "clean relative path"},
		{"a/../b/f", "", "clean relative path"},
		{"/abs/f", "", "clean relative path"},
		{"a/.hidden/f", "", "starting with a dot"},
		{"a/+/f", "", "wildcard"},
		{"\xff/f", "", "not valid UTF-8"},
		{"a//b/f", "", "clean relative path"},
	}
	for _, tt := range tests {
		t.Run(tt.rel, func(t *testing.T) {
			topic, err := TopicFromPath(tt.rel)
			if tt.err == "" {
				if err != nil || topic != tt.topic {
					t.Errorf("TopicFromPath = %q, %v; want %q", topic, err, tt.topic)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("TopicFromPath error = %v, want it to contain %q", err, tt.err)
			}
		})
	}
}

func TestKindOf(t *testing.T) {
	cases := map[string]Kind{"a.msg": KindMsg, "b/c.jsonl": KindJSONL, "x.json": KindRaw,
		"A.MSG": KindRaw, "msg": KindRaw}
	for name, want := range cases {
		if got := KindOf(name); got != want {
			t.Errorf("KindOf(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{"tmp", "new"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := WriteFileAtomic(dir, "site/a/f.msg", []byte("data")); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dir, "new", "site", "a", "f.msg"))
	if err != nil || string(got) != "data" {
		t.Fatalf("read back = %q, %v", got, err)
	}
	err = WriteFileAtomic(dir, "site/a/f.msg", []byte("other"))
	if !errors.Is(err, os.ErrExist) {
		t.Errorf("second drop error = %v, want os.ErrExist", err)
	}
	left, _ := os.ReadDir(filepath.Join(dir, "tmp"))
	if len(left) != 0 {
		t.Errorf("tmp/ has %d files left, want 0", len(left))
	}
	if err := WriteFileAtomic(dir, "../escape", nil); err == nil {
		t.Error("drop outside new/ succeeded, want error")
	}
}
