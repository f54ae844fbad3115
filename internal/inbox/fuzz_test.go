package inbox

import (
	"bytes"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/mqspool/mqspool/internal/format"
	"github.com/mqspool/mqspool/internal/message"
)

// FuzzEncode_RoundTrip writes a received PUBLISH the way the inbox does
// and reads it back with the spool directory's parser: the topic, QoS,
// retain, every property and the payload come back unchanged, or the
// message is one a header line cannot hold and goes to failed/. The one
// exception is a user property with an empty key: the inbox file keeps
// it, and the parser rejects it.
func FuzzEncode_RoundTrip(f *testing.F) {
	f.Add("a/b", []byte("payload"), byte(1), false, uint32(0), "text/plain", "", []byte(nil), byte(0), "k", "v", true)
	f.Add("x", []byte{0, 0xff, '\n', '\n'}, byte(2), true, uint32(60), "", "reply/to", []byte{1, 2}, byte(2), "", "", false)
	f.Add("a", []byte(""), byte(0), false, uint32(0), " x", "", []byte(nil), byte(1), "k=", "v\n", false)
	f.Fuzz(func(t *testing.T, topic string, payload []byte, qos byte, retain bool, expiry uint32,
		contentType, responseTopic string, correlation []byte, payloadFormat byte, key, value string, dup bool) {
		m := message.Message{
			Topic: topic, Payload: payload, QoS: qos % 3, Retain: retain, ExpirySeconds: expiry,
			ContentType: contentType, ResponseTopic: responseTopic, CorrelationData: correlation,
			PayloadFormat: message.PayloadFormat(payloadFormat % 3),
		}
		if key != "" || value != "" {
			m.UserProperties = []message.UserProperty{{Key: key, Value: value}}
		}
		if !validPublish(m) {
			return
		}

		data, err := encode(Delivery{Message: m, Dup: dup, SubscriptionIdentifier: 5, ReceivedAt: time.Unix(0, 0)})
		if err != nil {
			if representable(m) {
				t.Fatalf("encode rejected a representable message %+v: %v", m, err)
			}
			return
		}
		got, _, err := format.ParseMsg(data)
		if errors.Is(err, format.ErrEmptyPropertyKey) && hasEmptyKey(m) {
			return
		}
		if err != nil {
			t.Fatalf("written file does not parse: %v\n%q", err, data)
		}
		if !reflect.DeepEqual(normalize(got), normalize(m)) {
			t.Fatalf("round trip changed the message:\n got %+v\nwant %+v\nfile %q", got, m, data)
		}
		if !bytes.HasSuffix(data, payload) {
			t.Fatalf("payload is not the file's tail: %q", data)
		}
	})
}

// validPublish reports whether m could arrive in a valid MQTT 5 PUBLISH.
func validPublish(m message.Message) bool {
	if message.ValidateTopic(m.Topic, true) != nil {
		return false
	}
	if m.PayloadFormat == message.PayloadFormatUTF8 && !utf8.Valid(m.Payload) {
		return false
	}
	for _, s := range []string{m.ContentType, m.ResponseTopic} {
		if !utf8.ValidString(s) || strings.ContainsRune(s, 0) {
			return false
		}
	}
	if m.ResponseTopic != "" && message.ValidateTopic(m.ResponseTopic, true) != nil {
		return false
	}
	for _, u := range m.UserProperties {
		if !utf8.ValidString(u.Key) || !utf8.ValidString(u.Value) || strings.ContainsRune(u.Key+u.Value, 0) {
			return false
		}
	}
	return true
}

// representable reports whether every value fits on a header line and
// is a string the .msg parser accepts, without control characters.
func representable(m message.Message) bool {
	ok := func(s string) bool {
		return !strings.ContainsAny(s, "\r\n") && strings.Trim(s, " \t") == s && message.ValidateString(s) == nil
	}
	if !ok(m.Topic) || !ok(m.ContentType) || !ok(m.ResponseTopic) {
		return false
	}
	for _, u := range m.UserProperties {
		if strings.Contains(u.Key, "=") || !ok(u.Key+"="+u.Value) {
			return false
		}
	}
	return true
}

func hasEmptyKey(m message.Message) bool {
	return slices.ContainsFunc(m.UserProperties, func(u message.UserProperty) bool { return u.Key == "" })
}

// normalize maps empty and nil slices to nil for comparison.
func normalize(m message.Message) message.Message {
	if len(m.Payload) == 0 {
		m.Payload = nil
	}
	if len(m.CorrelationData) == 0 {
		m.CorrelationData = nil
	}
	if len(m.UserProperties) == 0 {
		m.UserProperties = nil
	}
	return m
}
