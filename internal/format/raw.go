package format

import (
	"fmt"
	"path"
	"strings"
	"unicode/utf8"

	"github.com/mqspool/mqspool/internal/message"
)

// Kind is a file format, chosen by the file name's extension.
type Kind int

const (
	// KindRaw is any file without a known extension: the whole file is
	// the payload.
	KindRaw Kind = iota
	// KindMsg is a .msg file.
	KindMsg
	// KindJSONL is a .jsonl file.
	KindJSONL
)

// KindOf returns the format of the file called name. The extension is
// matched exactly, so "a.MSG" is a raw file.
func KindOf(name string) Kind {
	switch path.Ext(name) {
	case ".msg":
		return KindMsg
	case ".jsonl":
		return KindJSONL
	}
	return KindRaw
}

// CheckName checks that rel, a slash-separated path relative to new/, is
// safe to join to a spool directory and to store: relative, clean, valid
// UTF-8, without ".." and without components that start with a dot.
func CheckName(rel string) error {
	if !utf8.ValidString(rel) {
		return fmt.Errorf("path %q is not valid UTF-8: rename it using UTF-8", rel)
	}
	if rel == "" || path.IsAbs(rel) || path.Clean(rel) != rel {
		return fmt.Errorf("path %q: %w", rel, ErrUnsafeName)
	}
	for _, part := range strings.Split(rel, "/") {
		if strings.HasPrefix(part, ".") {
			return fmt.Errorf("path %q: %w", rel, ErrUnsafeName)
		}
	}
	return nil
}

// TopicFromPath returns the topic of a raw file: the directory part of
// rel, its path relative to new/. So "site1/temp/0001.json" gives
// "site1/temp". A file directly in new/ returns [ErrNoPathTopic]. The topic
// is checked with [message.ValidateTopic], allowing a leading $ because a
// route decides that.
func TopicFromPath(rel string) (string, error) {
	if err := CheckName(rel); err != nil {
		return "", err
	}
	dir := path.Dir(rel)
	if dir == "." {
		return "", ErrNoPathTopic
	}
	if err := message.ValidateTopic(dir, true); err != nil {
		return "", fmt.Errorf("directory %q cannot be a topic: %w: rename the directory", dir, err)
	}
	return dir, nil
}
