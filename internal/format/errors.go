package format

import (
	"errors"
	"fmt"
)

// Errors that callers may test with errors.Is.
var (
	// ErrEmpty reports a .msg or .jsonl file with no bytes in it.
	ErrEmpty = errors.New("file is empty: a .msg or .jsonl file needs at least one message")
	// ErrNoPathTopic reports a raw file directly in new/, whose path gives
	// no topic.
	ErrNoPathTopic = errors.New("file is directly in new/, so its path gives no topic: " +
		"put it in a subdirectory named after the topic or set publish.default_topic")
	// ErrUnsafeName reports a name that is absolute, not clean, contains
	// "..", or starts with a dot.
	ErrUnsafeName = errors.New("name must be a clean relative path without \"..\" " +
		"or components starting with a dot")
	// ErrEmptyPropertyKey reports a user property with an empty key. MQTT
	// 5 allows one, but in a spool file it is most often an unset shell
	// variable, so the formats reject it.
	ErrEmptyPropertyKey = errors.New("user property key is empty: write it as key=value with a non-empty key")
)

// ParseError is a problem at one place in a .msg or .jsonl file.
type ParseError struct {
	// Line is the 1-based line number, or 0 when the problem concerns the
	// whole file.
	Line int
	// Err describes the problem and how to fix it.
	Err error
}

// Error returns the problem prefixed with its line number.
func (e *ParseError) Error() string {
	if e.Line == 0 {
		return e.Err.Error()
	}
	return fmt.Sprintf("line %d: %v", e.Line, e.Err)
}

// Unwrap returns the underlying problem.
func (e *ParseError) Unwrap() error { return e.Err }

func lineError(line int, format string, args ...any) error {
	return &ParseError{Line: line, Err: fmt.Errorf(format, args...)}
}

var (
	errNotUTF8 = errors.New("it is not valid UTF-8")
	errNUL     = errors.New("it contains U+0000")
)
