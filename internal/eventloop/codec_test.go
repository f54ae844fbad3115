package eventloop

import (
	"bytes"
	"testing"

	"github.com/mqspool/mqspool/internal/message"
)

func TestCodec_PublishRoundTrip(t *testing.T) {
	var c mqtt5Codec
	in := &publishPacket{PacketID: 42, Dup: true, Message: message.Message{
		Topic: "a/b", Payload: []byte("hi"), QoS: 2, Retain: true, ExpirySeconds: 9,
		ContentType: "text/plain", PayloadFormat: message.PayloadFormatUTF8,
		UserProperties: []message.UserProperty{{Key: "k", Value: "v"}, {Key: "k", Value: "w"}},
	}}
	data, err := c.encode(in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.decode(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	got := out.(*publishPacket)
	if got.PacketID != 42 || !got.Dup || got.Message.Topic != "a/b" || got.Message.QoS != 2 || !got.Message.Retain {
		t.Errorf("header fields lost: %+v", got)
	}
	if got.Message.ExpirySeconds != 9 || got.Message.PayloadFormat != message.PayloadFormatUTF8 || len(got.Message.UserProperties) != 2 {
		t.Errorf("properties lost: %+v", got.Message)
	}
}

func FuzzCodec_Decode(f *testing.F) {
	var c mqtt5Codec
	for _, p := range []packet{
		&publishPacket{PacketID: 1, Message: message.Message{Topic: "t", QoS: 1, Payload: []byte("x"), ExpirySeconds: 5}},
		&ackPacket{Kind: kindPuback, PacketID: 3, ReasonCode: 0x97},
		&ackPacket{Kind: kindPubrel, PacketID: 4},
		&disconnectPacket{ReasonCode: 0x8E},
		&subscribePacket{PacketID: 5, Subscriptions: []Subscription{{Filter: "a/#", QoS: 1}}},
	} {
		data, err := c.encode(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte{0x20, 0x03, 0x01, 0x00, 0x00})       // CONNACK
	f.Add([]byte{0x90, 0x04, 0x00, 0x05, 0x00, 0x80}) // SUBACK
	f.Add([]byte{0x30, 0xff, 0xff, 0xff, 0xff, 0x7f}) // bad length
	f.Add(rawPublish("t", 1, identifierProperties([]int{1, 2}), []byte("x")))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		for range 4 {
			p, err := c.decode(r)
			if err != nil {
				return
			}
			if p == nil {
				t.Fatal("decode returned no packet and no error")
			}
		}
	})
}
