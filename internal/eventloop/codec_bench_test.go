package eventloop

import (
	"bytes"
	"testing"

	"github.com/mqspool/mqspool/internal/message"
)

// benchPublish returns a QoS 1 PUBLISH like the drain benchmark's: a short
// topic, a payload of size bytes and no properties.
func benchPublish(size int) *publishPacket {
	return &publishPacket{PacketID: 7, Message: message.Message{
		Topic: "bench/drain", Payload: bytes.Repeat([]byte("x"), size), QoS: 1,
	}}
}

func BenchmarkEncodePublish(b *testing.B) {
	for _, bm := range []struct {
		name string
		size int
	}{{"100B", 100}, {"1KiB", 1024}} {
		b.Run(bm.name, func(b *testing.B) {
			var c mqtt5Codec
			p := benchPublish(bm.size)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.encode(p); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkDecodeAck(b *testing.B) {
	var c mqtt5Codec
	for _, bm := range []struct {
		name string
		data []byte
	}{
		{"puback", []byte{0x40, 0x02, 0x00, 0x07}},
		{"pubrec", []byte{0x50, 0x03, 0x00, 0x07, 0x10}},
		{"pubcomp", []byte{0x70, 0x02, 0x00, 0x07}},
	} {
		b.Run(bm.name, func(b *testing.B) {
			r := bytes.NewReader(bm.data)
			b.ReportAllocs()
			for b.Loop() {
				r.Reset(bm.data)
				if _, err := c.decode(r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
