package format

import (
	"bytes"
	"encoding/base64"
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

// jsonLine is the schema of one .jsonl line. Pointers tell an absent
// field from a zero one.
type jsonLine struct {
	Topic                 *string     `json:"topic"`
	Payload               *string     `json:"payload"`
	PayloadBase64         *string     `json:"payload_base64"`
	QoS                   *int64      `json:"qos"`
	Retain                *bool       `json:"retain"`
	Expiry                *int64      `json:"expiry"`
	ContentType           *string     `json:"content_type"`
	ResponseTopic         *string     `json:"response_topic"`
	CorrelationDataBase64 *string     `json:"correlation_data_base64"`
	PayloadFormat         *string     `json:"payload_format"`
	UserProperties        [][]*string `json:"user_properties"`
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
		m, f, err := parseJSONLine(text)
		if err != nil {
			return &ParseError{Line: line, Err: err}
		}
		if err := fn(Entry{Message: m, Fields: f, Line: line, End: off}); err != nil {
			return err
		}
	}
	return nil
}

// parseJSONLine decodes and checks one object. The decoder follows the
// encoding/json v2 design: member names match exactly, and a name given
// twice, invalid UTF-8 or text after the object is an error. So a line is
// never taken with a value other than the one written.
func parseJSONLine(text []byte) (message.Message, Fields, error) {
	var j jsonLine
	if err := json.Unmarshal(text, &j, json.RejectUnknownMembers(true)); err != nil {
		return message.Message{}, Fields{}, decodeError(text, err)
	}
	return j.message()
}

// decodeError rewrites a decoder error for the reason file: it names the
// field and the expected type, without the decoder's Go type names.
func decodeError(text []byte, err error) error {
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
	var syn *jsontext.SyntacticError
	if errors.As(err, &syn) && firstValueValid(text) {
		return errors.New("text after the JSON object: put each object on its own line")
	}
	msg := strings.TrimPrefix(strings.TrimPrefix(err.Error(), "jsontext: "), "json: ")
	if strings.Contains(msg, "invalid UTF-8") {
		return fmt.Errorf("invalid JSON object: %s: JSON text must be UTF-8; put binary "+
			"payloads in payload_base64", msg)
	}
	return fmt.Errorf("invalid JSON object: %s: write one complete object per line, "+
		"in UTF-8, with each field once", msg)
}

// firstValueValid reports whether text starts with a valid JSON value. A
// line that does and still fails to decode has text after that value.
func firstValueValid(text []byte) bool {
	_, err := jsontext.NewDecoder(bytes.NewReader(text)).ReadValue()
	return err == nil
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

// message converts the decoded fields and checks their values.
func (j *jsonLine) message() (message.Message, Fields, error) {
	var m message.Message
	var f Fields
	if err := j.payload(&m); err != nil {
		return m, f, err
	}
	if j.Topic != nil {
		if err := message.ValidateTopic(*j.Topic, true); err != nil {
			return m, f, fmt.Errorf("field topic %s is invalid: %w", message.QuoteShort(*j.Topic), err)
		}
		m.Topic, f.Topic = *j.Topic, true
	}
	if j.QoS != nil {
		if *j.QoS < 0 || *j.QoS > 2 {
			return m, f, fmt.Errorf("field qos %d is invalid: use 0, 1 or 2", *j.QoS)
		}
		m.QoS, f.QoS = byte(*j.QoS), true
	}
	if j.Retain != nil {
		m.Retain, f.Retain = *j.Retain, true
	}
	if j.Expiry != nil {
		if *j.Expiry < 0 || *j.Expiry > 1<<32-1 {
			return m, f, fmt.Errorf("field expiry %d is invalid: use whole seconds "+
				"from 0 to 4294967295", *j.Expiry)
		}
		m.ExpirySeconds = uint32(*j.Expiry)
	}
	if err := j.properties(&m); err != nil {
		return m, f, err
	}
	return m, f, nil
}

// payload sets the payload from exactly one of payload and payload_base64.
func (j *jsonLine) payload(m *message.Message) error {
	switch {
	case j.Payload != nil && j.PayloadBase64 != nil:
		return errors.New("both payload and payload_base64 are set: use one of them")
	case j.Payload != nil:
		m.Payload = []byte(*j.Payload)
	case j.PayloadBase64 != nil:
		b, err := base64.StdEncoding.DecodeString(*j.PayloadBase64)
		if err != nil {
			return fmt.Errorf("field payload_base64 is invalid: %v: use standard base64 "+
				"with padding", err)
		}
		m.Payload = b
	default:
		return errors.New("payload is missing: set payload (text) or payload_base64")
	}
	return nil
}

// properties sets the optional MQTT 5 properties.
func (j *jsonLine) properties(m *message.Message) error {
	for _, s := range []*string{j.ContentType, j.ResponseTopic, j.PayloadFormat} {
		if s != nil {
			if err := checkString(*s); err != nil {
				return fmt.Errorf("field value %q is invalid: %w", *s, err)
			}
		}
	}
	if j.ContentType != nil {
		m.ContentType = *j.ContentType
	}
	if j.ResponseTopic != nil {
		if err := checkResponseTopic(*j.ResponseTopic); err != nil {
			return fmt.Errorf("field response_topic %s is invalid: %w", message.QuoteShort(*j.ResponseTopic), err)
		}
		m.ResponseTopic = *j.ResponseTopic
	}
	if j.CorrelationDataBase64 != nil {
		b, err := base64.StdEncoding.DecodeString(*j.CorrelationDataBase64)
		if err != nil {
			return fmt.Errorf("field correlation_data_base64 is invalid: %v: use standard "+
				"base64 with padding", err)
		}
		m.CorrelationData = b
	}
	if j.PayloadFormat != nil {
		pf, ok := parsePayloadFormat(*j.PayloadFormat)
		if !ok {
			return fmt.Errorf("field payload_format %q is invalid: use utf8 or bytes",
				*j.PayloadFormat)
		}
		m.PayloadFormat = pf
	}
	return j.userProperties(m)
}

func (j *jsonLine) userProperties(m *message.Message) error {
	for i, kv := range j.UserProperties {
		if len(kv) != 2 || kv[0] == nil || kv[1] == nil {
			return fmt.Errorf("user_properties[%d] is invalid: write each property as "+
				"[\"key\", \"value\"]", i)
		}
		if *kv[0] == "" {
			return fmt.Errorf("user_properties[%d] is invalid: %w", i, ErrEmptyPropertyKey)
		}
		for _, s := range kv {
			if err := checkString(*s); err != nil {
				return fmt.Errorf("user_properties[%d] value %q is invalid: %w", i, *s, err)
			}
		}
		m.UserProperties = append(m.UserProperties,
			message.UserProperty{Key: *kv[0], Value: *kv[1]})
	}
	return nil
}
