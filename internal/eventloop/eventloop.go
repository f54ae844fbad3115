package eventloop

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/mqspool/mqspool/internal/bufstack"
	"github.com/mqspool/mqspool/internal/state"
)

// ErrClosed is returned by [Loop.Poll] once the loop has ended: after
// [Loop.Shutdown] completed, after [Loop.Close], or with [ReconnectNever]
// once the connection ended.
var ErrClosed = errors.New("event loop is closed")

// Loop is a reconnecting MQTT 5 client that publishes the requests of a
// [Source]. Create it with [New] and drive it with [Loop.Poll].
type Loop struct {
	opts    Options
	src     Source
	codec   codec
	log     *slog.Logger
	clock   Clock
	journal *committer
	stats   statsBox

	// Commands from any goroutine; see commands.go.
	cmdMu      sync.Mutex // guards cmds and cutTimers
	cmds       []command
	cutTimers  []*time.Timer // started by Shutdown, stopped by finish
	cmdKick    chan struct{} // capacity 1: a command is waiting
	shutdownCh chan struct{} // closed by Shutdown, aborts a connect
	shutdownMu sync.Once
	closeCh    chan struct{} // closed by Close
	closeOnce  sync.Once
	pollMu     sync.Mutex // held while Poll runs, so Close waits for it
	// wire is the connection in use, for Shutdown to end a write that
	// blocks Poll.
	wire atomic.Pointer[connection]
	// For [Incoming.Redelivered] on other goroutines: liveGen is connGen
	// while connected and 0 offline, latestGen the connGen of the latest
	// connection, and lostGen that of the latest one that began without
	// the broker's session.
	liveGen, latestGen, lostGen atomic.Uint64

	// Everything below is owned by the goroutine that runs Poll.
	st          *state.State
	flights     idTable[*flight] // open outgoing flows, by packet identifier
	freeFlights []*flight        // ended flights, for reuse by newFlight
	events      []Event          // ready for Poll to return, from eventsRead on
	writes      []pendingWrite   // packets and events waiting for the journal
	spare       *bufstack.Stack  // written packet buffers, for the next PUBLISH
	eventsRead  int              // events returned by Poll
	writesArray []pendingWrite   // the whole array that writes is a part of
	encoding    publishPacket    // publishNew's packet, kept to save an allocation
	// batchIndexes and batchBufs are writeDueBatch's slices, kept for reuse.
	batchIndexes []int
	batchBufs    net.Buffers
	closed       bool
	finishing    bool  // finish is running; nothing may start it again
	failure      error // returned once by Poll before ErrClosed

	conn       *connection // nil while offline
	connGen    uint64
	receiveMax int
	isolation  isolation  // see isolate.go
	closes     closeWatch // see takeover.go
	everUp     bool
	session    bool // a session exists on the broker for this client
	// willFits holds, per broker URL, what CONNACK rejections showed that
	// broker does not support in the Will message (see fitWill).
	willFits map[string]willFit
	// shortSession is the session expiry that the last CONNACK set below
	// the configured one, while sessionShortened is set, so that each
	// shortening is logged once.
	shortSession     time.Duration
	sessionShortened bool

	onWire   idTable[uint64]       // packet identifier -> ack tick when written, plus 1
	birthIDs map[uint16]bool       // Birth publishes awaiting PUBACK
	subIDs   map[uint16]subRequest // SUBSCRIBE and UNSUBSCRIBE awaiting their ack
	// subSession is the set of subscriptions the broker's session is known to contain.
	subSession  []Subscription
	subRejected []SubscriptionError // refusals on the current connection
	resend      []uint16            // flows to resend on this connection, in order
	replay      []uint64            // messages to publish again as new, in order
	retries     []retry             // transient rejections waiting for their delay
	// retryAttempts counts transient rejections per message, for the delay.
	retryAttempts map[uint64]int
	held          *Request // taken from the source, not yet sent
	replayed      bool     // the last request from nextRequest came from replay
	srcEmpty      bool     // Next returned ok false; wait for Ready
	// reported holds the QoS 2 messages that were past PUBREC, and so
	// reported delivered, when a lost session queued them for a new
	// publish. Their next outcome is not reported again.
	reported map[uint64]struct{}

	// incomingWaiting maps the QoS 2 packet identifiers given to the
	// caller and not released to their flow.
	incomingWaiting map[uint16]waitingFlow
	incomingFlows   uint64
	unknownPubrels  int // PUBREL packets for no stored flow on this connection
	// incomingHeld and incomingBytes count the QoS 1 and 2 messages of
	// every connection that the caller has not released, and their size.
	// incomingOpen counts those of this connection. incomingDropped counts
	// the messages of this connection dropped over MaxIncoming or
	// MaxIncomingBytes.
	incomingHeld    int
	incomingBytes   int
	incomingOpen    int
	incomingDropped int
	// droppedTopics are the topics of the messages dropped on this
	// connection. Later messages on them are dropped too, so that none is
	// stored before a dropped one comes back. dropAll replaces the
	// set once it has maxDroppedTopics entries.
	droppedTopics map[string]struct{}
	dropAll       bool

	backoff       *backoff
	retryBackoff  *backoff
	urlIndex      int
	connectNow    bool
	manualOffline bool
	// commitFailing is set while the journal fails to commit. The loop
	// stays offline meanwhile, since every packet it would write waits
	// for a commit.
	commitFailing bool
	paused        bool
	draining      bool
	birthPending  bool // the birth message waits for the resends to go out

	keepAlive    keepAlive
	reconnect    timer // backoff before the next connect
	stable       timer // fires once a connection has lasted stableAfter
	ackTick      timer // ticks ackTicksPerTimeout times per ack timeout
	ackTicks     uint64
	throttleWait timer
	retryTimer   timer
	drain        timer

	msgLimit  *rate.Limiter // nil: unlimited
	byteLimit *rate.Limiter // nil: unlimited
}

// flight is the in-memory part of an open outgoing flow.
type flight struct {
	seq       uint64
	qos       byte
	written   bool      // the PUBLISH reached a socket at least once
	firstSent time.Time // for Outcome.Latency; zero for restored flows
}

// retry is a message rejected with a transient reason code, published again
// as a new message once due.
type retry struct {
	seq uint64
	due time.Time
}

// New returns a loop that publishes the requests of src, journals session
// changes to journal and resumes from restored, which may be nil. Without a
// restored session the first CONNECT uses Clean Start 1.
func New(opts Options, src Source, journal Journal, restored *state.State) (*Loop, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if src == nil || journal == nil {
		return nil, errors.New("event loop needs a source and a journal: pass non-nil values")
	}
	st := &state.State{}
	if restored != nil {
		st = restored.Clone()
	}
	l := &Loop{
		opts: opts, src: src, codec: mqtt5Codec{}, log: opts.Logger, clock: opts.Clock,
		spare:   bufstack.New(spareMinCap, spareMaxCap, spareMaxTotal),
		cmdKick: make(chan struct{}, 1), shutdownCh: make(chan struct{}), closeCh: make(chan struct{}),
		st: st, session: st.Session,
		birthIDs: make(map[uint16]bool), subIDs: make(map[uint16]subRequest),
		subSession:      slices.Clone(opts.SessionSubscriptions),
		incomingWaiting: make(map[uint16]waitingFlow), retryAttempts: make(map[uint64]int),
		reported:     make(map[uint64]struct{}),
		backoff:      newBackoff(opts.MinDelay, opts.MaxDelay),
		retryBackoff: newBackoff(opts.MinDelay, opts.MaxDelay),
		connectNow:   true,
		keepAlive:    newKeepAlive(opts.Clock),
	}
	for _, t := range []*timer{&l.reconnect, &l.stable, &l.ackTick, &l.throttleWait, &l.retryTimer, &l.drain} {
		t.clock = opts.Clock
	}
	for _, f := range st.Outgoing {
		l.flights.set(f.PacketID, l.newFlight(flight{seq: f.Seq, qos: f.QoS, written: true}))
	}
	l.setThrottle(opts.MessagesPerSecond, opts.BytesPerSecond)
	l.stats.update(func(s *Stats) { s.MessagesPerSecond, s.BytesPerSecond = opts.MessagesPerSecond, opts.BytesPerSecond })
	l.journal = newCommitter(journal)
	return l, nil
}

// Poll runs the loop until the next event and returns it. It returns
// ErrClosed once the loop has ended, and ctx.Err() when ctx is done, in
// which case Poll may be called again and the loop resumes where it was.
// A connect attempt that ctx interrupts is abandoned, and the next Poll
// starts a new one at once. Poll must not be called from two goroutines at
// once.
func (l *Loop) Poll(ctx context.Context) (Event, error) {
	l.pollMu.Lock()
	defer l.pollMu.Unlock()
	for {
		if l.eventsRead < len(l.events) {
			return l.nextEvent(), nil
		}
		if l.closed {
			if err := l.failure; err != nil {
				l.failure = nil
				return Event{}, err
			}
			return Event{}, ErrClosed
		}
		if err := ctx.Err(); err != nil {
			return Event{}, err
		}
		l.step(ctx)
	}
}

// nextEvent returns the oldest event not yet returned. Poll returns every
// event before the next step, so the slice is emptied for reuse then.
func (l *Loop) nextEvent() Event {
	ev := l.events[l.eventsRead]
	l.events[l.eventsRead] = Event{}
	l.eventsRead++
	if l.eventsRead == len(l.events) {
		l.events, l.eventsRead = l.events[:0], 0
	}
	return ev
}

// step does one round of work: commands, journal progress, then either a
// connect attempt or one wait on everything that can happen.
func (l *Loop) step(ctx context.Context) {
	l.runCommands()
	l.flushWrites()
	switch {
	case l.closed || len(l.events) > 0:
	case l.conn == nil:
		l.stepOffline(ctx)
	default:
		l.stepOnline(ctx)
	}
}

// State returns a copy of the session state. Call it from the goroutine
// that runs Poll, or after Poll returned ErrClosed.
func (l *Loop) State() *state.State { return l.st.Clone() }

// Stats returns a snapshot of counters and connection status. It is safe
// to call from any goroutine.
func (l *Loop) Stats() Stats { return l.stats.get() }

// Close ends the loop at once: it closes the connection without
// DISCONNECT, so the broker publishes the will, commits pending journal
// changes and stops every goroutine the loop started. It is safe to call
// from any goroutine and more than once.
func (l *Loop) Close() error {
	l.closeOnce.Do(func() { close(l.closeCh) })
	l.pollMu.Lock()
	defer l.pollMu.Unlock()
	if !l.closed {
		l.finish()
	}
	return nil
}

// finish closes the connection, commits what is pending and marks the
// loop closed. Events that waited for the last commit are still returned.
func (l *Loop) finish() {
	if l.finishing {
		return
	}
	l.finishing = true
	if l.conn != nil {
		l.closeConn(nil)
	}
	for _, t := range []*timer{&l.reconnect, &l.stable, &l.ackTick, &l.throttleWait, &l.retryTimer, &l.drain} {
		t.stop()
	}
	l.stopCutTimers()
	l.drainJournal()
	l.journal.stop()
	l.closed = true
	l.log.Info("event loop stopped", "outgoing_flows", len(l.st.Outgoing))
}

// drainJournal waits until every queued item has run. Offline, their
// packets are skipped, and the changes they record are committed too.
func (l *Loop) drainJournal() {
	for len(l.writes) > 0 {
		if _, _, err := l.journal.progress(); err != nil {
			l.writes = nil
			return
		}
		l.flushWrites()
		if len(l.writes) > 0 {
			<-l.journal.done
		}
	}
}

// fail ends the loop with err, which Poll returns once before ErrClosed.
func (l *Loop) fail(err error) {
	if l.failure == nil {
		l.failure = err
	}
	l.stats.update(func(s *Stats) { s.LastError = err.Error() })
	l.finish()
}

// window returns how many QoS 1 and QoS 2 packets may be outstanding.
func (l *Loop) window() int {
	if l.isolation.active {
		return 1
	}
	return l.fullWindow()
}

// fullWindow returns the window outside isolation.
func (l *Loop) fullWindow() int { return min(l.opts.MaxInflight, l.receiveMax) }

// inflight counts the packets that use the broker's receive quota.
func (l *Loop) inflight() int { return l.onWire.len() + len(l.birthIDs) }

// emit queues an event for Poll.
func (l *Loop) emit(ev Event) { l.events = append(l.events, ev) }

// emitOutcome queues an acknowledgement event and counts it. A message
// that was already reported delivered gets no second outcome.
func (l *Loop) emitOutcome(o Outcome) {
	if _, ok := l.reported[o.Seq]; ok {
		delete(l.reported, o.Seq)
		if o.Kind != Delivered {
			l.log.Warn("message reported delivered at PUBREC, then lost with the broker's session, did not go out again",
				"seq", o.Seq, "outcome", o.Kind.String(), "reason", o.Reason)
		}
		return
	}
	l.stats.update(func(s *Stats) {
		switch o.Kind {
		case Delivered:
			s.Acked++
		case Failed:
			s.Failed++
		case Expired:
			s.Expired++
		case Dropped:
			s.Dropped++
		}
	})
	l.emit(Event{Kind: EventAcknowledged, Outcome: o})
}

// packetIDInUse reports identifiers held outside the session state.
func (l *Loop) packetIDInUse(id uint16) bool {
	_, sub := l.subIDs[id]
	return l.birthIDs[id] || sub
}

// allocate takes a packet identifier that nothing outstanding uses.
func (l *Loop) allocate() (uint16, error) {
	id, err := l.st.AllocatePacketID(l.packetIDInUse)
	if err != nil {
		return 0, fmt.Errorf("allocate packet identifier: %w", err)
	}
	return id, nil
}

// record queues changes for the journal and applies them to the state at
// once. It returns the ticket that is durable once all of them are.
func (l *Loop) record(changes ...state.Change) uint64 {
	for _, c := range changes {
		if err := l.st.Apply(c); err != nil {
			// The loop only builds changes that apply; this is a bug.
			l.log.Error("session change does not apply", "change", c.Kind.String(), "packet_id", c.PacketID, "seq", c.Seq, "err", err)
		}
	}
	return l.journal.add(changes...)
}

// sortedFlows returns the open flows in send order.
func (l *Loop) sortedFlows() []state.Flow {
	flows := slices.Clone(l.st.Outgoing)
	slices.SortFunc(flows, func(a, b state.Flow) int { return compareUint64(a.Order, b.Order) })
	return flows
}

func compareUint64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
