package format

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/mqspool/mqspool/internal/message"
)

// Fields records which message fields a file set itself. A field that is
// not set is filled from the first matching route, then from the
// publish.* defaults.
type Fields struct {
	Topic  bool
	QoS    bool
	Retain bool
}

// Header is one `Name: value` line of a .msg file.
type Header struct {
	Name  string
	Value string
}

// Canonical header names, as [WriteMsg] writes them.
const (
	HeaderTopic                  = "Topic"
	HeaderQoS                    = "QoS"
	HeaderRetain                 = "Retain"
	HeaderMessageExpiry          = "Message-Expiry"
	HeaderContentType            = "Content-Type"
	HeaderResponseTopic          = "Response-Topic"
	HeaderCorrelationData        = "Correlation-Data"
	HeaderPayloadFormat          = "Payload-Format"
	HeaderUserProperty           = "User-Property"
	HeaderSubscriptionIdentifier = "Subscription-Identifier"
	HeaderReceivedAt             = "Received-At"
	HeaderDup                    = "Dup"
)

// receivedOnly lists the headers that received files carry. The parser
// accepts and ignores them so a received file can be forwarded as it is.
var receivedOnly = map[string]bool{
	"subscription-identifier": true,
	"received-at":             true,
	"dup":                     true,
}

// msgParser holds the state of one ParseMsg call.
type msgParser struct {
	m    message.Message
	f    Fields
	seen map[string]bool
}

// ParseMsg parses a .msg file: header lines, a blank line, then the
// payload. Header names are case-insensitive and values are trimmed of
// spaces and tabs. Lines end in LF or CRLF, and a UTF-8 byte order mark
// before the first header is skipped. The returned payload shares
// memory with data. Errors are [*ParseError] values naming the line.
func ParseMsg(data []byte) (message.Message, Fields, error) {
	if len(data) == 0 {
		return message.Message{}, Fields{}, &ParseError{Err: ErrEmpty}
	}
	p := msgParser{seen: make(map[string]bool)}
	pos, line := skipBOM(data), 0
	for {
		line++
		end := bytes.IndexByte(data[pos:], '\n')
		if end < 0 {
			return message.Message{}, Fields{}, lineError(line,
				"missing blank line after the headers: end the headers with an empty line, "+
					"even when the payload is empty")
		}
		text := bytes.TrimSuffix(data[pos:pos+end], []byte("\r"))
		pos += end + 1

		// The first empty line ends the headers; the rest is the payload.
		if len(text) == 0 {
			p.m.Payload = data[pos:]
			return p.m, p.f, nil
		}
		if len(bytes.Trim(text, " \t")) == 0 {
			return message.Message{}, Fields{}, lineError(line,
				"line contains only spaces or tabs: the line that ends the headers must be empty")
		}
		if err := p.header(line, string(text)); err != nil {
			return message.Message{}, Fields{}, err
		}
	}
}

// header parses one header line into p.
func (p *msgParser) header(line int, text string) error {
	name, value, ok := strings.Cut(text, ":")
	if !ok {
		return lineError(line, "header line %q has no colon: write it as Name: value", text)
	}
	if !validHeaderName(name) {
		return lineError(line, "header name %q is invalid: use letters, digits and '-' "+
			"with no space before the colon", name)
	}
	value = strings.Trim(value, " \t")
	key := strings.ToLower(name)
	if receivedOnly[key] {
		return nil
	}
	if key != "user-property" {
		if p.seen[key] {
			return lineError(line, "header %q appears more than once: give it once", name)
		}
		p.seen[key] = true
	}
	if err := checkString(value); err != nil {
		return lineError(line, "header %q value %q is invalid: %v", name, value, err)
	}
	return p.apply(line, name, key, value)
}

// apply stores one header value in the message.
func (p *msgParser) apply(line int, name, key, value string) error {
	invalid := func(fix string) error {
		return lineError(line, "header %q value %q is invalid: %s", name, value, fix)
	}
	switch key {
	case "topic":
		if err := message.ValidateTopic(value, true); err != nil {
			return invalid(err.Error())
		}
		p.m.Topic, p.f.Topic = value, true
	case "qos":
		q, ok := parseQoS(value)
		if !ok {
			return invalid("use 0, 1 or 2")
		}
		p.m.QoS, p.f.QoS = q, true
	case "retain":
		r, ok := parseBool(value)
		if !ok {
			return invalid("use true or false")
		}
		p.m.Retain, p.f.Retain = r, true
	case "message-expiry":
		n, err := strconv.ParseUint(value, 10, 32)
		if err != nil {
			return invalid("use whole seconds from 0 to 4294967295")
		}
		p.m.ExpirySeconds = uint32(n)
	case "content-type":
		p.m.ContentType = value
	case "response-topic":
		if err := checkResponseTopic(value); err != nil {
			return invalid(err.Error())
		}
		p.m.ResponseTopic = value
	case "correlation-data":
		b, err := base64.StdEncoding.DecodeString(value)
		if err != nil {
			return invalid("use standard base64 with padding")
		}
		p.m.CorrelationData = b
	case "payload-format":
		pf, ok := parsePayloadFormat(value)
		if !ok {
			return invalid("use utf8 or bytes")
		}
		p.m.PayloadFormat = pf
	case "user-property":
		k, v, ok := strings.Cut(value, "=")
		if !ok {
			return invalid("write it as key=value")
		}
		if k == "" {
			return lineError(line, "header %q value %q is invalid: %w", name, value, ErrEmptyPropertyKey)
		}
		p.m.UserProperties = append(p.m.UserProperties, message.UserProperty{Key: k, Value: v})
	default:
		return lineError(line, "header %q is unknown: use Topic, QoS, Retain, Message-Expiry, "+
			"Content-Type, Response-Topic, Correlation-Data, Payload-Format or User-Property", name)
	}
	return nil
}

func validHeaderName(name string) bool {
	if name == "" {
		return false
	}
	for _, c := range name {
		ok := c == '-' || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
		if !ok {
			return false
		}
	}
	return true
}

// checkString checks the rules MQTT sets for UTF-8 strings, and rejects
// the control characters and noncharacters that brokers take for a
// malformed packet.
func checkString(s string) error {
	if !utf8.ValidString(s) {
		return errNotUTF8
	}
	if strings.IndexByte(s, 0) >= 0 {
		return errNUL
	}
	return message.CheckCodePoints(s)
}

func parseQoS(s string) (byte, bool) {
	switch s {
	case "0", "1", "2":
		return s[0] - '0', true
	}
	return 0, false
}

func parseBool(s string) (bool, bool) {
	switch strings.ToLower(s) {
	case "true":
		return true, true
	case "false":
		return false, true
	}
	return false, false
}

func parsePayloadFormat(s string) (message.PayloadFormat, bool) {
	switch strings.ToLower(s) {
	case "utf8":
		return message.PayloadFormatUTF8, true
	case "bytes":
		return message.PayloadFormatBytes, true
	}
	return message.PayloadFormatUnset, false
}

// utf8BOM is the byte order mark that some editors on Windows write at
// the start of a UTF-8 text file.
var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

// skipBOM returns the length of the UTF-8 byte order mark that data
// starts with, or 0.
func skipBOM(data []byte) int {
	if bytes.HasPrefix(data, utf8BOM) {
		return len(utf8BOM)
	}
	return 0
}

// checkResponseTopic checks a response topic. An empty one has an error
// of its own, because leaving a response topic out takes no default,
// unlike the topic.
func checkResponseTopic(topic string) error {
	if topic == "" {
		return errors.New("response topic is empty: give one, or leave it out to send the message without one")
	}
	return message.ValidateTopic(topic, true)
}
