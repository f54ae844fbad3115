package eventloop

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/eclipse/paho.golang/packets"

	"github.com/mqspool/mqspool/internal/message"
)

// mqtt5Codec encodes and decodes MQTT 5 packets with the paho packets
// package, except PUBLISH, which it encodes itself because every message
// passes through that path.
type mqtt5Codec struct{}

func (mqtt5Codec) encode(p packet) ([]byte, error) {
	var content packets.Packet
	switch p := p.(type) {
	case *connectPacket:
		content = toPahoConnect(p)
	case *publishPacket:
		return appendPublish(nil, p), nil
	case *ackPacket:
		return encodeAck(p), nil
	case *subscribePacket:
		content = toPahoSubscribe(p)
	case *unsubscribePacket:
		content = &packets.Unsubscribe{PacketID: p.PacketID, Topics: p.Filters, Properties: &packets.Properties{}}
	case *disconnectPacket:
		content = &packets.Disconnect{ReasonCode: p.ReasonCode, Properties: &packets.Properties{}}
	case *pingreqPacket:
		content = &packets.Pingreq{}
	default:
		return nil, fmt.Errorf("encode %T: packet type not supported", p)
	}
	var b bytes.Buffer
	if _, err := content.WriteTo(&b); err != nil {
		return nil, fmt.Errorf("encode %s: %w", p.packetName(), err)
	}
	return b.Bytes(), nil
}

func (mqtt5Codec) setPublishPacketID(data []byte, id uint16) error {
	if len(data) == 0 || data[0]>>4 != packets.PUBLISH || (data[0]>>1)&0x03 == 0 {
		return errors.New("set packet identifier: not a qos 1 or qos 2 publish packet")
	}
	// The variable header starts after the type byte and the remaining
	// length, a variable byte integer of 1 to 4 bytes. It begins with the
	// topic, a two-byte length and the bytes, and the identifier follows.
	offset := 1
	for offset < len(data) && offset <= 4 && data[offset]&0x80 != 0 {
		offset++
	}
	offset++
	if offset+2 > len(data) {
		return errors.New("set packet identifier: publish packet is truncated")
	}
	offset += 2 + int(binary.BigEndian.Uint16(data[offset:]))
	if offset+2 > len(data) {
		return errors.New("set packet identifier: publish packet is truncated")
	}
	binary.BigEndian.PutUint16(data[offset:], id)
	return nil
}

// decode reads one packet. It reads the fixed header itself, so that a
// remaining length above maxIncomingPacketSize is rejected before any
// memory is allocated for it. PUBACK, PUBREC, PUBREL and PUBCOMP without
// properties, the packets that arrive for every message, are decoded here
// directly. The paho decoder reads the rest. It is not hardened against
// every malformed input, so a panic inside it becomes an error. paho keeps
// only one Subscription Identifier of a PUBLISH, so decode reads them all
// from the packet's bytes (see publishSubscriptionIdentifiers).
func (c mqtt5Codec) decode(r io.Reader) (packet, error) {
	return c.decodeInto(r, nil)
}

// decodeInto is decode, with an acknowledgement written into ack unless
// ack is nil.
func (mqtt5Codec) decodeInto(r io.Reader, ack *ackPacket) (p packet, err error) {
	typeAndFlags, err := readByte(r)
	if err != nil {
		return nil, err
	}
	length, lengthBytes, lengthSize, err := readRemainingLength(r)
	if err != nil {
		return nil, err
	}
	headerLength := 1 + lengthSize
	if length+headerLength > maxIncomingPacketSize {
		return nil, &protocolError{code: reasonPacketTooLarge, err: fmt.Errorf(
			"packet of %d bytes exceeds the maximum packet size of %d bytes sent in connect", length+headerLength, maxIncomingPacketSize)}
	}
	if kind := ackKindOf(typeAndFlags >> 4); kind != 0 && (length == 2 || length == 3) {
		return readAck(r, kind, length, ack)
	}

	raw := make([]byte, headerLength+length)
	raw[0] = typeAndFlags
	copy(raw[1:], lengthBytes[:lengthSize])
	if _, err := io.ReadFull(r, raw[headerLength:]); err != nil {
		return nil, err
	}
	defer func() {
		if v := recover(); v != nil {
			p, err = nil, &protocolError{code: reasonMalformedPacket, err: fmt.Errorf("malformed packet: decoder panicked: %v", v)}
		}
	}()
	cp, err := packets.ReadPacket(bytes.NewReader(raw))
	if err != nil {
		return nil, &protocolError{code: reasonMalformedPacket, err: fmt.Errorf("malformed packet: %w", err)}
	}
	p, err = fromPaho(cp)
	if pub, ok := p.(*publishPacket); ok && len(pub.SubscriptionIdentifiers) > 0 {
		// paho kept one identifier; the scan finds them all.
		if pub.SubscriptionIdentifiers, err = publishSubscriptionIdentifiers(raw[headerLength:], pub.Message.QoS); err != nil {
			return nil, &protocolError{code: reasonMalformedPacket, err: fmt.Errorf("malformed packet: %w", err)}
		}
	}
	return p, err
}

// maxIncomingPacketSize is the Maximum Packet Size sent in CONNECT: the
// broker must not send a larger packet, and decode rejects one.
const maxIncomingPacketSize = 16 << 20

// readByte reads one byte, through io.ByteReader when r implements it, as the
// connection's bufio.Reader does, so that no buffer is allocated per byte.
func readByte(r io.Reader) (byte, error) {
	if br, ok := r.(io.ByteReader); ok {
		return br.ReadByte()
	}
	var b [1]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return 0, err
	}
	return b[0], nil
}

// readRemainingLength reads the remaining length of the fixed header, a
// variable byte integer of one to four bytes. It returns the value, and
// the bytes it was encoded in and their count. They come back as an array
// so that nothing is allocated.
func readRemainingLength(r io.Reader) (length int, encoded [4]byte, size int, err error) {
	multiplier := 1
	for size = 0; ; {
		if size == 4 {
			return 0, encoded, 0, &protocolError{code: reasonMalformedPacket, err: errors.New("malformed packet: remaining length is longer than 4 bytes")}
		}
		b, err := readByte(r)
		if err != nil {
			return 0, encoded, 0, err
		}
		encoded[size] = b
		size++
		length += int(b&0x7f) * multiplier
		multiplier *= 128
		if b&0x80 == 0 {
			return length, encoded, size, nil
		}
	}
}

// ackKindOf returns the ackKind of an MQTT packet type, or 0 when the type
// is not PUBACK, PUBREC, PUBREL or PUBCOMP.
func ackKindOf(packetType byte) ackKind {
	switch packetType {
	case packets.PUBACK:
		return kindPuback
	case packets.PUBREC:
		return kindPubrec
	case packets.PUBREL:
		return kindPubrel
	case packets.PUBCOMP:
		return kindPubcomp
	default:
		return 0
	}
}

// readAck reads the variable header of an acknowledgement whose remaining
// length is 2 (packet identifier only, reason code 0x00) or 3 (packet
// identifier and reason code, no properties). Like paho.golang v0.23.0,
// it ignores the flags of the fixed header.
func readAck(r io.Reader, kind ackKind, length int, into *ackPacket) (packet, error) {
	var body [3]byte
	for i := range length {
		b, err := readByte(r)
		if err != nil {
			// Return what io.ReadFull of the whole body returned before:
			// io.EOF when no byte came, io.ErrUnexpectedEOF after one.
			if i > 0 && err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		body[i] = b
	}
	if into == nil {
		into = new(ackPacket)
	}
	*into = ackPacket{Kind: kind, PacketID: binary.BigEndian.Uint16(body[:2])}
	if length == 3 {
		into.ReasonCode = body[2]
	}
	return into, nil
}

func fromPaho(cp *packets.ControlPacket) (packet, error) {
	switch c := cp.Content.(type) {
	case *packets.Connack:
		return fromPahoConnack(c), nil
	case *packets.Publish:
		if err := checkIncomingTopic(c); err != nil {
			return nil, err
		}
		return fromPahoPublish(c), nil
	case *packets.Puback:
		return &ackPacket{Kind: kindPuback, PacketID: c.PacketID, ReasonCode: c.ReasonCode, ReasonString: reasonString(c.Properties)}, nil
	case *packets.Pubrec:
		return &ackPacket{Kind: kindPubrec, PacketID: c.PacketID, ReasonCode: c.ReasonCode, ReasonString: reasonString(c.Properties)}, nil
	case *packets.Pubrel:
		return &ackPacket{Kind: kindPubrel, PacketID: c.PacketID, ReasonCode: c.ReasonCode}, nil
	case *packets.Pubcomp:
		return &ackPacket{Kind: kindPubcomp, PacketID: c.PacketID, ReasonCode: c.ReasonCode}, nil
	case *packets.Suback:
		return &subackPacket{PacketID: c.PacketID, ReasonCodes: bytes.Clone(c.Reasons)}, nil
	case *packets.Unsuback:
		return &unsubackPacket{PacketID: c.PacketID, ReasonCodes: bytes.Clone(c.Reasons)}, nil
	case *packets.Disconnect:
		return &disconnectPacket{ReasonCode: c.ReasonCode, ReasonString: reasonString(c.Properties)}, nil
	case *packets.Pingresp:
		return &pingrespPacket{}, nil
	default:
		// AUTH too: CONNECT has no Authentication Method, so the broker
		// must not send one.
		return nil, &protocolError{code: reasonProtocolError, err: fmt.Errorf("unexpected %s packet from the broker", cp.PacketType())}
	}
}

// checkIncomingTopic rejects a PUBLISH with a Topic Alias, which CONNECT's
// Topic Alias Maximum of 0 forbids the broker to send, and one without a
// topic name.
func checkIncomingTopic(c *packets.Publish) error {
	if props := c.Properties; props != nil && props.TopicAlias != nil {
		return &protocolError{code: reasonTopicAliasInvalid, err: fmt.Errorf(
			"publish on topic %q has topic alias %d, but connect allowed no topic aliases", c.Topic, *props.TopicAlias)}
	}
	if c.Topic == "" {
		return &protocolError{code: reasonProtocolError, err: errors.New("publish has an empty topic name and no topic alias")}
	}
	return nil
}

func reasonString(p *packets.Properties) string {
	if p == nil {
		return ""
	}
	return p.ReasonString
}

func toPahoConnect(p *connectPacket) *packets.Connect {
	c := packets.NewControlPacket(packets.CONNECT).Content.(*packets.Connect)
	c.ClientID = p.ClientID
	c.CleanStart = p.CleanStart
	c.KeepAlive = p.KeepAlive
	c.UsernameFlag = p.Username != ""
	c.Username = p.Username
	c.PasswordFlag = p.HasPassword
	c.Password = p.Password

	// Topic Alias Maximum 0: the loop accepts no topic aliases from the
	// broker and sends none, so no alias can outlive its connection.
	expiry, receiveMaximum, aliasMaximum := p.SessionExpiry, p.ReceiveMaximum, uint16(0)
	packetMaximum := uint32(maxIncomingPacketSize)
	c.Properties.SessionExpiryInterval = &expiry
	c.Properties.ReceiveMaximum = &receiveMaximum
	c.Properties.TopicAliasMaximum = &aliasMaximum
	c.Properties.MaximumPacketSize = &packetMaximum

	if w := p.Will; w != nil {
		c.WillFlag = true
		c.WillTopic = w.Topic
		c.WillMessage = w.Payload
		c.WillQOS = w.QoS
		c.WillRetain = w.Retain
		c.WillProperties = messageProperties(w)
	}
	return c
}

func (mqtt5Codec) appendPublish(dst []byte, p *publishPacket) []byte {
	return appendPublish(dst, p)
}

// appendPublish appends p to dst, growing dst at most once. It writes
// the same bytes as Publish.WriteTo of paho.golang v0.23.0, properties in
// the same order (TestEncodePublish_MatchesPaho compares them). Like paho,
// it truncates a string or binary field longer than 65535 bytes.
func appendPublish(dst []byte, p *publishPacket) []byte {
	m := &p.Message
	topic := truncate16(m.Topic)
	propertiesLength := publishPropertiesLength(m)
	remaining := 2 + len(topic) + variableByteIntegerLength(propertiesLength) + propertiesLength + len(m.Payload)
	if m.QoS > 0 {
		remaining += 2
	}

	header := byte(packets.PUBLISH)<<4 | m.QoS<<1
	if p.Dup {
		header |= 1 << 3
	}
	if m.Retain {
		header |= 1
	}
	data := slices.Grow(dst, 1+variableByteIntegerLength(remaining)+remaining)
	data = append(data, header)
	data = appendVariableByteInteger(data, remaining)
	data = appendString(data, topic)
	if m.QoS > 0 {
		data = binary.BigEndian.AppendUint16(data, p.PacketID)
	}
	data = appendVariableByteInteger(data, propertiesLength)
	data = appendPublishProperties(data, m)
	return append(data, m.Payload...)
}

// publishPropertiesLength returns the length of the properties that
// appendPublishProperties writes, without their length prefix.
func publishPropertiesLength(m *message.Message) int {
	n := 0
	if m.PayloadFormat == message.PayloadFormatBytes || m.PayloadFormat == message.PayloadFormatUTF8 {
		n += 2
	}
	if m.ExpirySeconds > 0 {
		n += 5
	}
	if m.ContentType != "" {
		n += 3 + len(truncate16(m.ContentType))
	}
	if m.ResponseTopic != "" {
		n += 3 + len(truncate16(m.ResponseTopic))
	}
	if len(m.CorrelationData) > 0 {
		n += 3 + len(truncate16(m.CorrelationData))
	}
	for _, u := range m.UserProperties {
		n += 5 + len(truncate16(u.Key)) + len(truncate16(u.Value))
	}
	return n
}

// appendPublishProperties appends the properties of m in the order paho's
// Properties.Pack writes them for PUBLISH.
func appendPublishProperties(data []byte, m *message.Message) []byte {
	switch m.PayloadFormat {
	case message.PayloadFormatBytes:
		data = append(data, packets.PropPayloadFormat, 0)
	case message.PayloadFormatUTF8:
		data = append(data, packets.PropPayloadFormat, 1)
	}
	if m.ExpirySeconds > 0 {
		data = append(data, packets.PropMessageExpiry)
		data = binary.BigEndian.AppendUint32(data, m.ExpirySeconds)
	}
	if m.ContentType != "" {
		data = appendString(append(data, packets.PropContentType), truncate16(m.ContentType))
	}
	if m.ResponseTopic != "" {
		data = appendString(append(data, packets.PropResponseTopic), truncate16(m.ResponseTopic))
	}
	if len(m.CorrelationData) > 0 {
		data = appendString(append(data, packets.PropCorrelationData), truncate16(m.CorrelationData))
	}
	for _, u := range m.UserProperties {
		data = appendString(append(data, packets.PropUser), truncate16(u.Key))
		data = appendString(data, truncate16(u.Value))
	}
	return data
}

// truncate16 cuts s to the 65535 bytes that a two-byte length prefix can
// count, as paho does.
func truncate16[S ~string | ~[]byte](s S) S {
	if len(s) > 65535 {
		return s[:65535]
	}
	return s
}

// appendString appends s with its two-byte length prefix. s must be at
// most 65535 bytes long.
func appendString[S ~string | ~[]byte](data []byte, s S) []byte {
	data = binary.BigEndian.AppendUint16(data, uint16(len(s)))
	return append(data, s...)
}

// appendVariableByteInteger appends n in MQTT's variable byte integer
// encoding. It does not reject n above 268435455, which needs more than
// the four bytes MQTT allows. The loop rejects such packets before they
// are written (see oversized).
func appendVariableByteInteger(data []byte, n int) []byte {
	for {
		digit := byte(n % 128)
		n /= 128
		if n > 0 {
			digit |= 0x80
		}
		data = append(data, digit)
		if n == 0 {
			return data
		}
	}
}

func variableByteIntegerLength(n int) int {
	length := 1
	for n >= 128 {
		n /= 128
		length++
	}
	return length
}

func messageProperties(m *message.Message) *packets.Properties {
	props := &packets.Properties{
		ContentType:     m.ContentType,
		ResponseTopic:   m.ResponseTopic,
		CorrelationData: m.CorrelationData,
	}
	if m.ExpirySeconds > 0 {
		expiry := m.ExpirySeconds
		props.MessageExpiry = &expiry
	}
	switch m.PayloadFormat {
	case message.PayloadFormatBytes:
		format := byte(0)
		props.PayloadFormat = &format
	case message.PayloadFormatUTF8:
		format := byte(1)
		props.PayloadFormat = &format
	}
	for _, u := range m.UserProperties {
		props.User = append(props.User, packets.User{Key: u.Key, Value: u.Value})
	}
	return props
}

// encodeAck encodes an acknowledgement without properties. It writes the
// same bytes as paho.golang v0.23.0 (TestEncodeAck_MatchesPaho compares
// them): the reason code always, and for PUBACK a property length of 0.
// A PUBREL's fixed header flags are 0010, as the protocol requires.
func encodeAck(p *ackPacket) []byte {
	return mqtt5Codec{}.appendAck(nil, p.Kind, p.PacketID, p.ReasonCode)
}

func (mqtt5Codec) appendAck(dst []byte, kind ackKind, id uint16, code byte) []byte {
	switch kind {
	case kindPuback:
		return append(dst, packets.PUBACK<<4, 4, byte(id>>8), byte(id), code, 0)
	case kindPubrec:
		return append(dst, packets.PUBREC<<4, 3, byte(id>>8), byte(id), code)
	case kindPubrel:
		return append(dst, packets.PUBREL<<4|0x02, 3, byte(id>>8), byte(id), code)
	default:
		return append(dst, packets.PUBCOMP<<4, 3, byte(id>>8), byte(id), code)
	}
}

func toPahoSubscribe(p *subscribePacket) *packets.Subscribe {
	s := &packets.Subscribe{PacketID: p.PacketID, Properties: &packets.Properties{}}
	if p.Identifier > 0 {
		id := p.Identifier
		s.Properties.SubscriptionIdentifier = &id
	}
	for _, sub := range p.Subscriptions {
		s.Subscriptions = append(s.Subscriptions, packets.SubOptions{
			Topic:             sub.Filter,
			QoS:               sub.QoS,
			NoLocal:           sub.NoLocal,
			RetainAsPublished: sub.RetainAsPublished,
			RetainHandling:    sub.RetainHandling,
		})
	}
	return s
}

func fromPahoConnack(c *packets.Connack) *connackPacket {
	p := &connackPacket{
		SessionPresent:  c.SessionPresent,
		ReasonCode:      c.ReasonCode,
		MaximumQoS:      2,
		RetainAvailable: true,
		ServerKeepAlive: -1,
		SessionExpiry:   -1,
		SubscriptionIDs: true,
	}
	props := c.Properties
	if props == nil {
		return p
	}
	p.ReasonString = props.ReasonString
	p.AssignedClientID = props.AssignedClientID
	p.PropertyError = checkConnackProperties(props)
	if props.ReceiveMaximum != nil {
		p.ReceiveMaximum = *props.ReceiveMaximum
	}
	if props.MaximumPacketSize != nil {
		p.MaximumPacketSize = *props.MaximumPacketSize
	}
	if props.MaximumQOS != nil {
		p.MaximumQoS = *props.MaximumQOS
	}
	if props.RetainAvailable != nil {
		p.RetainAvailable = *props.RetainAvailable != 0
	}
	if props.TopicAliasMaximum != nil {
		p.TopicAliasMaximum = *props.TopicAliasMaximum
	}
	if props.ServerKeepAlive != nil {
		p.ServerKeepAlive = int32(*props.ServerKeepAlive)
	}
	if props.SessionExpiryInterval != nil {
		p.SessionExpiry = int64(*props.SessionExpiryInterval)
	}
	if props.SubIDAvailable != nil {
		p.SubscriptionIDs = *props.SubIDAvailable != 0
	}
	return p
}

// checkConnackProperties returns an error for a CONNACK property whose
// value is a Protocol Error in MQTT 5.0 (sections 3.2.2.3.3 and
// 3.2.2.3.6): Receive Maximum 0 or Maximum Packet Size 0. Only here can
// the value 0 be distinguished from an absent property, because paho
// keeps both properties as pointers and connackPacket stores 0 for absent.
// NOTE: paho keeps the last of a repeated property, so a property sent
// twice, also a Protocol Error, is not detected.
func checkConnackProperties(props *packets.Properties) error {
	if receiveMaximum := props.ReceiveMaximum; receiveMaximum != nil && *receiveMaximum == 0 {
		return errors.New("connack has Receive Maximum 0, a protocol error in MQTT 5")
	}
	if packetSize := props.MaximumPacketSize; packetSize != nil && *packetSize == 0 {
		return errors.New("connack has Maximum Packet Size 0, a protocol error in MQTT 5")
	}
	return nil
}

func fromPahoPublish(c *packets.Publish) *publishPacket {
	p := &publishPacket{
		PacketID: c.PacketID,
		Dup:      c.Duplicate,
		Message: message.Message{
			Topic:   c.Topic,
			Payload: c.Payload,
			QoS:     c.QoS,
			Retain:  c.Retain,
		},
	}
	props := c.Properties
	if props == nil {
		return p
	}
	m := &p.Message
	m.ContentType = props.ContentType
	m.ResponseTopic = props.ResponseTopic
	m.CorrelationData = props.CorrelationData
	if props.MessageExpiry != nil {
		m.ExpirySeconds = *props.MessageExpiry
	}
	if props.PayloadFormat != nil {
		m.PayloadFormat = message.PayloadFormatBytes
		if *props.PayloadFormat == 1 {
			m.PayloadFormat = message.PayloadFormatUTF8
		}
	}
	for _, u := range props.User {
		m.UserProperties = append(m.UserProperties, message.UserProperty{Key: u.Key, Value: u.Value})
	}
	if props.SubscriptionIdentifier != nil {
		p.SubscriptionIdentifiers = []int{*props.SubscriptionIdentifier}
	}
	return p
}
