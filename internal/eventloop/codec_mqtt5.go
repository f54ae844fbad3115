package eventloop

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/eclipse/paho.golang/packets"

	"github.com/mqspool/mqspool/internal/message"
)

// mqtt5Codec encodes and decodes MQTT 5 packets with the paho packets
// package.
type mqtt5Codec struct{}

func (mqtt5Codec) encode(p packet) ([]byte, error) {
	var content packets.Packet
	switch p := p.(type) {
	case *connectPacket:
		content = toPahoConnect(p)
	case *publishPacket:
		content = toPahoPublish(p)
	case *ackPacket:
		content = toPahoAck(p)
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
// memory is allocated for it. The paho decoder is not hardened against
// every malformed input, so a panic inside it becomes an error.
func (mqtt5Codec) decode(r io.Reader) (p packet, err error) {
	raw, err := readRawPacket(r)
	if err != nil {
		return nil, err
	}
	defer func() {
		if v := recover(); v != nil {
			p, err = nil, fmt.Errorf("malformed packet: decoder panicked: %v", v)
		}
	}()
	cp, err := packets.ReadPacket(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("malformed packet: %w", err)
	}
	return fromPaho(cp)
}

// maxIncomingPacketSize is the Maximum Packet Size sent in CONNECT: the
// broker must not send a larger packet, and decode rejects one.
const maxIncomingPacketSize = 16 << 20

// readRawPacket reads one whole packet: the type byte, the remaining
// length as a variable byte integer, then that many bytes.
func readRawPacket(r io.Reader) ([]byte, error) {
	header := make([]byte, 1, 5)
	if _, err := io.ReadFull(r, header); err != nil {
		return nil, err
	}
	length, multiplier := 0, 1
	for i := 0; ; i++ {
		if i == 4 {
			return nil, errors.New("malformed packet: remaining length is longer than 4 bytes")
		}
		var b [1]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return nil, err
		}
		header = append(header, b[0])
		length += int(b[0]&0x7f) * multiplier
		multiplier *= 128
		if b[0]&0x80 == 0 {
			break
		}
	}
	if length+len(header) > maxIncomingPacketSize {
		return nil, fmt.Errorf("packet of %d bytes exceeds the maximum packet size of %d bytes sent in connect", length+len(header), maxIncomingPacketSize)
	}
	raw := make([]byte, len(header)+length)
	copy(raw, header)
	if _, err := io.ReadFull(r, raw[len(header):]); err != nil {
		return nil, err
	}
	return raw, nil
}

func fromPaho(cp *packets.ControlPacket) (packet, error) {
	switch c := cp.Content.(type) {
	case *packets.Connack:
		return fromPahoConnack(c), nil
	case *packets.Publish:
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
		return nil, fmt.Errorf("unexpected %s packet from the broker", cp.PacketType())
	}
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

func toPahoPublish(p *publishPacket) *packets.Publish {
	return &packets.Publish{
		PacketID:   p.PacketID,
		QoS:        p.Message.QoS,
		Duplicate:  p.Dup,
		Retain:     p.Message.Retain,
		Topic:      p.Message.Topic,
		Payload:    p.Message.Payload,
		Properties: messageProperties(&p.Message),
	}
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

func toPahoAck(p *ackPacket) packets.Packet {
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
		SubscriptionIDs: true,
	}
	props := c.Properties
	if props == nil {
		return p
	}
	p.ReasonString = props.ReasonString
	p.AssignedClientID = props.AssignedClientID
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
	if props.SubIDAvailable != nil {
		p.SubscriptionIDs = *props.SubIDAvailable != 0
	}
	return p
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
