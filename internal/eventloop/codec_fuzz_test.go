package eventloop

import (
	"bytes"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/eclipse/paho.golang/packets"

	"github.com/mqspool/mqspool/internal/format"
	"github.com/mqspool/mqspool/internal/message"
)

// FuzzPublish_MsgRoundTrip decodes a PUBLISH from the wire, writes the
// message as a .msg file and parses it back: topic, QoS, retain, every
// property and the payload must match what the PUBLISH carried, unless a
// value cannot be written on a header line.
func FuzzPublish_MsgRoundTrip(f *testing.F) {
	f.Add("a/b", []byte("x"), byte(1), true, uint32(10), "text/plain", "r/t", []byte{1}, byte(1), "k", "v")
	f.Add("t", []byte{}, byte(0), false, uint32(0), "", "", []byte(nil), byte(9), "", "")
	f.Fuzz(func(t *testing.T, topic string, payload []byte, qos byte, retain bool, expiry uint32,
		contentType, responseTopic string, correlation []byte, payloadFormat byte, key, value string) {
		qos %= 3
		props := &packets.Properties{ContentType: contentType, ResponseTopic: responseTopic, CorrelationData: correlation}
		if expiry > 0 {
			props.MessageExpiry = &expiry
		}
		if payloadFormat < 2 {
			props.PayloadFormat = &payloadFormat
		}
		if key != "" {
			props.User = []packets.User{{Key: key, Value: value}}
		}
		pub := &packets.Publish{Topic: topic, Payload: payload, QoS: qos, Retain: retain, Properties: props}
		if qos > 0 {
			pub.PacketID = 1
		}
		if !validWirePublish(pub) {
			return
		}
		var wire bytes.Buffer
		if _, err := pub.ToControlPacket().WriteTo(&wire); err != nil {
			return
		}

		p, err := mqtt5Codec{}.decode(&wire)
		if err != nil {
			t.Fatalf("decode a valid PUBLISH: %v", err)
		}
		m := p.(*publishPacket).Message
		var file bytes.Buffer
		if err := format.WriteMsg(&file, m); err != nil {
			return // a value a header line cannot hold; the inbox moves it to failed/
		}
		got, _, err := format.ParseMsg(file.Bytes())
		if err != nil {
			t.Fatalf("written file does not parse: %v\n%q", err, file.Bytes())
		}
		checkPublishFields(t, pub, got)
	})
}

// validWirePublish reports whether a broker could send pub: UTF-8 strings
// without NUL, a topic without wildcards, a payload that matches
// Payload-Format 1.
func validWirePublish(p *packets.Publish) bool {
	if message.ValidateTopic(p.Topic, true) != nil {
		return false
	}
	pr := p.Properties
	for _, s := range []string{pr.ContentType, pr.ResponseTopic} {
		if !utf8.ValidString(s) || strings.ContainsRune(s, 0) {
			return false
		}
	}
	for _, u := range pr.User {
		if !utf8.ValidString(u.Key) || !utf8.ValidString(u.Value) || strings.ContainsRune(u.Key+u.Value, 0) {
			return false
		}
	}
	if pr.ResponseTopic != "" && message.ValidateTopic(pr.ResponseTopic, true) != nil {
		return false
	}
	return pr.PayloadFormat == nil || *pr.PayloadFormat == 0 || utf8.Valid(p.Payload)
}

func checkPublishFields(t *testing.T, p *packets.Publish, m message.Message) {
	t.Helper()
	pr := p.Properties
	if m.Topic != p.Topic || m.QoS != p.QoS || m.Retain != p.Retain || !bytes.Equal(m.Payload, p.Payload) {
		t.Fatalf("message %+v does not match PUBLISH %+v", m, p)
	}
	if m.ContentType != pr.ContentType || m.ResponseTopic != pr.ResponseTopic || !bytes.Equal(m.CorrelationData, pr.CorrelationData) {
		t.Fatalf("properties %+v do not match %+v", m, pr)
	}
	wantExpiry := uint32(0)
	if pr.MessageExpiry != nil {
		wantExpiry = *pr.MessageExpiry
	}
	if m.ExpirySeconds != wantExpiry {
		t.Fatalf("expiry %d, want %d", m.ExpirySeconds, wantExpiry)
	}
	wantFormat := message.PayloadFormatUnset
	if pr.PayloadFormat != nil {
		wantFormat = message.PayloadFormatBytes
		if *pr.PayloadFormat == 1 {
			wantFormat = message.PayloadFormatUTF8
		}
	}
	if m.PayloadFormat != wantFormat {
		t.Fatalf("payload format %v, want %v", m.PayloadFormat, wantFormat)
	}
	if len(m.UserProperties) != len(pr.User) {
		t.Fatalf("user properties %v, want %v", m.UserProperties, pr.User)
	}
	for i, u := range pr.User {
		if m.UserProperties[i].Key != u.Key || m.UserProperties[i].Value != u.Value {
			t.Fatalf("user property %d = %v, want %v", i, m.UserProperties[i], u)
		}
	}
}
