package eventloop

import (
	"bytes"
	"strings"
	"testing"

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
