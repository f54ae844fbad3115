package eventloop

import (
	"bytes"
	"encoding/binary"
	"errors"
	"slices"
	"testing"

	"github.com/eclipse/paho.golang/packets"
)

// maxVariableByteInteger is the largest value of a four-byte MQTT
// variable byte integer, and so the largest Subscription Identifier.
const maxVariableByteInteger = 268435455

// rawPublish encodes a PUBLISH of the given QoS and property bytes, with
// packet identifier 7 unless qos is 0. binary.AppendUvarint writes the same bytes as
// MQTT's variable byte integer for values up to maxVariableByteInteger,
// so the test does not rely on the codec's own encoder.
func rawPublish(topic string, qos byte, props, payload []byte) []byte {
	var body []byte
	body = binary.BigEndian.AppendUint16(body, uint16(len(topic)))
	body = append(body, topic...)
	if qos > 0 {
		body = binary.BigEndian.AppendUint16(body, 7)
	}
	body = binary.AppendUvarint(body, uint64(len(props)))
	body = append(body, props...)
	body = append(body, payload...)

	data := []byte{packets.PUBLISH<<4 | qos<<1}
	data = binary.AppendUvarint(data, uint64(len(body)))
	return append(data, body...)
}

// identifierProperties encodes one Subscription Identifier property per
// entry of ids.
func identifierProperties(ids []int) []byte {
	var out []byte
	for _, id := range ids {
		out = append(out, packets.PropSubscriptionIdentifier)
		out = binary.AppendUvarint(out, uint64(id))
	}
	return out
}

func TestDecodePublish_SubscriptionIdentifiers(t *testing.T) {
	userWithIDByte := []byte{packets.PropUser, 0, 1, packets.PropSubscriptionIdentifier, 0, 1, 5}
	cases := []struct {
		name  string
		props []byte
		want  []int
	}{
		{"none", nil, nil},
		{"one", identifierProperties([]int{3}), []int{3}},
		{"two", identifierProperties([]int{1, 2}), []int{1, 2}},
		{"order kept", identifierProperties([]int{9, 1, 128}), []int{9, 1, 128}},
		{"largest value", identifierProperties([]int{maxVariableByteInteger, 1}), []int{maxVariableByteInteger, 1}},
		{"between other properties", slices.Concat(
			[]byte{packets.PropPayloadFormat, 1},
			identifierProperties([]int{5}),
			[]byte{packets.PropMessageExpiry, 0, 0, 0, 60},
			userWithIDByte,
			identifierProperties([]int{6}),
			[]byte{packets.PropContentType, 0, 2, 0x0b, 0x0b},
		), []int{5, 6}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, qos := range []byte{0, 1, 2} {
				p, err := mqtt5Codec{}.decode(bytes.NewReader(rawPublish("a/b", qos, c.props, []byte("x"))))
				if err != nil {
					t.Fatalf("qos %d: decode: %v", qos, err)
				}
				pub := p.(*publishPacket)
				if !slices.Equal(pub.SubscriptionIdentifiers, c.want) {
					t.Errorf("qos %d: identifiers %v, want %v", qos, pub.SubscriptionIdentifiers, c.want)
				}
				if string(pub.Message.Payload) != "x" {
					t.Errorf("qos %d: payload %q, want %q", qos, pub.Message.Payload, "x")
				}
			}
		})
	}
}

// Properties that paho.golang v0.23.0 accepts but MQTT 5 makes a
// malformed packet are rejected once the PUBLISH carries an identifier.
func TestDecodePublish_MalformedIdentifiers(t *testing.T) {
	cases := []struct {
		name string
		data []byte
	}{
		{"identifier longer than 4 bytes", rawPublish("a", 1,
			[]byte{packets.PropSubscriptionIdentifier, 0x81, 0x80, 0x80, 0x80, 0x01}, nil)},
		{"identifier truncated by the property length", rawPublish("a", 1,
			[]byte{packets.PropSubscriptionIdentifier, 0x81}, []byte("payload"))},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := mqtt5Codec{}.decode(bytes.NewReader(c.data))
			if err == nil {
				t.Fatalf("decode returned %+v, want a malformed packet error", p)
			}
			var pe *protocolError
			if !errors.As(err, &pe) || pe.code != reasonMalformedPacket {
				t.Errorf("error %v, want reason code 0x%02x", err, reasonMalformedPacket)
			}
		})
	}
}

// FuzzPublish_SubscriptionIdentifiers encodes a PUBLISH whose identifiers
// come before and after the other properties, which paho packs, and
// checks that decode returns every identifier in order, with the message
// unchanged. String properties may contain the byte 0x0b of the
// Subscription Identifier property, which must not be read as one.
func FuzzPublish_SubscriptionIdentifiers(f *testing.F) {
	f.Add("a/b", byte(1), []byte("x"), "text/plain", "k", "v", []byte{1}, []byte{0, 0, 0, 1, 0, 0, 0, 2}, byte(1))
	f.Add("s/t", byte(2), []byte{0x0b}, "\x0b", "\x0b", "\x0b\x0b", []byte{0x0b}, []byte{0x0f, 0xff, 0xff, 0xff, 0, 0, 0, 0x80}, byte(0))
	f.Add("q", byte(0), []byte(nil), "", "", "", []byte(nil), []byte{0, 0, 0, 9}, byte(3))
	f.Fuzz(func(t *testing.T, topic string, qos byte, payload []byte, contentType, key, value string,
		correlation, idBytes []byte, split byte) {
		qos %= 3
		var ids []int
		for ; len(idBytes) >= 4 && len(ids) < 64; idBytes = idBytes[4:] {
			ids = append(ids, int(binary.BigEndian.Uint32(idBytes)%maxVariableByteInteger)+1)
		}
		props := &packets.Properties{ContentType: contentType, CorrelationData: correlation}
		if key != "" {
			props.User = []packets.User{{Key: key, Value: value}}
		}
		pub := &packets.Publish{Topic: topic, Payload: payload, QoS: qos, Properties: props}
		if !validWirePublish(pub) || len(topic) > 65535 || len(contentType) > 65535 || len(correlation) > 65535 ||
			len(key) > 65535 || len(value) > 65535 {
			return
		}
		before := int(split) % (len(ids) + 1)
		wireProps := slices.Concat(identifierProperties(ids[:before]), props.Pack(packets.PUBLISH), identifierProperties(ids[before:]))

		p, err := mqtt5Codec{}.decode(bytes.NewReader(rawPublish(topic, qos, wireProps, payload)))
		if err != nil {
			t.Fatalf("decode a valid PUBLISH with identifiers %v: %v", ids, err)
		}
		got := p.(*publishPacket)
		if !slices.Equal(got.SubscriptionIdentifiers, ids) {
			t.Fatalf("identifiers %v, want %v", got.SubscriptionIdentifiers, ids)
		}
		checkPublishFields(t, pub, got.Message)
	})
}
