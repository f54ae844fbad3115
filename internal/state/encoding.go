package state

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// encodingVersion is the first byte of every encoded State and Flow. A
// reader rejects versions it does not know instead of guessing.
const encodingVersion = 1

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrCorrupt is returned when an encoded State or Flow fails its checksum
// or is cut short.
var ErrCorrupt = errors.New("session state record is corrupt")

// MarshalBinary encodes s as version byte, fields, then a CRC-32C of all
// bytes before it.
func (s *State) MarshalBinary() ([]byte, error) {
	b := make([]byte, 0, 32+len(s.Outgoing)*21+len(s.IncomingQoS2)*2)
	b = append(b, encodingVersion)
	b = appendBool(b, s.Session)
	b = binary.BigEndian.AppendUint64(b, s.NextOrder)
	b = binary.BigEndian.AppendUint16(b, s.LastPacketID)

	b = binary.BigEndian.AppendUint32(b, uint32(len(s.Outgoing)))
	for _, f := range s.Outgoing {
		b = appendFlow(b, f)
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(s.IncomingQoS2)))
	for _, id := range s.IncomingQoS2 {
		b = binary.BigEndian.AppendUint16(b, id)
	}
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli)), nil
}

// UnmarshalBinary decodes what MarshalBinary wrote, checking the version
// and the checksum.
func (s *State) UnmarshalBinary(b []byte) error {
	body, err := checkRecord(b)
	if err != nil {
		return err
	}

	r := reader{b: body}
	var out State
	out.Session = r.u8() != 0
	out.NextOrder = r.u64()
	out.LastPacketID = r.u16()
	n := r.u32()
	if uint64(n)*flowSize > uint64(len(r.b)) {
		return fmt.Errorf("%w: %d flows do not fit in %d bytes", ErrCorrupt, n, len(r.b))
	}
	for range n {
		out.Outgoing = append(out.Outgoing, r.flow())
	}
	m := r.u32()
	if uint64(m)*2 > uint64(len(r.b)) {
		return fmt.Errorf("%w: %d incoming ids do not fit in %d bytes", ErrCorrupt, m, len(r.b))
	}
	for range m {
		out.IncomingQoS2 = append(out.IncomingQoS2, r.u16())
	}
	if r.short || len(r.b) != 0 {
		return fmt.Errorf("%w: length does not match its contents", ErrCorrupt)
	}
	*s = out
	return nil
}

// FlowRecordSize is the length of a flow record from [Flow.MarshalBinary].
const FlowRecordSize = 1 + flowSize + 4

// MarshalBinary encodes one flow on its own, for journals that keep a
// record per packet identifier.
func (f Flow) MarshalBinary() ([]byte, error) {
	return f.AppendBinary(make([]byte, 0, FlowRecordSize))
}

// AppendBinary appends the record of [Flow.MarshalBinary] to b.
func (f Flow) AppendBinary(b []byte) ([]byte, error) {
	start := len(b)
	b = append(b, encodingVersion)
	b = appendFlow(b, f)
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b[start:], castagnoli)), nil
}

// UnmarshalBinary decodes what [Flow.MarshalBinary] wrote.
func (f *Flow) UnmarshalBinary(b []byte) error {
	body, err := checkRecord(b)
	if err != nil {
		return err
	}
	r := reader{b: body}
	out := r.flow()
	if r.short || len(r.b) != 0 {
		return fmt.Errorf("%w: flow record has %d bytes, expected %d", ErrCorrupt, len(body), flowSize)
	}
	*f = out
	return nil
}

func checkRecord(b []byte) ([]byte, error) {
	if len(b) < 5 {
		return nil, fmt.Errorf("%w: %d bytes is too short", ErrCorrupt, len(b))
	}
	if b[0] != encodingVersion {
		return nil, fmt.Errorf("%w: version byte %d is unknown (this build reads version %d): the record is damaged or from a newer mqspool", ErrCorrupt, b[0], encodingVersion)
	}
	body, sum := b[:len(b)-4], binary.BigEndian.Uint32(b[len(b)-4:])
	if crc32.Checksum(body, castagnoli) != sum {
		return nil, fmt.Errorf("%w: checksum mismatch", ErrCorrupt)
	}
	return body[1:], nil
}

// flowSize is the encoded size of one flow: id, seq, qos, stage, order.
const flowSize = 2 + 8 + 1 + 1 + 8

func appendFlow(b []byte, f Flow) []byte {
	b = binary.BigEndian.AppendUint16(b, f.PacketID)
	b = binary.BigEndian.AppendUint64(b, f.Seq)
	b = append(b, f.QoS, byte(f.Stage))
	return binary.BigEndian.AppendUint64(b, f.Order)
}

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 1)
	}
	return append(b, 0)
}

// reader consumes big-endian fields and records a short read instead of
// panicking, so a damaged record becomes an error.
type reader struct {
	b     []byte
	short bool
}

func (r *reader) take(n int) []byte {
	if len(r.b) < n {
		r.short = true
		r.b = nil
		return make([]byte, n)
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) u8() byte    { return r.take(1)[0] }
func (r *reader) u16() uint16 { return binary.BigEndian.Uint16(r.take(2)) }
func (r *reader) u32() uint32 { return binary.BigEndian.Uint32(r.take(4)) }
func (r *reader) u64() uint64 { return binary.BigEndian.Uint64(r.take(8)) }

func (r *reader) flow() Flow {
	return Flow{PacketID: r.u16(), Seq: r.u64(), QoS: r.u8(), Stage: Stage(r.u8()), Order: r.u64()}
}
