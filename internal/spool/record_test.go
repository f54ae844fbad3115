package spool

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"slices"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/mqspool/mqspool/internal/message"
)

func fullMessage() message.Message {
	return message.Message{
		Topic:           "site1/temp",
		Payload:         []byte{0, 1, 2, 0xff},
		QoS:             2,
		Retain:          true,
		ExpirySeconds:   3600,
		ContentType:     "application/json",
		ResponseTopic:   "site1/reply",
		CorrelationData: []byte("corr"),
		PayloadFormat:   message.PayloadFormatUTF8,
		UserProperties:  []message.UserProperty{{Key: "a", Value: "1"}, {Key: "a", Value: "2"}, {Key: "", Value: ""}},
	}
}

func TestRecordRoundTrip(t *testing.T) {
	enqueued := time.Unix(1700000000, 123456789)
	for name, m := range map[string]message.Message{
		"all fields":    fullMessage(),
		"empty payload": {Topic: "t"},
	} {
		t.Run(name, func(t *testing.T) {
			b := encodeRecord(enqueued, &m)
			gotTime, got, err := decodeRecord(b)
			if err != nil {
				t.Fatalf("decodeRecord: %v", err)
			}
			equal(t, "enqueued", gotTime.UnixNano(), enqueued.UnixNano())
			equal(t, "message", got, m)
		})
	}
}

func TestRecordRejectsDamage(t *testing.T) {
	m := fullMessage()
	good := encodeRecord(time.Now(), &m)
	cases := map[string][]byte{
		"empty":         nil,
		"truncated":     good[:len(good)-1],
		"flipped bit":   flipBit(good, 20),
		"wrong version": withByte(good, 0, 9),
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			if _, _, err := decodeRecord(b); !errors.Is(err, errRecord) {
				t.Fatalf("decodeRecord error = %v, want errRecord", err)
			}
		})
	}
}

func flipBit(b []byte, i int) []byte {
	c := append([]byte(nil), b...)
	c[i] ^= 1
	return c
}

func withByte(b []byte, i int, v byte) []byte {
	c := append([]byte(nil), b...)
	c[i] = v
	return c
}

func FuzzDecodeRecord(f *testing.F) {
	m := fullMessage()
	f.Add(encodeRecord(time.Unix(0, 1), &m))
	empty := message.Message{Topic: "t"}
	f.Add(encodeRecord(time.Unix(0, 0), &empty))
	f.Add([]byte{recordVersion})
	f.Fuzz(func(t *testing.T, b []byte) {
		// Random bytes rarely pass the checksum, so also decode them with
		// a valid one appended to reach the field parser.
		sealed := binary.BigEndian.AppendUint32(slices.Clone(b), crc32.Checksum(b, castagnoli))
		for _, input := range [][]byte{b, sealed} {
			enqueued, m, err := decodeRecord(input)
			if err != nil {
				continue
			}
			// A record that decodes must encode back to the same bytes.
			again := encodeRecord(enqueued, &m)
			if string(again) != string(input) {
				t.Fatalf("re-encoded record differs:\n got %x\nwant %x", again, input)
			}
		}
	})
}

func TestDecodeRecordInto_SharesRepeatedTopic(t *testing.T) {
	m := message.Message{Topic: "site/1/temp", Payload: []byte("21.5"), QoS: 1}
	raw := encodeRecord(time.Unix(1, 0), &m)
	last := strings.Clone("site/1/temp")

	_, got, _, err := decodeRecordInto(raw, nil, last)
	if err != nil {
		t.Fatal(err)
	}
	if unsafe.StringData(got.Topic) != unsafe.StringData(last) {
		t.Errorf("topic equal to the last one was copied, want it shared")
	}

	_, got, _, err = decodeRecordInto(raw, nil, "site/2/temp")
	if err != nil {
		t.Fatal(err)
	}
	if got.Topic != m.Topic {
		t.Errorf("topic %q after another topic, want %q", got.Topic, m.Topic)
	}
}

func TestDecodeRecordInto_NoAllocationsWhenReused(t *testing.T) {
	m := message.Message{Topic: "site/1/temp", Payload: bytes.Repeat([]byte("p"), 1024), QoS: 1}
	raw := encodeRecord(time.Unix(1, 0), &m)
	payload := make([]byte, 0, 2048)
	allocs := testing.AllocsPerRun(100, func() {
		_, got, used, err := decodeRecordInto(raw, payload, m.Topic)
		if err != nil || !used || len(got.Payload) != 1024 {
			t.Fatalf("decode: used %t, %d payload bytes, err %v", used, len(got.Payload), err)
		}
	})
	if allocs != 0 {
		t.Errorf("%.0f allocations per decode with a reused payload and topic, want 0", allocs)
	}
}
