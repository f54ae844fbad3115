package format

// This file keeps the reflection-based .jsonl line decoder that
// lineDecoder replaced, as the reference for FuzzParseJSONLine. It words
// its errors with the helpers of jsonl.go, which the change left as they
// were.

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

// refJSONLine is the schema of one .jsonl line. Pointers tell an absent
// field from a zero one.
type refJSONLine struct {
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

// refParseJSONLine decodes and checks one object. The decoder follows the
// encoding/json v2 design: member names match exactly, and a name given
// twice, invalid UTF-8 or text after the object is an error. So a line is
// never taken with a value other than the one written.
func refParseJSONLine(text []byte) (message.Message, Fields, error) {
	var j refJSONLine
	if err := json.Unmarshal(text, &j, json.RejectUnknownMembers(true)); err != nil {
		return message.Message{}, Fields{}, refDecodeError(text, err)
	}
	return j.message()
}

// refDecodeError rewrites a decoder error for the reason file: it names the
// field and the expected type, without the decoder's Go type names.
func refDecodeError(text []byte, err error) error {
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
	if errors.As(err, &syn) && refFirstValueValid(text) {
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

// refFirstValueValid reports whether text starts with a valid JSON value. A
// line that does and still fails to decode has text after that value.
func refFirstValueValid(text []byte) bool {
	_, err := jsontext.NewDecoder(bytes.NewReader(text)).ReadValue()
	return err == nil
}

// message converts the decoded fields and checks their values.
func (j *refJSONLine) message() (message.Message, Fields, error) {
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
func (j *refJSONLine) payload(m *message.Message) error {
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
func (j *refJSONLine) properties(m *message.Message) error {
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

func (j *refJSONLine) userProperties(m *message.Message) error {
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
