package eventloop

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/eclipse/paho.golang/packets"
)

// publishSubscriptionIdentifiers returns every Subscription Identifier of
// a PUBLISH in the order the packet lists them. body is the packet after
// its fixed header, and qos is the QoS of that header. A broker may send
// one copy of a message that matches several subscriptions of the client,
// and then lists one identifier per matching subscription (MQTT 5.0,
// section 3.3.4). paho.golang v0.23.0 keeps only the last of them, so this
// scan reads the property bytes itself. An error means the properties are
// malformed: truncated, a variable byte integer longer than 4 bytes, or a
// property that a PUBLISH cannot carry.
func publishSubscriptionIdentifiers(body []byte, qos byte) ([]int, error) {
	props, err := publishProperties(body, qos)
	if err != nil {
		return nil, err
	}
	var ids []int
	for len(props) > 0 {
		id, size, err := propertySize(props)
		if err != nil {
			return nil, err
		}
		if id == packets.PropSubscriptionIdentifier {
			value, _, _ := decodeVariableByteInteger(props[1:])
			ids = append(ids, value)
		}
		props = props[size:]
	}
	return ids, nil
}

// publishProperties returns the property bytes of a PUBLISH body, without
// their length prefix.
func publishProperties(body []byte, qos byte) ([]byte, error) {
	if len(body) < 2 {
		return nil, errors.New("publish is too short for its topic length")
	}
	offset := 2 + int(binary.BigEndian.Uint16(body))
	if qos > 0 {
		offset += 2
	}
	if offset > len(body) {
		return nil, errors.New("publish ends inside its topic or packet identifier")
	}
	length, size, err := decodeVariableByteInteger(body[offset:])
	if err != nil {
		return nil, fmt.Errorf("publish property length: %w", err)
	}
	offset += size
	if length > len(body)-offset {
		return nil, fmt.Errorf("publish property length %d exceeds the %d bytes left in the packet", length, len(body)-offset)
	}
	return body[offset : offset+length], nil
}

// propertySize returns the identifier of the first property in props and
// its size in bytes, identifier included. It accepts only the properties
// that MQTT 5.0 allows in a PUBLISH.
func propertySize(props []byte) (id byte, size int, err error) {
	id = props[0]
	switch id {
	case packets.PropPayloadFormat:
		size = 1 + 1
	case packets.PropMessageExpiry:
		size = 1 + 4
	case packets.PropTopicAlias:
		size = 1 + 2
	case packets.PropContentType, packets.PropResponseTopic, packets.PropCorrelationData:
		size, err = lengthPrefixedEnd(props, 1)
	case packets.PropUser:
		size, err = lengthPrefixedEnd(props, 1)
		if err == nil {
			size, err = lengthPrefixedEnd(props, size)
		}
	case packets.PropSubscriptionIdentifier:
		_, n, vbiErr := decodeVariableByteInteger(props[1:])
		size, err = 1+n, vbiErr
	default:
		return id, 0, fmt.Errorf("property 0x%02x is not allowed in a publish", id)
	}
	if err == nil && size > len(props) {
		err = fmt.Errorf("publish property 0x%02x is truncated", id)
	}
	return id, size, err
}

// lengthPrefixedEnd returns the offset in props just past the string or
// binary data whose two-byte length starts at offset.
func lengthPrefixedEnd(props []byte, offset int) (int, error) {
	if offset+2 > len(props) {
		return 0, fmt.Errorf("publish property 0x%02x is truncated", props[0])
	}
	return offset + 2 + int(binary.BigEndian.Uint16(props[offset:])), nil
}

// decodeVariableByteInteger decodes the MQTT variable byte integer at the
// start of b and returns its value and its size in bytes.
func decodeVariableByteInteger(b []byte) (value, size int, err error) {
	multiplier := 1
	for size < len(b) {
		if size == 4 {
			return 0, 0, errors.New("variable byte integer is longer than 4 bytes")
		}
		digit := b[size]
		size++
		value += int(digit&0x7f) * multiplier
		multiplier *= 128
		if digit&0x80 == 0 {
			return value, size, nil
		}
	}
	return 0, 0, errors.New("variable byte integer is truncated")
}
