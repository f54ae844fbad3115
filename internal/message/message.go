// Package message defines the MQTT application message that flows through
// mqspool: produced by the spool-directory pickup, stored by the spool and
// published by the event loop. It also holds the topic rules that every
// stage checks.
package message

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// PayloadFormat is the MQTT 5 Payload Format Indicator, with a value for
// "not set" so that an absent property stays absent on the wire.
type PayloadFormat uint8

const (
	// PayloadFormatUnset sends no Payload Format Indicator.
	PayloadFormatUnset PayloadFormat = iota
	// PayloadFormatBytes sends the indicator 0: unspecified bytes.
	PayloadFormatBytes
	// PayloadFormatUTF8 sends the indicator 1: UTF-8 encoded character data.
	PayloadFormatUTF8
)

// String returns the name used in .msg headers and .jsonl fields.
func (f PayloadFormat) String() string {
	switch f {
	case PayloadFormatBytes:
		return "bytes"
	case PayloadFormatUTF8:
		return "utf8"
	default:
		return ""
	}
}

// UserProperty is one MQTT 5 user property. Order and repeats are kept.
type UserProperty struct {
	Key   string
	Value string
}

// Message is one MQTT application message with its MQTT 5 properties.
type Message struct {
	Topic   string
	Payload []byte
	QoS     byte
	Retain  bool

	// ExpirySeconds is the Message Expiry Interval; 0 means no expiry.
	ExpirySeconds   uint32
	ContentType     string
	ResponseTopic   string
	CorrelationData []byte
	PayloadFormat   PayloadFormat
	UserProperties  []UserProperty
}

// MaxTopicBytes is the longest topic name MQTT can encode.
const MaxTopicBytes = 65535

// MaxStringBytes is the longest UTF-8 string or binary data field that
// MQTT can encode, because its length prefix has two bytes.
const MaxStringBytes = 65535

// Errors returned by ValidateTopic. Callers wrap them with the topic.
var (
	// ErrTopicEmpty reports a zero-length topic name.
	ErrTopicEmpty = errors.New("topic is empty: give one, or leave the field out to take the route's topic or publish.default_topic")
	// ErrTopicTooLong reports a topic over MaxTopicBytes.
	ErrTopicTooLong = errors.New("topic is longer than 65535 bytes: shorten it")
	// ErrTopicNotUTF8 reports a topic that is not valid UTF-8.
	ErrTopicNotUTF8 = errors.New("topic is not valid UTF-8: write it in UTF-8")
	// ErrTopicNUL reports a topic containing U+0000.
	ErrTopicNUL = errors.New("topic contains U+0000: remove it")
	// ErrTopicWildcard reports a topic name containing + or #.
	ErrTopicWildcard = errors.New("topic contains a wildcard (+ or #), which only subscriptions may use: publish to a topic without them")
	// ErrTopicDollar reports a topic starting with $ where none is allowed.
	ErrTopicDollar = errors.New("topic starts with $, which brokers reserve; set allow_dollar on a route to permit it")
	// ErrControlCharacter reports a string with a code point that an
	// MQTT 5 string should not contain (section 1.5.4) and that brokers
	// such as mosquitto treat as a malformed packet.
	ErrControlCharacter = errors.New("brokers treat it as a malformed packet")
)

// CheckCodePoints returns an error naming the first code point of s that
// an MQTT 5 string should not contain: the control characters U+0001 to
// U+001F and U+007F to U+009F, and the noncharacters. s must be valid
// UTF-8 without U+0000.
func CheckCodePoints(s string) error {
	// Most strings are ASCII: check bytes until the first that is not.
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= utf8.RuneSelf {
			return checkRunes(s, i)
		}
		if c < 0x20 || c == 0x7F {
			return controlError(rune(c), i)
		}
	}
	return nil
}

// checkRunes is CheckCodePoints for s from byte offset start on.
func checkRunes(s string, start int) error {
	for i, r := range s[start:] {
		if isControl(r) || isNoncharacter(r) {
			return controlError(r, start+i)
		}
	}
	return nil
}

func controlError(r rune, offset int) error {
	return &CodePointError{Rune: r, Offset: offset}
}

// CodePointError is a string with a code point that an MQTT 5 string
// should not contain. It wraps ErrControlCharacter.
type CodePointError struct {
	Rune   rune
	Offset int // in bytes
}

// Problem describes the code point, without the fix that Error adds.
func (e *CodePointError) Problem() string {
	return fmt.Sprintf("contains %U at byte %d, and %v", e.Rune, e.Offset, ErrControlCharacter)
}

func (e *CodePointError) Error() string { return e.Problem() + ": remove it" }

func (e *CodePointError) Unwrap() error { return ErrControlCharacter }

func isControl(r rune) bool { return r <= 0x1F || (r >= 0x7F && r <= 0x9F) }

// isNoncharacter reports the code points that Unicode reserves as
// noncharacters: U+FDD0 to U+FDEF and the last two of every plane.
func isNoncharacter(r rune) bool {
	return (r >= 0xFDD0 && r <= 0xFDEF) || r&0xFFFE == 0xFFFE
}

// ValidateString checks a UTF-8 string field of a PUBLISH, such as a
// content type or a user property: at most MaxStringBytes long, valid
// UTF-8, and none of the code points that MQTT 5 forbids or that brokers
// treat as malformed.
func ValidateString(s string) error {
	if len(s) > MaxStringBytes {
		return fmt.Errorf("is %d bytes, over the maximum of %d bytes for an MQTT string: shorten it",
			len(s), MaxStringBytes)
	}
	if !utf8.ValidString(s) {
		return errors.New("is not valid UTF-8")
	}
	if strings.IndexByte(s, 0) >= 0 {
		return errors.New("contains U+0000, which MQTT forbids: remove it")
	}
	return CheckCodePoints(s)
}

// ValidateTopic checks that topic is a valid MQTT 5 topic name for a
// PUBLISH. Topics starting with $ are rejected unless allowDollar is set.
func ValidateTopic(topic string, allowDollar bool) error {
	switch {
	case topic == "":
		return ErrTopicEmpty
	case len(topic) > MaxTopicBytes:
		return ErrTopicTooLong
	case !utf8.ValidString(topic):
		return ErrTopicNotUTF8
	case strings.IndexByte(topic, 0) >= 0:
		return ErrTopicNUL
	case strings.ContainsAny(topic, "+#"):
		return ErrTopicWildcard
	case !allowDollar && strings.HasPrefix(topic, "$"):
		return ErrTopicDollar
	}
	return CheckCodePoints(topic)
}

// Validate checks the fields that MQTT constrains: the topic, the QoS and,
// when the payload is declared UTF-8, the payload itself.
func (m *Message) Validate(allowDollar bool) error {
	if err := ValidateTopic(m.Topic, allowDollar); err != nil {
		return fmt.Errorf("topic %s: %w", QuoteShort(m.Topic), err)
	}
	if m.QoS > 2 {
		return fmt.Errorf("qos %d is invalid: use 0, 1 or 2", m.QoS)
	}
	if m.PayloadFormat == PayloadFormatUTF8 && !utf8.Valid(m.Payload) {
		return errors.New("payload format is utf8 but the payload is not valid UTF-8: fix the payload or use payload format bytes")
	}
	if m.ResponseTopic != "" {
		if err := ValidateTopic(m.ResponseTopic, true); err != nil {
			return fmt.Errorf("response topic %s: %w", QuoteShort(m.ResponseTopic), err)
		}
	}
	if len(m.CorrelationData) > MaxStringBytes {
		return fmt.Errorf("correlation data is %d bytes, over the maximum of %d bytes for MQTT binary data: shorten it",
			len(m.CorrelationData), MaxStringBytes)
	}
	if err := ValidateString(m.ContentType); err != nil {
		return fmt.Errorf("content type %s %w", QuoteShort(m.ContentType), err)
	}
	for _, p := range m.UserProperties {
		if err := ValidateString(p.Key); err != nil {
			return fmt.Errorf("user property name %s %w", QuoteShort(p.Key), err)
		}
		if err := ValidateString(p.Value); err != nil {
			return fmt.Errorf("user property %s: value %s %w", QuoteShort(p.Key), QuoteShort(p.Value), err)
		}
	}
	return nil
}

// Size returns an estimate of the bytes the message occupies: payload,
// topic and property values. The spool limits and throttle use it.
func (m *Message) Size() int {
	n := len(m.Topic) + len(m.Payload) + len(m.ContentType) + len(m.ResponseTopic) + len(m.CorrelationData)
	for _, p := range m.UserProperties {
		n += len(p.Key) + len(p.Value)
	}
	return n
}

// quoteMax is how many bytes of a string QuoteShort keeps.
const quoteMax = 200

// QuoteShort quotes s for an error message like %q does, cut to its first
// quoteMax bytes with its length added when it is longer, so that a topic
// of 65535 bytes does not fill a terminal or a .reason file.
func QuoteShort(s string) string {
	if len(s) <= quoteMax {
		return strconv.Quote(s)
	}
	cut := s[:quoteMax]
	for i := 0; i < utf8.UTFMax && !utf8.ValidString(cut); i++ {
		cut = cut[:len(cut)-1] // do not split a character
	}
	return fmt.Sprintf("%s... (%d bytes)", strconv.Quote(cut), len(s))
}
