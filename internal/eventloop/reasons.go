package eventloop

import "fmt"

// reasonNames holds the MQTT 5 reason code names (MQTT 5.0, section
// 2.4) used in logs and failure reasons. Codes below 0x80 that differ by
// packet type are named in reasonName.
var reasonNames = map[byte]string{
	0x80: "unspecified error",
	0x81: "malformed packet",
	0x82: "protocol error",
	0x83: "implementation specific error",
	0x84: "unsupported protocol version",
	0x85: "client identifier not valid",
	0x86: "bad user name or password",
	0x87: "not authorized",
	0x88: "server unavailable",
	0x89: "server busy",
	0x8A: "banned",
	0x8B: "server shutting down",
	0x8C: "bad authentication method",
	0x8D: "keep alive timeout",
	0x8E: "session taken over",
	0x8F: "topic filter invalid",
	0x90: "topic name invalid",
	0x91: "packet identifier in use",
	0x92: "packet identifier not found",
	0x93: "receive maximum exceeded",
	0x94: "topic alias invalid",
	0x95: "packet too large",
	0x96: "message rate too high",
	0x97: "quota exceeded",
	0x98: "administrative action",
	0x99: "payload format invalid",
	0x9A: "retain not supported",
	0x9B: "qos not supported",
	0x9C: "use another server",
	0x9D: "server moved",
	0x9E: "shared subscriptions not supported",
	0x9F: "connection rate exceeded",
	0xA0: "maximum connect time",
	0xA1: "subscription identifiers not supported",
	0xA2: "wildcard subscriptions not supported",
}

// Reason codes of a DISCONNECT that the loop sends on a packet from the
// broker that breaks MQTT 5.
const (
	reasonMalformedPacket   = 0x81
	reasonProtocolError     = 0x82
	reasonTopicAliasInvalid = 0x94
	reasonPacketTooLarge    = 0x95
)

// protocolError is a packet from the broker that is malformed or breaks
// MQTT 5. The loop ends the connection with a DISCONNECT of code.
type protocolError struct {
	code byte
	err  error
}

func (e *protocolError) Error() string { return e.err.Error() }

func (e *protocolError) Unwrap() error { return e.err }

// reasonName returns "0x87 not authorized" style text for a reason code.
// Codes below 0x80 are named for the packet they arrived in, because the
// same value means different things there.
func reasonName(code byte, in string) string {
	if name, ok := reasonNames[code]; ok {
		return fmt.Sprintf("0x%02X %s", code, name)
	}
	switch {
	case code == 0x00 && in == "disconnect":
		return "0x00 normal disconnection"
	case code == 0x00:
		return "0x00 success"
	case code == 0x04 && in == "disconnect":
		return "0x04 disconnect with will message"
	case code == 0x10:
		return "0x10 no matching subscribers"
	case code <= 0x02 && in == "suback":
		return fmt.Sprintf("0x%02X granted qos %d", code, code)
	}
	return fmt.Sprintf("0x%02X unknown reason code", code)
}

// ackSucceeded reports whether a PUBACK or PUBREC code accepts the
// message: 0x00 success and 0x10 no matching subscribers.
func ackSucceeded(code byte) bool { return code == 0x00 || code == 0x10 }

// ackPermanent reports whether a rejection will repeat on every attempt,
// so the message goes to failed/ instead of being published again.
func ackPermanent(code byte) bool {
	switch code {
	case 0x87, 0x90, 0x95, 0x99, 0x9A, 0x9B:
		return true
	}
	return false
}

// connackWaitsMaxDelay reports CONNACK rejections that a quick retry cannot
// fix: bad credentials, not authorized and banned.
func connackWaitsMaxDelay(code byte) bool {
	return code == 0x86 || code == 0x87 || code == 0x8A
}
