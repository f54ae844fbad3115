package eventloop

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"time"

	"github.com/mqspool/mqspool/internal/message"
	"github.com/mqspool/mqspool/internal/state"
)

// Request is one message to publish. Seq identifies it to the caller: the
// loop reports it in events and journal changes and passes it to
// [Source.Load] to fetch the message again for a retransmission.
type Request struct {
	Seq     uint64
	Message message.Message
	// Enqueued is when the message was accepted, in the wall clock's
	// current setting. A Message Expiry Interval is aged by the time
	// since then; zero means now.
	Enqueued time.Time
}

// Source yields the requests to publish, in order. The loop calls it only
// from the goroutine that runs [Loop.Poll].
type Source interface {
	// Next returns the next request not yet handed out, or ok false when
	// none is ready now. It must not block on anything slower than a
	// short read of local storage.
	Next() (req Request, ok bool, err error)
	// Ready returns a channel that receives a value whenever Next may have
	// a new request after having returned ok false.
	Ready() <-chan struct{}
	// Load returns the request with seq again, for retransmission and for
	// flows restored from saved state.
	Load(seq uint64) (Request, error)
}

// PayloadRecycler is implemented by a [Source] that reuses payload
// buffers. The loop calls Recycle with the payload of a request it has
// encoded and will not read again, from the goroutine that runs
// [Loop.Poll].
type PayloadRecycler interface {
	Recycle(payload []byte)
}

// Journal makes session changes durable. The loop calls Commit from a
// goroutine of its own, with changes in the order they happened, and
// writes a packet that depends on a change only after Commit returned nil
// for it. An error stops the loop: state it cannot persist must not reach
// the wire.
type Journal interface {
	// Commit must not keep changes after it returns: the loop reuses
	// the slice.
	Commit(changes []state.Change) error
}

// ReconnectPolicy is the rule for dialling again after a connection ends.
type ReconnectPolicy int

const (
	// ReconnectAlways retries every failure, including the first connect.
	ReconnectAlways ReconnectPolicy = iota
	// ReconnectAfterFirstSuccess fails Poll if the first connect fails and
	// retries every later loss.
	ReconnectAfterFirstSuccess
	// ReconnectNever ends the loop when the connection ends; the caller can
	// take [Loop.State] and hand it to a new loop.
	ReconnectNever
)

// LimitPolicy is the handling of a message that exceeds the broker's
// Maximum QoS or uses retain where Retain Available is 0.
type LimitPolicy int

const (
	// LimitDowngrade sends the message with the QoS or retain the broker
	// supports, and logs and counts the change.
	LimitDowngrade LimitPolicy = iota
	// LimitReject moves the message to failed/.
	LimitReject
)

// Options configure a [Loop]. Zero durations take the defaults documented
// beside each field.
type Options struct {
	// URLs are tried in turn: mqtt://host:port or mqtts://host:port.
	URLs     []string
	ClientID string
	Username string
	// Password returns the password for each connect, so a rotated file is
	// read again. Nil sends no password.
	Password func() ([]byte, error)
	// TLSConfig returns the configuration for each mqtts:// connect, so
	// rotated certificates are read again. Nil uses the system roots.
	TLSConfig func() (*tls.Config, error)

	KeepAlive      time.Duration // default 30s; 0 after defaults are applied is not possible, use KeepAliveOff
	KeepAliveOff   bool          // send keep alive 0 and rely on TCP keepalive and TCP_USER_TIMEOUT
	ConnectTimeout time.Duration // default 10s: TCP, TLS and CONNACK together
	SessionExpiry  time.Duration // default 24h
	ReceiveMaximum uint16        // default 64, for incoming QoS 1 and QoS 2

	// MaxIncoming and MaxIncomingBytes bound the incoming QoS 1 and 2
	// messages, of every connection, that wait for their Release, for
	// brokers that send more than ReceiveMaximum (mosquitto 2.0 does on a
	// resumed session). Up to ReceiveMaximum messages of the current
	// connection are always taken, whatever their size. Defaults: 1024 or
	// ReceiveMaximum if higher, and 16 MiB.
	MaxIncoming      int
	MaxIncomingBytes int

	Reconnect ReconnectPolicy
	MinDelay  time.Duration // default 500ms
	MaxDelay  time.Duration // default 30s

	MaxInflight   int           // default 1000; the broker's Receive Maximum wins when lower
	AckTimeout    time.Duration // default 30s
	OnBrokerLimit LimitPolicy

	// MessagesPerSecond and BytesPerSecond throttle publishing; 0 is
	// unlimited.
	MessagesPerSecond float64
	BytesPerSecond    float64

	// DropQoS0Offline drops QoS 0 requests taken while disconnected
	// instead of holding them until the next connection.
	DropQoS0Offline bool

	// Will is published by the broker when the connection is lost without
	// DISCONNECT. Birth is published after each CONNACK. Both may be nil.
	Will  *message.Message
	Birth *message.Message

	// Subscriptions are made on each connection without session present.
	// With session present, only the difference from SessionSubscriptions
	// is sent: SUBSCRIBE for new or changed entries, UNSUBSCRIBE for
	// filters no longer listed.
	Subscriptions []Subscription
	// SessionSubscriptions are the subscriptions the broker's session
	// held after the last [EventSubscribed], as the caller stored them.
	SessionSubscriptions []Subscription

	Logger *slog.Logger
	// Clock replaces the monotonic clock in tests. Nil uses package time.
	Clock Clock
}

// Subscription is one MQTT 5 subscription with its options.
type Subscription struct {
	Filter            string
	QoS               byte
	NoLocal           bool
	RetainAsPublished bool
	RetainHandling    byte
	// Identifier is sent as the Subscription Identifier (1 to 268435455),
	// so the broker names the matching subscription in each PUBLISH.
	// 0 sends none. A subscription with an identifier goes in a SUBSCRIBE
	// of its own, because the identifier applies to the whole packet.
	Identifier int `json:",omitempty"`
}

// EventKind identifies an [Event] and which of its fields are set.
type EventKind int

const (
	// EventConnected: CONNACK accepted. Connected is set.
	EventConnected EventKind = iota + 1
	// EventAcknowledged: a message is done with, delivered or not.
	// Outcome is set.
	EventAcknowledged
	// EventIncoming: a PUBLISH arrived. Incoming is set; the caller must
	// call Incoming.Release once it has stored the message.
	EventIncoming
	// EventDisconnected: the connection ended. Err holds the cause.
	EventDisconnected
	// EventSubscribed: every SUBSCRIBE and UNSUBSCRIBE of a connection was
	// answered. Subscribed is set.
	EventSubscribed
)

// Event is the result of one [Loop.Poll].
type Event struct {
	Kind       EventKind
	Connected  *Connected
	Outcome    Outcome // set for EventAcknowledged
	Incoming   *Incoming
	Subscribed *Subscribed
	Err        error
}

// Subscribed reports the subscriptions the broker's session holds after
// the SUBACKs and UNSUBACKs of one connection.
type Subscribed struct {
	// Session lists the subscriptions the broker accepted, to be stored
	// and passed back as [Options.SessionSubscriptions].
	Session []Subscription
	// Rejected lists each refused filter with the SUBACK reason code name,
	// and each filter not sent because its SUBSCRIBE exceeds the broker's
	// Maximum Packet Size.
	Rejected []SubscriptionError
}

// SubscriptionError is a subscription the broker refused or that exceeds
// its Maximum Packet Size.
type SubscriptionError struct {
	Filter string
	Reason string
}

// Connected describes an accepted connection and the broker's limits read
// from its CONNACK.
type Connected struct {
	URL               string
	SessionPresent    bool
	ReceiveMaximum    uint16
	MaximumPacketSize uint32 // 0: no limit
	MaximumQoS        byte
	RetainAvailable   bool
	TopicAliasMaximum uint16
	KeepAlive         time.Duration
}

// OutcomeKind classifies how a message ended.
type OutcomeKind int

const (
	// Delivered: the broker accepted the message (QoS 0: written).
	Delivered OutcomeKind = iota + 1
	// Failed: rejected for good or too large; the message went to failed/.
	Failed
	// Expired: its Message Expiry Interval passed before it was sent.
	Expired
	// Dropped: QoS 0 while offline with DropQoS0Offline set.
	Dropped
	// TimedOut: [PublishAll] returned before the message was
	// acknowledged. It may still reach the broker.
	TimedOut
)

// String returns the kind's name for logs.
func (k OutcomeKind) String() string {
	switch k {
	case Delivered:
		return "delivered"
	case Failed:
		return "failed"
	case Expired:
		return "expired"
	case Dropped:
		return "dropped"
	case TimedOut:
		return "timed out"
	}
	return fmt.Sprintf("outcome(%d)", int(k))
}

// Outcome is the end of one request.
type Outcome struct {
	Seq    uint64
	Kind   OutcomeKind
	Reason string
	// ReasonCode is the broker's code from PUBACK or PUBREC, if any.
	ReasonCode byte
	// Latency runs from the first send to the acknowledgement.
	Latency time.Duration
}

// Incoming is a received PUBLISH whose acknowledgement waits for Release.
type Incoming struct {
	PacketID uint16
	Dup      bool
	Message  message.Message
	// SubscriptionIdentifiers from the PUBLISH, if any.
	SubscriptionIdentifiers []int
	// Release reports to the loop that the message is stored, so PUBACK or PUBREC
	// may be sent. It is safe to call from any goroutine, once.
	Release func()
	// Decline reports that the caller gives the message up without
	// storing it: no acknowledgement is sent, so the broker sends it
	// again on a later connection, and a drain no longer waits for it.
	// After Release or Decline, the other does nothing. It is safe to
	// call from any goroutine.
	Decline func()
	// Redelivered reports whether the broker has sent a QoS 1 message
	// again since its connection ended, so storing this copy would
	// store it twice: a later connection resumed the broker's session,
	// which resends every unacknowledged message, and none lost it. known
	// is false while the connection has ended and no new one is up yet.
	// It is safe to call from any goroutine.
	Redelivered func() (redelivered, known bool)
}

// Clock is the source of monotonic time and timers. Tests inject a fake to
// show that wall-clock jumps change nothing.
type Clock interface {
	Now() time.Time
	NewTimer(d time.Duration) Timer
}

// Timer is the part of *time.Timer the loop uses.
type Timer interface {
	C() <-chan time.Time
	Stop() bool
	Reset(d time.Duration) bool
}
