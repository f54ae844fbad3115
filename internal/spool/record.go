package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"time"

	"github.com/mqspool/mqspool/internal/message"
)

// recordVersion is the first byte of every stored message. A reader
// rejects versions it does not know.
const recordVersion = 1

// recordHeaderSize covers version, enqueued time, QoS, flags, expiry and
// payload format.
const recordHeaderSize = 1 + 8 + 1 + 1 + 4 + 1

const flagRetain = 1 << 0

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errRecord is wrapped by every decoding failure of a stored message.
var errRecord = errors.New("stored message is unreadable")

// encodeRecord lays out a message as version, fixed header, length-prefixed
// strings and byte slices, user properties, then a CRC-32C of everything
// before it.
func encodeRecord(enqueued time.Time, m *message.Message) []byte {
	return appendRecord(make([]byte, 0, recordSize(m)), enqueued, m)
}

// recordSize returns the length of m's record.
func recordSize(m *message.Message) int {
	return recordHeaderSize + 5*4 + m.Size() + 4 + 8*len(m.UserProperties) + 4
}

// appendRecord appends m's record, as encodeRecord lays it out, to b.
func appendRecord(b []byte, enqueued time.Time, m *message.Message) []byte {
	start := len(b)
	b = append(b, recordVersion)
	b = binary.BigEndian.AppendUint64(b, uint64(enqueued.UnixNano()))
	var flags byte
	if m.Retain {
		flags |= flagRetain
	}
	b = append(b, m.QoS, flags)
	b = binary.BigEndian.AppendUint32(b, m.ExpirySeconds)
	b = append(b, byte(m.PayloadFormat))

	b = appendBytes(b, []byte(m.Topic))
	b = appendBytes(b, m.Payload)
	b = appendBytes(b, []byte(m.ContentType))
	b = appendBytes(b, []byte(m.ResponseTopic))
	b = appendBytes(b, m.CorrelationData)
	b = binary.BigEndian.AppendUint32(b, uint32(len(m.UserProperties)))
	for _, p := range m.UserProperties {
		b = appendBytes(b, []byte(p.Key))
		b = appendBytes(b, []byte(p.Value))
	}
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b[start:], castagnoli))
}

func appendBytes(b, v []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
	return append(b, v...)
}

// decodeRecord checks and decodes what encodeRecord wrote. The result
// shares no memory with b, so b may be a bbolt value.
func decodeRecord(b []byte) (time.Time, message.Message, error) {
	enqueued, m, _, err := decodeRecordInto(b, nil, "")
	return enqueued, m, err
}

// decodeRecordInto is decodeRecord that copies the payload into payload's
// array when it is large enough, and reports whether it did. A topic equal
// to lastTopic is returned as lastTopic, so a run of messages on one topic
// does not allocate a string for each.
func decodeRecordInto(b, payload []byte, lastTopic string) (enqueued time.Time, m message.Message, used bool, err error) {
	body, err := checkRecord(b)
	if err != nil {
		return time.Time{}, message.Message{}, false, err
	}

	d := decoder{b: body[1:]}
	enqueued = time.Unix(0, int64(d.u64()))
	m.QoS = d.u8()
	flags := d.u8()
	m.Retain = flags&flagRetain != 0
	m.ExpirySeconds = d.u32()
	m.PayloadFormat = message.PayloadFormat(d.u8())

	if topic := d.bytes(); string(topic) == lastTopic {
		m.Topic = lastTopic
	} else {
		m.Topic = string(topic)
	}
	m.Payload, used = d.bytesInto(payload)
	m.ContentType = string(d.bytes())
	m.ResponseTopic = string(d.bytes())
	m.CorrelationData = d.bytesCopy()
	n := d.u32()
	if uint64(n)*8 > uint64(len(d.b)) {
		return time.Time{}, message.Message{}, false, fmt.Errorf("%w: %d user properties do not fit in %d bytes", errRecord, n, len(d.b))
	}
	for range n {
		m.UserProperties = append(m.UserProperties, message.UserProperty{Key: string(d.bytes()), Value: string(d.bytes())})
	}

	if d.short || len(d.b) != 0 {
		return time.Time{}, message.Message{}, false, fmt.Errorf("%w: length does not match its contents", errRecord)
	}
	if m.QoS > 2 || flags&^flagRetain != 0 || m.PayloadFormat > message.PayloadFormatUTF8 {
		return time.Time{}, message.Message{}, false, fmt.Errorf("%w: qos %d, flags %#x or payload format %d out of range", errRecord, m.QoS, flags, m.PayloadFormat)
	}
	return enqueued, m, used, nil
}

// checkRecord verifies version and checksum and returns b without the
// checksum.
func checkRecord(b []byte) ([]byte, error) {
	if len(b) < recordHeaderSize+4 {
		return nil, fmt.Errorf("%w: %d bytes is too short", errRecord, len(b))
	}
	if b[0] != recordVersion {
		return nil, fmt.Errorf("%w: version %d is not supported (this build reads version %d)", errRecord, b[0], recordVersion)
	}
	body, sum := b[:len(b)-4], binary.BigEndian.Uint32(b[len(b)-4:])
	if crc32.Checksum(body, castagnoli) != sum {
		return nil, fmt.Errorf("%w: checksum mismatch", errRecord)
	}
	return body, nil
}

// recordEnqueued returns the enqueued time of a record without decoding
// the rest.
func recordEnqueued(b []byte) (time.Time, bool) {
	if len(b) < recordHeaderSize || b[0] != recordVersion {
		return time.Time{}, false
	}
	return time.Unix(0, int64(binary.BigEndian.Uint64(b[1:9]))), true
}

// decoder consumes big-endian fields and records a short read instead of
// panicking.
type decoder struct {
	b     []byte
	short bool
}

func (d *decoder) take(n uint64) []byte {
	if uint64(len(d.b)) < n {
		d.short = true
		d.b = nil
		return make([]byte, 8)[:min(n, 8)]
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) u8() byte    { return d.take(1)[0] }
func (d *decoder) u32() uint32 { return binary.BigEndian.Uint32(d.take(4)) }
func (d *decoder) u64() uint64 { return binary.BigEndian.Uint64(d.take(8)) }

func (d *decoder) bytes() []byte {
	n := d.u32()
	if d.short {
		return nil
	}
	return d.take(uint64(n))
}

// bytesCopy returns a copy, or nil for an empty field so that a decoded
// message compares equal to one built without the field.
func (d *decoder) bytesCopy() []byte {
	v := d.bytes()
	if len(v) == 0 || d.short {
		return nil
	}
	return append([]byte(nil), v...)
}

// bytesInto is bytesCopy into dst's array when it is large enough. It
// reports whether it used dst.
func (d *decoder) bytesInto(dst []byte) ([]byte, bool) {
	v := d.bytes()
	if len(v) == 0 || d.short {
		return nil, false
	}
	if cap(dst) < len(v) {
		return append([]byte(nil), v...), false
	}
	return append(dst[:0], v...), true
}

func seqKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

func keySeq(k []byte) uint64 { return binary.BigEndian.Uint64(k) }
