package eventloop

import (
	"errors"
	"math"
	"time"

	"golang.org/x/time/rate"
)

// errDisconnectRequested is the cause reported when [Loop.Disconnect] or
// [Loop.Reconnect] ends a connection.
var errDisconnectRequested = errors.New("disconnected on request")

type commandKind int

const (
	cmdPause commandKind = iota + 1
	cmdResume
	cmdThrottle
	cmdReconnect
	cmdDisconnect
	cmdShutdown
	cmdRelease
	cmdDecline
)

// command is a request from another goroutine, run by Poll.
type command struct {
	kind          commandKind
	drain         time.Duration
	msgRate       float64
	byteRate      float64
	packetID      uint16
	qos           byte
	connectionGen uint64
	size          int    // of an incoming message, for cmdRelease and cmdDecline
	flow          uint64 // of an incoming QoS 2 message, for cmdRelease and cmdDecline
	topic         string // of an incoming message, for cmdDecline
	afterWrites   bool   // a reconnect that waited for the queued writes
}

// Pause stops taking requests from the source. The connection stays up and
// keep alive continues; resends after a reconnect still go out.
func (l *Loop) Pause() {
	l.sendShown(command{kind: cmdPause}, func(s *Stats) { s.Paused = true })
}

// Resume takes requests again after [Loop.Pause].
func (l *Loop) Resume() {
	l.sendShown(command{kind: cmdResume}, func(s *Stats) { s.Paused = false })
}

// SetThrottle limits publishing to messagesPerSecond and bytesPerSecond,
// counted with [message.Message.Size]. Zero means unlimited.
func (l *Loop) SetThrottle(messagesPerSecond, bytesPerSecond float64) {
	l.sendShown(command{kind: cmdThrottle, msgRate: messagesPerSecond, byteRate: bytesPerSecond}, func(s *Stats) {
		s.MessagesPerSecond, s.BytesPerSecond = messagesPerSecond, bytesPerSecond
	})
}

// Reconnect ends the current connection with DISCONNECT and connects again
// at once; while offline it ends any backoff wait.
func (l *Loop) Reconnect() { l.send(command{kind: cmdReconnect}) }

// Disconnect sends DISCONNECT and stays offline until [Loop.Reconnect].
func (l *Loop) Disconnect() { l.send(command{kind: cmdDisconnect}) }

// Shutdown stops taking requests, waits up to drain for outstanding
// acknowledgements, sends DISCONNECT with reason 0x00 and ends the loop, so
// Poll returns ErrClosed. A connect in progress is abandoned. A write that
// still blocks Poll when drain has passed, on a broker that stopped
// reading, is ended then, so the loop can see the command. It is safe from
// any goroutine, also while Poll runs.
func (l *Loop) Shutdown(drain time.Duration) {
	l.shutdownMu.Do(func() { close(l.shutdownCh) })
	l.send(command{kind: cmdShutdown, drain: drain})

	// The loop arms its own drain deadline when it runs the command, and
	// ends the drain with DISCONNECT. The cut comes a little later, so it
	// only ends a write that holds the loop past that deadline. It uses a
	// real timer because the socket deadline it sets is real time too.
	after := drain
	if drain > 0 {
		after += cutWritesGrace
	}
	t := time.AfterFunc(after, func() {
		if c := l.wire.Load(); c != nil {
			c.cutWrites()
		}
	})
	l.cmdMu.Lock()
	l.cutTimers = append(l.cutTimers, t)
	l.cmdMu.Unlock()
}

// cutWritesGrace is how long after the drain deadline Shutdown ends a
// blocked write.
const cutWritesGrace = 250 * time.Millisecond

// stopCutTimers stops the timers that Shutdown started.
func (l *Loop) stopCutTimers() {
	l.cmdMu.Lock()
	defer l.cmdMu.Unlock()
	for _, t := range l.cutTimers {
		t.Stop()
	}
	l.cutTimers = nil
}

// send queues a command without blocking and wakes Poll.
func (l *Loop) send(c command) {
	l.cmdMu.Lock()
	l.cmds = append(l.cmds, c)
	l.cmdMu.Unlock()
	notify(l.cmdKick)
}

// sendShown queues c like send and shows its effect in [Loop.Stats] at
// once. The loop runs commands between its steps, so c may wait for a
// connect attempt of up to ConnectTimeout, during which nothing is
// published. Without this, status would report the old value meanwhile.
// The stats change under cmdMu, so they follow the order of the queue.
func (l *Loop) sendShown(c command, show func(s *Stats)) {
	l.cmdMu.Lock()
	l.cmds = append(l.cmds, c)
	l.stats.update(show)
	l.cmdMu.Unlock()
	notify(l.cmdKick)
}

// runCommands runs every queued command in order.
func (l *Loop) runCommands() {
	l.cmdMu.Lock()
	cmds := l.cmds
	l.cmds = nil
	l.cmdMu.Unlock()
	for _, c := range cmds {
		if l.closed {
			return
		}
		l.run(c)
	}
}

func (l *Loop) run(c command) {
	switch c.kind {
	case cmdPause:
		l.paused = true
		l.log.Info("publishing paused")
	case cmdResume:
		l.paused = false
		l.log.Info("publishing resumed")
	case cmdThrottle:
		l.setThrottle(c.msgRate, c.byteRate)
		l.log.Info("throttle set", "messages_per_second", c.msgRate, "bytes_per_second", c.byteRate)
	case cmdReconnect:
		// A reconnect the loop asked for itself names its connection,
		// which may have ended since. No reconnect runs while draining,
		// because it would end the drain at once.
		switch {
		case l.draining:
			if c.connectionGen == 0 {
				l.log.Info("reconnect ignored while shutting down")
			}
		case c.connectionGen == 0:
			l.runReconnect()
		case c.connectionGen == l.connGen && l.conn != nil:
			l.reconnectAfterWrites(c)
		}
	case cmdDisconnect:
		l.manualOffline = true
		l.reconnect.stop()
		if l.conn != nil {
			l.dropConnection(errDisconnectRequested, true)
		}
	case cmdShutdown:
		l.startShutdown(c.drain)
	case cmdRelease:
		l.releaseIncoming(c)
	case cmdDecline:
		l.declineIncoming(c)
	}
}

// reconnectAfterWrites reconnects for the loop itself once the writes
// queued so far have gone out. A PUBCOMP still waiting for its commit
// would otherwise be lost with the connection, and the broker would send
// its PUBREL again on the next one.
func (l *Loop) reconnectAfterWrites(c command) {
	if c.afterWrites {
		l.runReconnect()
		return
	}
	c.afterWrites = true
	l.queueWrite(nil, func(bool) { l.send(c) })
}

func (l *Loop) runReconnect() {
	l.manualOffline = false
	l.reconnect.stop()
	l.connectNow = true
	if l.conn != nil {
		l.dropConnection(errDisconnectRequested, true)
		l.reconnect.stop()
		l.connectNow = true
	}
}

// startShutdown stops intake and arms the drain deadline. Offline, there
// is nothing to wait for.
func (l *Loop) startShutdown(drain time.Duration) {
	if l.draining {
		return
	}
	l.draining = true
	l.log.Info("shutting down", "drain_ms", drain.Milliseconds(), "inflight", l.inflight())
	if l.conn == nil {
		l.finish()
		return
	}
	l.drain.arm(drain)
}

// setThrottle replaces the limiters. The burst is a quarter of a second's
// worth: over 3 s the loop sends at most 8% more than the rate, and it can
// make up for a wake-up that came up to 250 ms late.
func (l *Loop) setThrottle(msgRate, byteRate float64) {
	l.msgLimit, l.byteLimit = nil, nil
	if msgRate > 0 {
		l.msgLimit = rate.NewLimiter(rate.Limit(msgRate), burstFor(msgRate))
	}
	if byteRate > 0 {
		l.byteLimit = rate.NewLimiter(rate.Limit(byteRate), burstFor(byteRate))
	}
	l.throttleWait.stop()
}

func burstFor(r float64) int {
	return int(math.Max(1, math.Min(math.Ceil(r/4), math.MaxInt32)))
}
