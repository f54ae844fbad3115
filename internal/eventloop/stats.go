package eventloop

import "sync"

// Stats is a snapshot of the loop for status output and metrics.
type Stats struct {
	Connected      bool
	URL            string
	SessionPresent bool
	// Inflight counts QoS 1 and QoS 2 packets written on the current
	// connection and not yet acknowledged.
	Inflight          int
	Paused            bool
	MessagesPerSecond float64
	BytesPerSecond    float64
	LastError         string

	Published  uint64 // PUBLISH packets written, resends included
	Acked      uint64 // messages the broker accepted (QoS 0: written)
	Failed     uint64 // messages moved to failed/
	Expired    uint64 // messages whose Message Expiry Interval passed
	Dropped    uint64 // QoS 0 messages dropped while offline
	Reconnects uint64 // connections accepted after the first one
	Downgraded uint64 // messages sent with lower QoS or without retain
	// IncomingDeferred counts the times an incoming QoS 1 or 2 message was
	// left unacknowledged, for the broker to send again on a later
	// connection: dropped because the caller held as many as allowed or
	// an earlier message on its topic was dropped, or declined by the
	// caller. Messages dropped while draining are not counted.
	IncomingDeferred uint64

	// RejectedSubscriptions lists the filters the broker refused on the
	// last connection that subscribed, with the SUBACK reason, and those
	// too large for its Maximum Packet Size.
	RejectedSubscriptions []SubscriptionError
}

// statsBox guards the Stats that [Loop.Stats] copies out.
type statsBox struct {
	mu sync.Mutex // guards s
	s  Stats
}

func (b *statsBox) update(f func(s *Stats)) {
	b.mu.Lock()
	f(&b.s)
	b.mu.Unlock()
}

func (b *statsBox) get() Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.s
}
