package format

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/mqspool/mqspool/internal/message"
)

func TestParseJSONL_Fields(t *testing.T) {
	in := `{"topic":"a/b","payload":"hi","qos":2,"retain":true,"expiry":30,` +
		`"content_type":"text/plain","response_topic":"r","correlation_data_base64":"AQ==",` +
		`"payload_format":"utf8","user_properties":[["k","1"],["k","2"]]}` + "\r\n" +
		"\n   \n" +
		`{"payload_base64":"AAE="}` + "\n"
	entries, err := ParseJSONL([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 {
		t.Fatalf("got %d entries, want 2", len(entries))
	}
	want := message.Message{
		Topic: "a/b", Payload: []byte("hi"), QoS: 2, Retain: true, ExpirySeconds: 30,
		ContentType: "text/plain", ResponseTopic: "r", CorrelationData: []byte{1},
		PayloadFormat:  message.PayloadFormatUTF8,
		UserProperties: props("k", "1", "k", "2"),
	}
	if !reflect.DeepEqual(entries[0].Message, want) {
		t.Errorf("entry 0 = %+v, want %+v", entries[0].Message, want)
	}
	if entries[0].Fields != (Fields{Topic: true, QoS: true, Retain: true}) {
		t.Errorf("entry 0 fields = %+v", entries[0].Fields)
	}
	if entries[1].Line != 4 {
		t.Errorf("entry 1 line = %d, want 4", entries[1].Line)
	}
	if entries[1].Fields != (Fields{}) || string(entries[1].Message.Payload) != "\x00\x01" {
		t.Errorf("entry 1 = %+v", entries[1])
	}
}

func TestParseJSONL_Errors(t *testing.T) {
	good := `{"topic":"a","payload":"x"}` + "\n"
	tests := []struct {
		name, in, want string
	}{
		{"empty", "", "file is empty"},
		{"only blank lines", "\n \n", "only blank lines"},
		{"broken JSON line", good + `{"topic":"a",` + "\n" + good, "line 2: invalid JSON object"},
		{"unknown field", `{"topic":"a","payload":"x","colour":1}`, `line 1: invalid JSON object: unknown field "colour"`},
		{"field in upper case", `{"TOPIC":"a","payload":"x"}`, `unknown field "TOPIC"`},
		{"field twice", `{"payload":"x","payload":"y"}`, `duplicate object member name "payload"`},
		{"invalid UTF-8", "{\"payload\":\"\xff\"}", "invalid UTF-8"},
		{"lone surrogate", `{"payload":"\ud800"}`, "invalid surrogate pair"},
		{"qos out of range", `{"payload":"x","qos":99999999999999999999}`, "qos is a JSON number (value out of range)"},
		{"qos as text", `{"payload":"x","qos":"1"}`, "qos is a JSON string: write a whole number"},
		{"retain as number", `{"payload":"x","retain":1}`, "retain is a JSON number: write true or false"},
		{"property not text", `{"payload":"x","user_properties":[["k",1]]}`, "user_properties[0][1] is a JSON number"},
		{"two objects", `{"payload":"x"} {"payload":"y"}`, "line 1: text after the JSON object"},
		{"bad base64", good + `{"payload_base64":"%%"}`, "line 2: field payload_base64 is invalid"},
		{"no payload", `{"topic":"a"}`, "line 1: payload is missing"},
		{"both payloads", `{"payload":"","payload_base64":""}`, "both payload and payload_base64"},
		{"qos 7", `{"payload":"","qos":7}`, "line 1: field qos 7 is invalid: use 0, 1 or 2"},
		{"wildcard topic", `{"payload":"","topic":"a/#"}`, "topic contains a wildcard"},
		{"bad property", `{"payload":"","user_properties":[["k"]]}`, "user_properties[0] is invalid"},
		{"property without key", `{"payload":"","user_properties":[["k","v"],["","w"]]}`, "line 1: user_properties[1] is invalid: user property key is empty"},
		{"bad expiry", `{"payload":"","expiry":-1}`, "field expiry -1 is invalid"},
		{"bad format", `{"payload":"","payload_format":"text"}`, "use utf8 or bytes"},
		{"not an object", `[1]`, "line 1: invalid JSON object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseJSONL([]byte(tt.in))
			if err == nil {
				t.Fatalf("ParseJSONL(%q) succeeded, want error containing %q", tt.in, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %q, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestWriteJSONL_RoundTrip(t *testing.T) {
	cases := map[string]message.Message{
		"every field": {
			Topic: "a/b", Payload: []byte{0, 0xff}, QoS: 2, Retain: true, ExpirySeconds: 1<<32 - 1,
			ContentType: " text ", ResponseTopic: "r", CorrelationData: []byte{1},
			PayloadFormat:  message.PayloadFormatUTF8,
			UserProperties: props("a=b", "=", "k", ""),
		},
		"empty payload, no topic": {Payload: []byte{}, QoS: 1},
	}
	for name, m := range cases {
		var buf strings.Builder
		if err := WriteJSONL(&buf, m); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		entries, err := ParseJSONL([]byte(buf.String()))
		if err != nil {
			t.Fatalf("%s: %q does not parse: %v", name, buf.String(), err)
		}
		if len(entries) != 1 {
			t.Fatalf("%s: %d entries, want 1", name, len(entries))
		}
		if !reflect.DeepEqual(entries[0].Message, m) {
			t.Errorf("%s: read back %+v, want %+v", name, entries[0].Message, m)
		}
	}
}

func TestParseJSONL_ByteOrderMark(t *testing.T) {
	data := []byte("\xEF\xBB\xBF{\"topic\":\"a\",\"payload\":\"1\"}\n{\"topic\":\"b\",\"payload\":\"2\"}\n")
	entries, err := ParseJSONL(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 || entries[0].Message.Topic != "a" || entries[1].Message.Topic != "b" {
		t.Fatalf("entries %+v, want topics a and b", entries)
	}
	if entries[1].End != len(data) {
		t.Errorf("second entry ends at %d, want %d, counting the mark", entries[1].End, len(data))
	}

	// Past the start of a file, the same bytes are an error.
	if err := EachJSONL(data, 1, func(Entry) error { return nil }); err == nil {
		t.Error("EachJSONL from line 2 accepted a byte order mark")
	}
}

func TestParseJSONL_CRLFBlankLine(t *testing.T) {
	data := []byte("{\"topic\":\"a\",\"payload\":\"1\"}\r\n\r\n \t\r\n{\"topic\":\"b\",\"payload\":\"2\"}\r\n")
	entries, err := ParseJSONL(data)
	if err != nil {
		t.Fatalf("CRLF file with blank lines rejected: %v", err)
	}
	if len(entries) != 2 {
		t.Fatalf("got %d entries, want 2", len(entries))
	}
	if entries[0].Message.Topic != "a" || entries[1].Message.Topic != "b" {
		t.Errorf("topics %q and %q, want a and b", entries[0].Message.Topic, entries[1].Message.Topic)
	}
	if entries[1].Line != 4 {
		t.Errorf("second entry line = %d, want 4", entries[1].Line)
	}
	if entries[1].End != len(data) {
		t.Errorf("second entry ends at %d, want %d", entries[1].End, len(data))
	}
}

func TestParseJSONL_QoSRange(t *testing.T) {
	for _, qos := range []byte{0, 1, 2} {
		line := fmt.Sprintf(`{"payload":"","qos":%d}`, qos)
		entries, err := ParseJSONL([]byte(line))
		if err != nil {
			t.Errorf("qos %d rejected: %v", qos, err)
			continue
		}
		if entries[0].Message.QoS != qos {
			t.Errorf("qos %d parsed as %d", qos, entries[0].Message.QoS)
		}
	}

	_, err := ParseJSONL([]byte(`{"payload":"","qos":3}`))
	if err == nil {
		t.Fatal("qos 3 accepted, want an error")
	}
	if !strings.Contains(err.Error(), "field qos 3 is invalid") {
		t.Errorf("error = %q, want it to name field qos 3", err)
	}
}
