package format

import (
	"bufio"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/mqspool/mqspool/internal/message"
)

// WriteMsg writes m in the canonical .msg form that [ParseMsg] reads back
// to the same message. Topic is omitted when empty, QoS and Retain are
// always written. Extra headers go after the message headers and must be
// ones the parser ignores (Subscription-Identifier, Received-At, Dup).
// WriteMsg rejects a value that a header line cannot hold: one with a line
// break, a leading or trailing space or tab, or a user property key with
// '='.
// A user property with an empty key, which MQTT 5 allows in a received
// message, is written although ParseMsg rejects it.
func WriteMsg(w io.Writer, m message.Message, extra ...Header) error {
	return WriteMsgFields(w, m, Fields{Topic: true, QoS: true, Retain: true}, extra...)
}

// WriteMsgFields writes m like [WriteMsg], but writes the Topic, QoS and
// Retain headers only where set marks them as given, so that the reader's
// routes and defaults fill in the rest.
func WriteMsgFields(w io.Writer, m message.Message, set Fields, extra ...Header) error {
	headers, err := msgHeaders(m)
	if err != nil {
		return err
	}
	headers = slices.DeleteFunc(headers, func(h Header) bool {
		return (h.Name == HeaderTopic && !set.Topic) ||
			(h.Name == HeaderQoS && !set.QoS) ||
			(h.Name == HeaderRetain && !set.Retain)
	})
	for _, h := range extra {
		if !receivedOnly[strings.ToLower(h.Name)] {
			return fmt.Errorf("extra header %q is not allowed: use Subscription-Identifier, "+
				"Received-At or Dup", h.Name)
		}
		headers = append(headers, h)
	}

	bw := bufio.NewWriter(w)
	for _, h := range headers {
		if err := checkHeaderValue(h); err != nil {
			return err
		}
		bw.WriteString(h.Name)
		bw.WriteString(": ")
		bw.WriteString(h.Value)
		bw.WriteByte('\n')
	}
	bw.WriteByte('\n')
	bw.Write(m.Payload)
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write .msg: %w", err)
	}
	return nil
}

// msgHeaders returns the headers that describe m, in canonical order.
func msgHeaders(m message.Message) ([]Header, error) {
	var hs []Header
	add := func(name, value string) { hs = append(hs, Header{name, value}) }

	if m.QoS > 2 {
		return nil, fmt.Errorf("qos %d is invalid: use 0, 1 or 2", m.QoS)
	}
	if m.Topic != "" {
		add(HeaderTopic, m.Topic)
	}
	add(HeaderQoS, strconv.Itoa(int(m.QoS)))
	add(HeaderRetain, strconv.FormatBool(m.Retain))
	if m.ExpirySeconds > 0 {
		add(HeaderMessageExpiry, strconv.FormatUint(uint64(m.ExpirySeconds), 10))
	}
	if m.ContentType != "" {
		add(HeaderContentType, m.ContentType)
	}
	if m.ResponseTopic != "" {
		add(HeaderResponseTopic, m.ResponseTopic)
	}
	if len(m.CorrelationData) > 0 {
		add(HeaderCorrelationData, base64.StdEncoding.EncodeToString(m.CorrelationData))
	}
	if m.PayloadFormat != message.PayloadFormatUnset {
		add(HeaderPayloadFormat, m.PayloadFormat.String())
	}
	for _, p := range m.UserProperties {
		if strings.Contains(p.Key, "=") {
			return nil, &ValueError{
				Problem: fmt.Sprintf("user property key %q contains '=', which a .msg header cannot hold", p.Key),
				Fix:     "rename the key",
			}
		}
		add(HeaderUserProperty, p.Key+"="+p.Value)
	}
	return hs, nil
}

// ValueError is a value that a .msg file cannot hold, with the fix for
// the producer of the message.
type ValueError struct {
	Problem string // the problem, naming the value
	Fix     string // the change the producer can make
	Err     error  // the cause, or nil
}

// Error returns the problem followed by the fix.
func (e *ValueError) Error() string { return e.Problem + ": " + e.Fix }

// Unwrap returns the cause.
func (e *ValueError) Unwrap() error { return e.Err }

// checkHeaderValue rejects values that would not read back unchanged.
func checkHeaderValue(h Header) error {
	if !validHeaderName(h.Name) {
		return fmt.Errorf("header name %q is invalid: use letters, digits and '-'", h.Name)
	}
	if strings.ContainsAny(h.Value, "\r\n") {
		return fmt.Errorf("header %q value %q contains a line break, which a .msg header "+
			"cannot hold", h.Name, h.Value)
	}
	if strings.Trim(h.Value, " \t") != h.Value {
		return &ValueError{
			Problem: fmt.Sprintf("header %q value %q starts or ends with a space or tab, which "+
				"the parser trims", h.Name, h.Value),
			Fix: "remove it",
		}
	}
	if err := checkString(h.Value); err != nil {
		var codePoint *message.CodePointError
		if errors.As(err, &codePoint) {
			return &ValueError{
				Problem: fmt.Sprintf("header %q value %q cannot be read back: %s", h.Name, h.Value, codePoint.Problem()),
				Fix:     "remove it",
				Err:     err,
			}
		}
		return fmt.Errorf("header %q value %q cannot be read back: %w", h.Name, h.Value, err)
	}
	return nil
}
