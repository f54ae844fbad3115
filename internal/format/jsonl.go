package format

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/mqspool/mqspool/internal/message"
)

// Entry is one message of a .jsonl file.
type Entry struct {
	Message message.Message
	// Fields records which fields the line set itself.
	Fields Fields
	// Line is the 1-based line number of the object in the file.
	Line int
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
// in LF or CRLF. Lines that hold only spaces or tabs are skipped but still
// counted, so line numbers match an editor's. The file is all or nothing:
// the first bad line fails the whole file with a [*ParseError] naming it.
// Unknown fields are errors.
func ParseJSONL(data []byte) ([]Entry, error) {
	if len(data) == 0 {
		return nil, &ParseError{Err: ErrEmpty}
	}
	var entries []Entry
	for line := 1; len(data) > 0; line++ {
		text := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			text, data = data[:i], data[i+1:]
		} else {
			data = nil
		}
		text = bytes.TrimSuffix(text, []byte("\r"))
		if len(bytes.Trim(text, " \t")) == 0 {
			continue
		}
		m, f, err := parseJSONLine(text)
		if err != nil {
			return nil, &ParseError{Line: line, Err: err}
		}
		entries = append(entries, Entry{Message: m, Fields: f, Line: line})
	}
	if len(entries) == 0 {
		return nil, &ParseError{Err: errors.New("file has only blank lines: " +
			"write one JSON object per line")}
	}
	return entries, nil
}

// parseJSONLine decodes and checks one object.
func parseJSONLine(text []byte) (message.Message, Fields, error) {
	var j jsonLine
	dec := json.NewDecoder(bytes.NewReader(text))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&j); err != nil {
		return message.Message{}, Fields{}, fmt.Errorf("invalid JSON object: %v: "+
			"write one complete object per line with only the documented fields", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return message.Message{}, Fields{}, errors.New("text after the JSON object: " +
			"put each object on its own line")
	}
	return j.message()
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
			return m, f, fmt.Errorf("field topic %q is invalid: %w", *j.Topic, err)
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
		if err := message.ValidateTopic(*j.ResponseTopic, true); err != nil {
			return fmt.Errorf("field response_topic %q is invalid: %w", *j.ResponseTopic, err)
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
		if err := checkString(*kv[0] + *kv[1]); err != nil {
			return fmt.Errorf("user_properties[%d] is invalid: %w", i, err)
		}
		m.UserProperties = append(m.UserProperties,
			message.UserProperty{Key: *kv[0], Value: *kv[1]})
	}
	return nil
}
