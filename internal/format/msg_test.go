package format

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/mqspool/mqspool/internal/message"
)

func TestParseMsg_AllHeaders(t *testing.T) {
	in := "topic: a/b\r\nQoS: 2\nRETAIN: true\nMessage-Expiry: 60\n" +
		"Content-Type:\t text/plain \nResponse-Topic: r/t\nCorrelation-Data: AQI=\n" +
		"Payload-Format: utf8\nUser-Property: k=v=w\nUser-Property: k=2\n" +
		"Received-At: 2026-01-01T00:00:00Z\nDup: true\nSubscription-Identifier: 4\n" +
		"\r\n\nhello\r\n"
	m, f, err := ParseMsg([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	want := message.Message{
		Topic: "a/b", QoS: 2, Retain: true, ExpirySeconds: 60, ContentType: "text/plain",
		ResponseTopic: "r/t", CorrelationData: []byte{1, 2},
		PayloadFormat: message.PayloadFormatUTF8, Payload: []byte("\nhello\r\n"),
		UserProperties: props("k", "v=w", "k", "2"),
	}
	if !reflect.DeepEqual(m, want) {
		t.Errorf("message = %+v, want %+v", m, want)
	}
	if f != (Fields{Topic: true, QoS: true, Retain: true}) {
		t.Errorf("fields = %+v, want all set", f)
	}
}

func TestParseMsg_NoHeaders(t *testing.T) {
	m, f, err := ParseMsg([]byte("\npayload"))
	if err != nil {
		t.Fatal(err)
	}
	if string(m.Payload) != "payload" {
		t.Errorf("payload = %q", m.Payload)
	}
	if f != (Fields{}) {
		t.Errorf("fields = %+v, want none set", f)
	}
}

func TestParseMsg_Errors(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"empty", "", "file is empty"},
		{"unknown header", "Topic: a\nColour: red\n\n", `line 2: header "Colour" is unknown`},
		{"wildcard topic", "Topic: a/+/b\n\n", `line 1: header "Topic" value "a/+/b" is invalid: topic contains a wildcard`},
		{"qos 7", "Topic: a\nQos: 7\n\n", `line 2: header "Qos" value "7" is invalid: use 0, 1 or 2`},
		{"missing blank line", "Topic: a\nQoS: 1\n", "line 3: missing blank line"},
		{"no newline at all", "Topic: a", "line 1: missing blank line"},
		{"bad base64", "Correlation-Data: !!\n\n", `line 1: header "Correlation-Data" value "!!" is invalid: use standard base64`},
		{"no colon", "Topic a\n\n", `line 1: header line "Topic a" has no colon`},
		{"space in name", "Topic : a\n\n", `line 1: header name "Topic " is invalid`},
		{"repeated", "Topic: a\ntopic: b\n\n", `line 2: header "topic" appears more than once`},
		{"bad retain", "Retain: yes\n\n", "use true or false"},
		{"bad expiry", "Message-Expiry: -1\n\n", "use whole seconds"},
		{"bad format", "Payload-Format: text\n\n", "use utf8 or bytes"},
		{"property without equals", "User-Property: k\n\n", "write it as key=value"},
		{"property without key", "User-Property: =v\n\n", `line 1: header "User-Property" value "=v" is invalid: user property key is empty`},
		{"not utf8", "Content-Type: \xff\n\n", "not valid UTF-8"},
		{"empty topic", "Topic:\n\n", "topic is empty"},
		{"blank line with spaces", "Topic: a\n \t\npayload", "line 2: line contains only spaces or tabs"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := ParseMsg([]byte(tt.in))
			if err == nil {
				t.Fatalf("ParseMsg(%q) succeeded, want error containing %q", tt.in, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %q, want it to contain %q", err, tt.want)
			}
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Errorf("error %T is not a *ParseError", err)
			}
		})
	}
}

func TestWriteMsg_RoundTrip(t *testing.T) {
	tests := []message.Message{
		{Topic: "a/b", Payload: []byte{}},
		{Topic: "x", QoS: 1, Retain: true, Payload: []byte("\n\r\n\x00bin"), ExpirySeconds: 9,
			ContentType: "application/json", ResponseTopic: "re/sp", CorrelationData: []byte("id"),
			PayloadFormat:  message.PayloadFormatBytes,
			UserProperties: props("a", "1", "a", " 2")},
		{QoS: 2, Payload: []byte("no topic")},
	}
	for _, m := range tests {
		var buf bytes.Buffer
		if err := WriteMsg(&buf, m, Header{"Received-At", "2026-01-01T00:00:00Z"}); err != nil {
			t.Fatal(err)
		}
		got, f, err := ParseMsg(buf.Bytes())
		if err != nil {
			t.Fatalf("ParseMsg(%q): %v", buf.String(), err)
		}
		if !reflect.DeepEqual(got, m) {
			t.Errorf("round trip of %q = %+v, want %+v", buf.String(), got, m)
		}
		if f.Topic != (m.Topic != "") || !f.QoS || !f.Retain {
			t.Errorf("fields = %+v", f)
		}
	}
}

// A received message may carry a user property with an empty key, which
// MQTT 5 allows. WriteMsg keeps it for the inbox, although ParseMsg
// rejects such a file in new/.
func TestWriteMsg_EmptyPropertyKey(t *testing.T) {
	var buf bytes.Buffer
	m := message.Message{Topic: "a", UserProperties: props("", "v")}
	if err := WriteMsg(&buf, m); err != nil {
		t.Fatalf("WriteMsg: %v", err)
	}
	if !strings.Contains(buf.String(), "\nUser-Property: =v\n") {
		t.Errorf("output %q lacks the header User-Property: =v", buf.String())
	}
	if _, _, err := ParseMsg(buf.Bytes()); !errors.Is(err, ErrEmptyPropertyKey) {
		t.Errorf("ParseMsg of the output: %v, want %v", err, ErrEmptyPropertyKey)
	}
}

func TestWriteMsg_RejectsUnwritable(t *testing.T) {
	tests := []struct {
		name  string
		m     message.Message
		extra []Header
	}{
		{"line break in topic", message.Message{Topic: "a\nb"}, nil},
		{"padded content type", message.Message{Topic: "a", ContentType: " x"}, nil},
		{"equals in key", message.Message{Topic: "a",
			UserProperties: props("k=", "v")}, nil},
		{"unknown extra", message.Message{Topic: "a"}, []Header{{"X-Foo", "1"}}},
		{"qos 3", message.Message{Topic: "a", QoS: 3}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := WriteMsg(&bytes.Buffer{}, tt.m, tt.extra...); err == nil {
				t.Error("WriteMsg succeeded, want error")
			}
		})
	}
}

func TestWriteMsgFields_OmitsUnsetHeaders(t *testing.T) {
	m := message.Message{Topic: "a/b", QoS: 2, Retain: true, Payload: []byte("x")}
	var buf bytes.Buffer
	if err := WriteMsgFields(&buf, m, Fields{Topic: true}); err != nil {
		t.Fatal(err)
	}
	got, fields, err := ParseMsg(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if fields.QoS || fields.Retain {
		t.Errorf("fields = %+v, want QoS and Retain unset", fields)
	}
	if !fields.Topic || got.Topic != "a/b" {
		t.Errorf("topic = %q (set %t), want a/b", got.Topic, fields.Topic)
	}
	if string(got.Payload) != "x" {
		t.Errorf("payload = %q, want x", got.Payload)
	}
}

// Editors on Windows may start a UTF-8 file with a byte order mark; it is
// not part of the first header's name.
func TestParseMsg_ByteOrderMark(t *testing.T) {
	m, f, err := ParseMsg([]byte("\xEF\xBB\xBFTopic: a/b\r\n\r\n\xEF\xBB\xBFpayload"))
	if err != nil {
		t.Fatal(err)
	}
	if m.Topic != "a/b" || !f.Topic {
		t.Errorf("topic %q (set %v), want a/b", m.Topic, f.Topic)
	}
	if got := string(m.Payload); got != "\xEF\xBB\xBFpayload" {
		t.Errorf("payload %q, want the payload's own bytes untouched", got)
	}
}

// Leaving out a response topic sends the message without one, so the
// error for an empty one must not offer the route's topic or
// publish.default_topic as the topic field's error does.
func TestResponseTopic_EmptyOffersNoDefault(t *testing.T) {
	_, _, msgErr := ParseMsg([]byte("Topic: a\nResponse-Topic:\n\nx"))
	_, jsonlErr := ParseJSONL([]byte(`{"topic":"a","payload":"x","response_topic":""}` + "\n"))
	for name, err := range map[string]error{".msg": msgErr, ".jsonl": jsonlErr} {
		if err == nil {
			t.Errorf("%s: an empty response topic was accepted", name)
			continue
		}
		if strings.Contains(err.Error(), "default_topic") {
			t.Errorf("%s: error %q offers publish.default_topic for a response topic", name, err)
		}
		if !strings.Contains(err.Error(), "without one") {
			t.Errorf("%s: error %q does not say that leaving it out sends none", name, err)
		}
	}
}
