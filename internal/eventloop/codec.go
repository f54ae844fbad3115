package eventloop

import (
	"io"

	"github.com/mqspool/mqspool/internal/message"
)

// codec is the seam between the flows and the wire format. The flows build
// and read the packet structs below; a codec turns them into bytes and
// back. The MQTT 5 codec wraps the paho packets package, and an MQTT 3.1.1
// codec could be added here without touching the flows.
type codec interface {
	// encode returns the complete packet, fixed header included, so the
	// caller can compare its length with the broker's Maximum Packet Size
	// before writing it.
	encode(p packet) ([]byte, error)
	// appendPublish appends the encoded p to dst and returns the result.
	// It is encode for PUBLISH into a buffer the caller reuses.
	appendPublish(dst []byte, p *publishPacket) []byte
	// appendAck appends a PUBACK, PUBREC, PUBREL or PUBCOMP without
	// properties to dst, as encode would write it.
	appendAck(dst []byte, kind ackKind, id uint16, code byte) []byte
	// setPublishPacketID overwrites the packet identifier of data, a QoS 1
	// or QoS 2 PUBLISH returned by encode, without changing its length.
	setPublishPacketID(data []byte, id uint16) error
	// decode reads one packet. It returns an error, never panics, on
	// malformed input.
	decode(r io.Reader) (packet, error)
	// decodeInto is decode, except that an acknowledgement without
	// properties is written into ack, which is returned, instead of into
	// a new value.
	decodeInto(r io.Reader, ack *ackPacket) (packet, error)
}

// packet is one of the *Packet types below.
type packet interface{ packetName() string }

// connectPacket is CONNECT.
type connectPacket struct {
	ClientID       string
	CleanStart     bool
	KeepAlive      uint16 // seconds
	SessionExpiry  uint32 // seconds
	ReceiveMaximum uint16
	Username       string
	Password       []byte
	HasPassword    bool
	Will           *message.Message
}

// connackPacket is CONNACK with the properties the loop uses.
type connackPacket struct {
	SessionPresent    bool
	ReasonCode        byte
	ReasonString      string
	ReceiveMaximum    uint16 // 0: absent
	MaximumPacketSize uint32 // 0: absent
	MaximumQoS        byte   // 2 when absent
	RetainAvailable   bool   // true when absent
	TopicAliasMaximum uint16
	ServerKeepAlive   int32 // -1: absent
	SessionExpiry     int64 // seconds; -1: absent
	SubscriptionIDs   bool  // Subscription Identifiers Available; true when absent
	AssignedClientID  string
	// PropertyError is set when a property has a value that MQTT 5 makes
	// a Protocol Error, such as Receive Maximum 0. The fields above then
	// read that property as absent.
	PropertyError error
}

// publishPacket is PUBLISH. ExpirySeconds 0 sends no Message Expiry
// Interval.
type publishPacket struct {
	PacketID                uint16
	Dup                     bool
	Message                 message.Message
	SubscriptionIdentifiers []int
}

// ackKind names the packets that carry only a packet identifier and a
// reason code.
type ackKind byte

const (
	kindPuback ackKind = iota + 1
	kindPubrec
	kindPubrel
	kindPubcomp
)

// ackPacket is PUBACK, PUBREC, PUBREL or PUBCOMP.
type ackPacket struct {
	Kind         ackKind
	PacketID     uint16
	ReasonCode   byte
	ReasonString string
}

// subscribePacket is SUBSCRIBE. Identifier 0 sends no Subscription
// Identifier.
type subscribePacket struct {
	PacketID      uint16
	Identifier    int
	Subscriptions []Subscription
}

// unsubscribePacket is UNSUBSCRIBE.
type unsubscribePacket struct {
	PacketID uint16
	Filters  []string
}

// unsubackPacket is UNSUBACK.
type unsubackPacket struct {
	PacketID    uint16
	ReasonCodes []byte
}

// subackPacket is SUBACK.
type subackPacket struct {
	PacketID    uint16
	ReasonCodes []byte
}

// disconnectPacket is DISCONNECT in either direction.
type disconnectPacket struct {
	ReasonCode   byte
	ReasonString string
}

type pingreqPacket struct{}
type pingrespPacket struct{}

func (*connectPacket) packetName() string     { return "connect" }
func (*connackPacket) packetName() string     { return "connack" }
func (*publishPacket) packetName() string     { return "publish" }
func (*subscribePacket) packetName() string   { return "subscribe" }
func (*subackPacket) packetName() string      { return "suback" }
func (*unsubscribePacket) packetName() string { return "unsubscribe" }
func (*unsubackPacket) packetName() string    { return "unsuback" }
func (*disconnectPacket) packetName() string  { return "disconnect" }
func (*pingreqPacket) packetName() string     { return "pingreq" }
func (*pingrespPacket) packetName() string    { return "pingresp" }

func (a *ackPacket) packetName() string {
	switch a.Kind {
	case kindPuback:
		return "puback"
	case kindPubrec:
		return "pubrec"
	case kindPubrel:
		return "pubrel"
	default:
		return "pubcomp"
	}
}
