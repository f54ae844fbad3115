package state

import "fmt"

// ChangeKind names one step of the session that must be durable before the
// packets that depend on it are written.
type ChangeKind uint8

const (
	// ChangeSessionStarted: CONNACK accepted a Clean Start 1 CONNECT. Every
	// old flow is gone and later connects may resume this session.
	ChangeSessionStarted ChangeKind = iota + 1
	// ChangeSessionLost: CONNACK had Session Present 0 on a resume. The
	// flows are dropped; their messages stay in the spool and are
	// published again as new messages.
	ChangeSessionLost
	// ChangeSent: a QoS 1 or QoS 2 message got PacketID. Durable before
	// the PUBLISH is written.
	ChangeSent
	// ChangePubrec: PUBREC arrived for a QoS 2 flow. The flow moves to
	// StagePubrel, and the message stays in the spool until PUBCOMP.
	// Durable before the PUBREL is written.
	ChangePubrec
	// ChangeAcked: PUBACK with a success code. The message leaves the
	// spool and the flow ends.
	ChangeAcked
	// ChangeCompleted: PUBCOMP arrived. The message leaves the spool and
	// the flow ends.
	ChangeCompleted
	// ChangeDelivered: a QoS 0 message was written to the socket. The
	// message leaves the spool.
	ChangeDelivered
	// ChangeFailed: the broker rejected the message for good, or it can
	// never be sent on this connection. The message moves to failed/ with
	// Reason, and the flow, if any, ends.
	ChangeFailed
	// ChangeExpired: the message's Message Expiry Interval passed while it
	// waited. The message is dropped and counted.
	ChangeExpired
	// ChangeReleased: the flow ends but the message stays in the spool,
	// to be published again as a new message (a transient rejection).
	ChangeReleased
	// ChangeIncomingStored: an incoming QoS 2 PUBLISH was stored by the
	// caller. Durable before PUBREC is written.
	ChangeIncomingStored
	// ChangeIncomingReleased: PUBREL arrived for an incoming QoS 2 flow.
	// Durable before PUBCOMP is written.
	ChangeIncomingReleased
)

var changeNames = map[ChangeKind]string{
	ChangeSessionStarted:   "session-started",
	ChangeSessionLost:      "session-lost",
	ChangeSent:             "sent",
	ChangePubrec:           "pubrec",
	ChangeAcked:            "acked",
	ChangeCompleted:        "completed",
	ChangeDelivered:        "delivered",
	ChangeFailed:           "failed",
	ChangeExpired:          "expired",
	ChangeReleased:         "released",
	ChangeIncomingStored:   "incoming-stored",
	ChangeIncomingReleased: "incoming-released",
}

// String returns the kind's name for logs.
func (k ChangeKind) String() string {
	if n, ok := changeNames[k]; ok {
		return n
	}
	return fmt.Sprintf("change(%d)", uint8(k))
}

// Change is one durable step of the session. Fields that a kind does not
// use are zero.
type Change struct {
	Kind     ChangeKind
	PacketID uint16
	// Seq is the spool sequence number of the message concerned.
	Seq   uint64
	QoS   byte
	Order uint64
	// Reason is the cause of a failed message, for failed/NAME.reason and logs.
	Reason string
}
