package eventloop

import (
	"bytes"
	"io"
	"strings"
	"testing"

	"github.com/eclipse/paho.golang/packets"

	"github.com/mqspool/mqspool/internal/message"
)

// TestSetPublishPacketID_MatchesEncode checks that writing an identifier
// into an encoded PUBLISH gives the bytes that encoding with it gives, for
// remaining lengths of one to three bytes.
func TestSetPublishPacketID_MatchesEncode(t *testing.T) {
	var c mqtt5Codec
	for _, size := range []int{0, 100, 200, 20000} {
		for _, qos := range []byte{1, 2} {
			m := message.Message{
				Topic: "a/" + strings.Repeat("t", size%300), Payload: bytes.Repeat([]byte("p"), size), QoS: qos,
				ExpirySeconds: 30, ContentType: "text/plain",
			}
			data, err := c.encode(&publishPacket{PacketID: 1, Message: m})
			if err != nil {
				t.Fatal(err)
			}
			if err := c.setPublishPacketID(data, 0xBEEF); err != nil {
				t.Fatalf("size %d qos %d: %v", size, qos, err)
			}
			want, err := c.encode(&publishPacket{PacketID: 0xBEEF, Message: m})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(data, want) {
				t.Errorf("size %d qos %d: patched packet differs from encoded packet", size, qos)
			}
		}
	}
}

func TestSetPublishPacketID_RejectsOtherPackets(t *testing.T) {
	var c mqtt5Codec
	qos0, err := c.encode(&publishPacket{Message: message.Message{Topic: "t", Payload: []byte("x")}})
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{
		"qos 0 publish": qos0,
		"puback":        {0x40, 0x02, 0x00, 0x01},
		"empty":         {},
		"truncated":     {0x32, 0x05, 0x00, 0x09, 0x61},
	} {
		if err := c.setPublishPacketID(data, 5); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// TestEncodePublish_MatchesPaho compares appendPublish with paho's
// Publish.WriteTo, which encode used before, byte for byte.
func TestEncodePublish_MatchesPaho(t *testing.T) {
	long := strings.Repeat("s", 70000)
	full := message.Message{
		Topic: "a/b", Payload: []byte("payload"), Retain: true, ExpirySeconds: 3600,
		ContentType: "text/plain", ResponseTopic: "reply/to", CorrelationData: []byte{1, 2, 3},
		PayloadFormat:  message.PayloadFormatUTF8,
		UserProperties: []message.UserProperty{{Key: "k", Value: "v"}, {Key: "k", Value: ""}},
	}
	cases := map[string]publishPacket{
		"qos 0 no properties":  {Message: message.Message{Topic: "t", Payload: []byte("x")}},
		"qos 1 empty payload":  {PacketID: 9, Message: message.Message{Topic: "t", QoS: 1}},
		"qos 2 dup retain":     {PacketID: 65535, Dup: true, Message: message.Message{Topic: "t/u", QoS: 2, Retain: true, Payload: []byte("y")}},
		"qos 1 all properties": {PacketID: 3, Message: full},
		"payload format bytes": {Message: message.Message{Topic: "t", PayloadFormat: message.PayloadFormatBytes}},
		"empty correlation":    {Message: message.Message{Topic: "t", CorrelationData: []byte{}}},
		"two-byte length":      {PacketID: 1, Message: message.Message{Topic: "t", QoS: 1, Payload: make([]byte, 200)}},
		"three-byte length":    {PacketID: 1, Message: message.Message{Topic: "t", QoS: 1, Payload: make([]byte, 20000)}},
		"four-byte length":     {PacketID: 1, Message: message.Message{Topic: "t", QoS: 1, Payload: make([]byte, 3<<20)}},
		"strings over 65535": {PacketID: 1, Message: message.Message{
			Topic: long, QoS: 1, ContentType: long, ResponseTopic: long, CorrelationData: []byte(long),
			UserProperties: []message.UserProperty{{Key: long, Value: long}},
		}},
	}
	for name, p := range cases {
		pub := &packets.Publish{
			PacketID: p.PacketID, QoS: p.Message.QoS, Duplicate: p.Dup, Retain: p.Message.Retain,
			Topic: p.Message.Topic, Payload: p.Message.Payload, Properties: messageProperties(&p.Message),
		}
		var want bytes.Buffer
		if _, err := pub.WriteTo(&want); err != nil {
			t.Fatalf("%s: paho: %v", name, err)
		}
		got, err := mqtt5Codec{}.encode(&p)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !bytes.Equal(got, want.Bytes()) {
			t.Errorf("%s: encoded %d bytes, paho %d bytes, contents differ", name, len(got), want.Len())
		}
		// A buffer of exactly the packet's size is used as it is; a size
		// computed wrong in either direction makes appendPublish grow it.
		dst := make([]byte, 0, want.Len())
		if got := appendPublish(dst, &p); len(got) == 0 || &got[0] != &dst[:1][0] {
			t.Errorf("%s: appendPublish reallocated a buffer of the packet's size: the size was computed wrong", name)
		}
	}
}

// TestEncodeAck_MatchesPaho compares the direct encoding of
// acknowledgements with paho's WriteTo, which encode used for them before.
func TestEncodeAck_MatchesPaho(t *testing.T) {
	for _, kind := range []ackKind{kindPuback, kindPubrec, kindPubrel, kindPubcomp} {
		for _, code := range []byte{0x00, 0x10, 0x92} {
			p := &ackPacket{Kind: kind, PacketID: 0xA1B2, ReasonCode: code}
			got, err := mqtt5Codec{}.encode(p)
			if err != nil {
				t.Fatalf("kind %d code %#x: %v", kind, code, err)
			}

			var want bytes.Buffer
			if _, err := pahoAck(p).WriteTo(&want); err != nil {
				t.Fatalf("kind %d code %#x: paho: %v", kind, code, err)
			}
			if !bytes.Equal(got, want.Bytes()) {
				t.Errorf("kind %d code %#x: encoded % x, paho % x", kind, code, got, want.Bytes())
			}
		}
	}
}

// pahoAck returns p as a paho packet without properties.
func pahoAck(p *ackPacket) packets.Packet {
	props := &packets.Properties{}
	switch p.Kind {
	case kindPuback:
		return &packets.Puback{PacketID: p.PacketID, ReasonCode: p.ReasonCode, Properties: props}
	case kindPubrec:
		return &packets.Pubrec{PacketID: p.PacketID, ReasonCode: p.ReasonCode, Properties: props}
	case kindPubrel:
		return &packets.Pubrel{PacketID: p.PacketID, ReasonCode: p.ReasonCode, Properties: props}
	default:
		return &packets.Pubcomp{PacketID: p.PacketID, ReasonCode: p.ReasonCode, Properties: props}
	}
}

// TestDecodeAck_MatchesPaho compares the direct decoding of small
// acknowledgements with paho's ReadPacket, which decode used for them
// before.
func TestDecodeAck_MatchesPaho(t *testing.T) {
	cases := map[string][]byte{
		"puback success":           {0x40, 0x02, 0x12, 0x34},
		"puback reason":            {0x40, 0x03, 0x00, 0x07, 0x10},
		"puback reason properties": {0x40, 0x07, 0x00, 0x07, 0x97, 0x03, 0x1F, 0x00, 0x00},
		"pubrec reason":            {0x50, 0x03, 0xFF, 0xFF, 0x80},
		"pubrel with flags":        {0x62, 0x02, 0x00, 0x01},
		"pubcomp reason":           {0x70, 0x03, 0x00, 0x02, 0x92},
		"puback odd flags":         {0x4F, 0x02, 0x00, 0x09},
		"puback padded length":     {0x40, 0x82, 0x00, 0x00, 0x09},
	}
	for name, data := range cases {
		got, err := mqtt5Codec{}.decode(bytes.NewReader(data))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		cp, err := packets.ReadPacket(bytes.NewReader(data))
		if err != nil {
			t.Fatalf("%s: paho: %v", name, err)
		}
		want, err := fromPaho(cp)
		if err != nil {
			t.Fatalf("%s: paho: %v", name, err)
		}
		if *got.(*ackPacket) != *want.(*ackPacket) {
			t.Errorf("%s: decoded %+v, paho %+v", name, got, want)
		}
	}
}

func TestDecodeAck_TruncatedErrors(t *testing.T) {
	cases := map[string]struct {
		data []byte
		want error
	}{
		"no body":        {[]byte{0x40, 0x02}, io.EOF},
		"half id":        {[]byte{0x40, 0x02, 0x00}, io.ErrUnexpectedEOF},
		"missing reason": {[]byte{0x50, 0x03, 0x00, 0x01}, io.ErrUnexpectedEOF},
		"no length":      {[]byte{0x40}, io.EOF},
		"empty":          {[]byte{}, io.EOF},
	}
	for name, c := range cases {
		_, err := mqtt5Codec{}.decode(bytes.NewReader(c.data))
		if err != c.want {
			t.Errorf("%s: error %v, want %v", name, err, c.want)
		}
	}
}

// TestDecodeAck_PlainReader decodes through a reader without
// io.ByteReader, the path readByte takes for other readers.
func TestDecodeAck_PlainReader(t *testing.T) {
	r := io.MultiReader(bytes.NewReader([]byte{0x40, 0x03, 0x00}), bytes.NewReader([]byte{0x05, 0x87}))
	p, err := mqtt5Codec{}.decode(r)
	if err != nil {
		t.Fatal(err)
	}
	want := ackPacket{Kind: kindPuback, PacketID: 5, ReasonCode: 0x87}
	if *p.(*ackPacket) != want {
		t.Errorf("decoded %+v, want %+v", p, want)
	}
}
