package format

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"

	"github.com/mqspool/mqspool/internal/message"
)

// Entry is one message of a .jsonl file.
type Entry struct {
	Message message.Message
	// Fields records which fields the line set itself.
	Fields Fields
	// Line is the 1-based line number of the object in the file.
	Line int
	// End is the byte offset just past the object's line, set by
	// [EachJSONL].
	End int
}

// ParseJSONL parses a .jsonl file: one JSON object per line, lines ending
// in LF or CRLF, and a UTF-8 byte order mark at the start skipped. Lines that hold only spaces or tabs are skipped but still
// counted, so line numbers match an editor's. The file is all or nothing:
// the first bad line fails the whole file with a [*ParseError] naming it.
// Unknown fields are errors, and so is a file without any object.
func ParseJSONL(data []byte) ([]Entry, error) {
	var entries []Entry
	err := EachJSONL(data, 0, func(e Entry) error {
		entries = append(entries, e)
		return nil
	})
	if err == nil {
		err = CheckJSONLCount(len(data), len(entries))
	}
	if err != nil {
		return nil, err
	}
	return entries, nil
}

// CheckJSONLCount rejects a .jsonl file of size bytes that held n
// objects, when n is 0.
func CheckJSONLCount(size, n int) error {
	switch {
	case size == 0:
		return &ParseError{Err: ErrEmpty}
	case n == 0:
		return &ParseError{Err: errors.New("file has only blank lines: " +
			"write one JSON object per line")}
	}
	return nil
}

// EachJSONL parses .jsonl data as [ParseJSONL] does, but hands each entry
// to fn as soon as its line is parsed instead of collecting them, so a
// long file needs memory for one entry at a time. Line numbers count on
// from lines, the number of lines before data, so a file can be parsed
// in pieces. Each entry's End is the offset in data just past its line.
// EachJSONL stops at the first bad line with a [*ParseError], or at the
// first error from fn, which it returns as it is. It accepts data without
// any object; see [CheckJSONLCount].
func EachJSONL(data []byte, lines int, fn func(Entry) error) error {
	var d lineDecoder
	off := 0
	if lines == 0 {
		off = skipBOM(data) // only the start of a file may carry one
	}
	for line := lines + 1; off < len(data); line++ {
		text := data[off:]
		if i := bytes.IndexByte(text, '\n'); i >= 0 {
			text = text[:i]
			off += i + 1
		} else {
			off = len(data)
		}
		text = bytes.TrimSuffix(text, []byte("\r"))
		if len(bytes.Trim(text, " \t")) == 0 {
			continue
		}
		m, f, err := d.parseLine(text)
		if err != nil {
			return &ParseError{Line: line, Err: err}
		}
		if err := fn(Entry{Message: m, Fields: f, Line: line, End: off}); err != nil {
			return err
		}
	}
	return nil
}

// errTextAfter reports text after the line's JSON value.
var errTextAfter = errors.New("text after the JSON object: put each object on its own line")

// decodeError rewrites a decoder error for the reason file: it names the
// field and the expected type, without the decoder's Go type names.
func decodeError(err error) error {
	if errors.Is(err, errTextAfter) {
		return err
	}
	var sem *json.SemanticError
	if errors.As(err, &sem) && sem.JSONPointer == "" {
		return fmt.Errorf("invalid JSON object: the line is a JSON %s: write one JSON "+
			"object per line", kindName(sem.JSONKind))
	}
	if errors.As(err, &sem) {
		field := firstToken(sem.JSONPointer)
		if errors.Is(sem.Err, json.ErrUnknownName) {
			return fmt.Errorf("invalid JSON object: unknown field %q: use only the documented "+
				"fields, spelled in lower case", field)
		}
		kind := "a JSON " + kindName(sem.JSONKind)
		// A fraction such as 1.5 for qos fails as a syntax error, which
		// the fix below already explains.
		if sem.Err != nil && !errors.Is(sem.Err, strconv.ErrSyntax) {
			kind += " (" + sem.Err.Error() + ")"
		}
		return fmt.Errorf("invalid JSON object: %s is %s: %s", pointerPath(sem.JSONPointer),
			kind, expectedValue(field))
	}
	msg := strings.TrimPrefix(strings.TrimPrefix(err.Error(), "jsontext: "), "json: ")
	if strings.Contains(msg, "invalid UTF-8") {
		return fmt.Errorf("invalid JSON object: %s: JSON text must be UTF-8; put binary "+
			"payloads in payload_base64", msg)
	}
	return fmt.Errorf("invalid JSON object: %s: write one complete object per line, "+
		"in UTF-8, with each field once", msg)
}

// firstToken returns the object member a pointer starts with, such as
// "user_properties" for "/user_properties/0/1".
func firstToken(p jsontext.Pointer) string {
	for tok := range p.Tokens() {
		return tok
	}
	return string(p)
}

// pointerPath returns a JSON pointer in the notation of the field table,
// such as "user_properties[0][1]" for "/user_properties/0/1".
func pointerPath(p jsontext.Pointer) string {
	var b strings.Builder
	for tok := range p.Tokens() {
		if b.Len() > 0 && tok != "" && strings.Trim(tok, "0123456789") == "" {
			b.WriteString("[" + tok + "]")
			continue
		}
		if b.Len() > 0 {
			b.WriteString(".")
		}
		b.WriteString(tok)
	}
	return b.String()
}

func kindName(k jsontext.Kind) string {
	switch k {
	case '"':
		return "string"
	case '0':
		return "number"
	case 't', 'f':
		return "boolean"
	case '[':
		return "array"
	case '{':
		return "object"
	case 'n':
		return "null"
	}
	return "value of the wrong type"
}

// expectedValue returns the fix for a field of the wrong JSON type.
func expectedValue(field string) string {
	switch field {
	case "qos", "expiry":
		return "write a whole number"
	case "retain":
		return "write true or false"
	case "user_properties":
		return `write an array of ["key", "value"] pairs of strings`
	}
	return "write a string"
}
