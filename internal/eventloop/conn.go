package eventloop

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// connection is one network connection after CONNACK. Its reader goroutine
// decodes packets and hands them to Poll; it ends when the connection is
// closed.
type connection struct {
	netConn      net.Conn
	url          string
	gen          uint64
	limits       *connackPacket
	keepAlive    time.Duration
	writeTimeout time.Duration
	// cut is set by a shutdown whose drain ran out: it ends the write in
	// progress and bounds the later ones by disconnectWriteTimeout.
	cut     atomic.Bool
	writing atomic.Bool // a write is in progress

	packets chan *inbound // decoded packets in arrival order, read by Poll
	spare   chan *inbound // batches that Poll handled, for the reader's reuse
	readErr chan error    // capacity 1: why reading stopped
	done    chan struct{} // closed by close
	wg      sync.WaitGroup
	once    sync.Once
}

// readBatchMax bounds the packets the reader hands over at once.
const readBatchMax = 128

// inbound is the batch of packets of one read. Acknowledgements, the
// packets that arrive for every message, are decoded into acks, so that
// reading them allocates nothing. packets lists every packet in arrival
// order, acknowledgements as pointers into acks. A batch is reused once
// Poll handled it, so nothing may keep a pointer into acks.
type inbound struct {
	acks    [readBatchMax]ackPacket
	packets []packet
}

// nextBatch returns an empty batch, one that Poll gave back if there is
// one.
func (c *connection) nextBatch() *inbound {
	select {
	case b := <-c.spare:
		b.packets = b.packets[:0]
		return b
	default:
		return &inbound{packets: make([]packet, 0, readBatchMax)}
	}
}

// recycle gives a handled batch back to the reader.
func (c *connection) recycle(b *inbound) {
	clear(b.packets) // drop references to other packets
	select {
	case c.spare <- b:
	default:
	}
}

// startReader starts the goroutine that reads packets from br. It waits
// for one packet, then also decodes the packets already complete in br's
// buffer, and hands them over together. Under load the broker's
// acknowledgements arrive many to a read, so the loop runs one select
// per read instead of one per packet.
func (c *connection) startReader(cd codec, br *bufio.Reader) {
	c.packets = make(chan *inbound)
	c.spare = make(chan *inbound, 2)
	c.readErr = make(chan error, 1)
	c.done = make(chan struct{})
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		for {
			batch := c.nextBatch()
			err := readBatch(cd, br, batch)
			if len(batch.packets) > 0 {
				select {
				case c.packets <- batch:
				case <-c.done:
					return
				}
			}
			if err != nil {
				c.readErr <- err
				return
			}
		}
	}()
}

// readBatch decodes one packet into b, waiting for it, and then those that
// br has buffered completely, up to readBatchMax. The packets decoded
// before an error stay in b.
func readBatch(cd codec, br *bufio.Reader, b *inbound) error {
	for len(b.packets) < readBatchMax && (len(b.packets) == 0 || packetBuffered(br)) {
		p, err := cd.decodeInto(br, &b.acks[len(b.packets)])
		if err != nil {
			return err
		}
		b.packets = append(b.packets, p)
	}
	return nil
}

// packetBuffered reports whether br's buffer contains a whole packet, so that
// decoding it will not wait for the network.
func packetBuffered(br *bufio.Reader) bool {
	n := br.Buffered()
	if n < 2 {
		return false
	}
	header, _ := br.Peek(min(n, 5))
	length, multiplier := 0, 1
	for i := 1; i < len(header); i++ {
		length += int(header[i]&0x7f) * multiplier
		if header[i]&0x80 == 0 {
			return 1+i+length <= n
		}
		multiplier *= 128
	}
	return false
}

// close closes the socket and waits for the reader goroutine to end.
func (c *connection) close() {
	c.once.Do(func() {
		close(c.done)
		c.netConn.Close()
		c.wg.Wait()
	})
}

// write writes b with a deadline, so a full send buffer ends the
// connection instead of stalling the loop.
func (c *connection) write(b []byte) error {
	c.writing.Store(true)
	defer c.writing.Store(false)
	if err := c.armWrite(); err != nil {
		return err
	}
	_, err := c.netConn.Write(b)
	return err
}

// writeBuffers writes bufs in order with one deadline, as one writev(2) on
// a TCP connection. It returns the number of bytes written.
func (c *connection) writeBuffers(bufs net.Buffers) (int64, error) {
	c.writing.Store(true)
	defer c.writing.Store(false)
	if err := c.armWrite(); err != nil {
		return 0, err
	}
	return bufs.WriteTo(c.netConn)
}

// armWrite sets the deadline of the write about to start. A cutWrites
// that runs meanwhile may set its deadline before this one, so cut is
// read again afterwards. Since writing was set first, either that read
// finds the cut, or cutWrites finds the write and sets its deadline last.
func (c *connection) armWrite() error {
	timeout := c.writeTimeout
	if c.cut.Load() {
		timeout = min(timeout, disconnectWriteTimeout)
	}
	if err := c.netConn.SetWriteDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	if c.cut.Load() && timeout > disconnectWriteTimeout {
		return c.netConn.SetWriteDeadline(time.Now().Add(disconnectWriteTimeout))
	}
	return nil
}

// cutWrites ends a write blocked on a full send buffer and shortens the
// deadline of later ones, such as the DISCONNECT. It is safe from any
// goroutine.
func (c *connection) cutWrites() {
	c.cut.Store(true)
	if c.writing.Load() {
		// For a dialled socket this fails only once it is closed (see
		// internal/poll's setDeadlineImpl), and then the write has ended too.
		_ = c.netConn.SetWriteDeadline(time.Now())
	}
}

// pendingWrite is a packet, an action, or both, that waits until the
// journal made ticket durable. Items run in the order they were queued.
type pendingWrite struct {
	ticket uint64
	gen    uint64 // connection the packet belongs to
	data   []byte // nil: no packet
	// flow is the packet identifier of the QoS 1 or 2 PUBLISH in data,
	// or zero. Once data is written, the flight of flow is marked as
	// sent, if it still belongs to message flowSeq.
	flow    uint16
	flowSeq uint64
	// qos0Seq is the message of the QoS 0 PUBLISH in data, or zero.
	qos0Seq uint64
	// outcome is emitted once the item is due, unless its Kind is zero.
	outcome Outcome
	// after runs once the item is due. written reports whether data
	// reached the socket; it is false when the connection ended first.
	// The fields above cover the packets of every message, so that they
	// need no function value each.
	after func(written bool)

	// batched is set by writeDueBatch when data went out in a batch, and
	// batchErr when the batch write failed before all of data went out.
	batched  bool
	batchErr error
}

// queueWrite writes data after every change recorded so far is durable, on
// the current connection only. after may be nil.
func (l *Loop) queueWrite(data []byte, after func(written bool)) {
	l.enqueue(pendingWrite{data: data, after: after})
}

// queuePublish writes data, the QoS 1 or 2 PUBLISH of flow id for
// message seq, like queueWrite, and marks the flight as sent once it is
// written.
func (l *Loop) queuePublish(data []byte, id uint16, seq uint64) {
	l.enqueue(pendingWrite{data: data, flow: id, flowSeq: seq})
}

// emitAfterCommit emits o once every change recorded so far is durable.
func (l *Loop) emitAfterCommit(o Outcome) {
	l.enqueue(pendingWrite{outcome: o})
}

// enqueue runs w at once when nothing waits, and otherwise queues it
// behind the changes recorded so far.
func (l *Loop) enqueue(w pendingWrite) {
	queued, committed, _ := l.journal.progress()
	if len(l.writes) == 0 && queued == committed {
		written := l.writeNow(w.data)
		l.spare.Put(w.data)
		l.completeWrite(w, written)
		return
	}
	w.ticket, w.gen = queued, l.connGen
	l.pushWrite(w)
}

// completeWrite runs what a due item does after its packet, if any, was
// written or given up.
func (l *Loop) completeWrite(w pendingWrite, written bool) {
	if w.flow != 0 && written {
		if fl := l.flights.get(w.flow); fl != nil && fl.seq == w.flowSeq {
			fl.written = true
		}
		l.noteIsolatedWrite(w.flow)
		l.stats.update(func(s *Stats) { s.Published++ })
	}
	if w.qos0Seq != 0 {
		if written {
			l.noteIsolatedWrite(0)
		}
		l.qos0Done(w.qos0Seq, written)
	}
	if w.outcome.Kind != 0 {
		l.emitOutcome(w.outcome)
	}
	if w.after != nil {
		w.after(written)
	}
}

// pushWrite appends w to l.writes. flushWrites takes items off the front,
// so when the array is full but its front is mostly free, the queue moves
// back to the start of the array. Otherwise it moves to an array of twice
// its length, so the next move back has room.
func (l *Loop) pushWrite(w pendingWrite) {
	if len(l.writes) == cap(l.writes) {
		if cap(l.writesArray) > 0 && len(l.writes) <= cap(l.writesArray)/2 {
			n := copy(l.writesArray[:cap(l.writesArray)], l.writes)
			clear(l.writesArray[n:cap(l.writesArray)])
			l.writes = l.writesArray[:n]
		} else {
			l.writes = slices.Grow(l.writes, len(l.writes)+1)
			l.writesArray = l.writes
		}
	}
	l.writes = append(l.writes, w)
}

// Bounds of the written packet buffers kept for the next packet: a
// drain keeps about one per packet waiting for a commit, and a rare large
// message is not kept.
const (
	spareMinCap   = 256
	spareMaxCap   = 64 << 10
	spareMaxTotal = 4 << 20
)

// packetBuffer returns an empty buffer for a packet that is written and
// then given back to l.spare. A new one is large enough to be kept.
func (l *Loop) packetBuffer() []byte {
	if buf := l.spare.Get(); buf != nil {
		return buf
	}
	return make([]byte, 0, spareMinCap)
}

// flushWrites runs the queued items whose changes are durable. A journal
// error ends the loop, because state it cannot persist must not reach the
// wire.
func (l *Loop) flushWrites() {
	_, committed, err := l.journal.progress()
	if err != nil {
		if !l.finishing {
			l.commitFailed(err)
		}
		return
	}
	if l.commitFailing {
		l.commitRecovered()
	}
	l.writeDueBatch(committed)
	for len(l.writes) > 0 && l.writes[0].ticket <= committed {
		w := l.writes[0]
		l.writes[0] = pendingWrite{}
		l.writes = l.writes[1:]
		written := w.batched
		switch {
		case w.batchErr != nil:
			if l.conn != nil && w.gen == l.connGen {
				l.dropConnection(fmt.Errorf("write to broker: %w", w.batchErr), false)
			}
		case !written && w.data != nil && l.conn != nil && w.gen == l.connGen:
			written = l.writeNow(w.data)
		}
		l.spare.Put(w.data)
		l.completeWrite(w, written)
	}
}

// commitFailed takes the loop offline while the journal cannot commit,
// as on a full disk. The committer tries the same changes again every
// commitRetryDelay, and nothing waiting for them is written meanwhile.
// Ending the loop instead would make a restart resend every message in
// flight, again and again while the disk stays full.
func (l *Loop) commitFailed(err error) {
	if !l.commitFailing {
		l.commitFailing = true
		l.log.Error("session changes cannot be committed: disconnecting until a retry succeeds; "+
			"free space on the spool database's file system if it is full",
			"err", err, "retry_every", commitRetryDelay)
	}
	cause := fmt.Errorf("%w: %w", errCommitFailing, err)
	l.stats.update(func(s *Stats) { s.LastError = cause.Error() })
	if l.conn != nil {
		l.dropConnection(cause, false)
	}
}

// errCommitFailing ends a connection while the journal fails.
var errCommitFailing = errors.New("commit of session changes failed")

// commitRecovered brings the loop back online after commits failed.
func (l *Loop) commitRecovered() {
	l.commitFailing = false
	l.log.Info("session changes committed again")
	if l.conn == nil && !l.manualOffline {
		l.reconnect.stop()
		l.connectNow = true
	}
}

// writeDueBatch writes the packets of the due items in l.writes, those of
// the current connection whose ticket is at most committed, in one
// write with one deadline, and marks each item it wrote completely as
// batched. flushWrites then runs the items in order as before. After a
// failed write it marks the first packet not written completely with the
// error, so that flushWrites drops the connection at that item, and writes
// nothing of the items after it.
func (l *Loop) writeDueBatch(committed uint64) {
	if l.conn == nil {
		return
	}
	indexes, bufs := l.batchIndexes[:0], l.batchBufs[:0]
	for i := 0; i < len(l.writes) && l.writes[i].ticket <= committed; i++ {
		w := &l.writes[i]
		if w.data != nil && w.gen == l.connGen {
			indexes = append(indexes, i)
			bufs = append(bufs, w.data)
		}
	}
	l.batchIndexes, l.batchBufs = indexes, bufs
	if len(bufs) < 2 {
		return // flushWrites writes a single packet as before
	}

	n, err := l.conn.writeBuffers(bufs)
	clear(bufs) // drop the references, so the written buffers can be reused
	for _, i := range indexes {
		w := &l.writes[i]
		if n < int64(len(w.data)) {
			if err == nil {
				err = io.ErrShortWrite
			}
			w.batchErr = err
			break
		}
		n -= int64(len(w.data))
		w.batched = true
	}
	if l.writes[indexes[0]].batched {
		l.keepAlive.sent()
	}
}

// writeNow writes data on the current connection and reports success. A
// failed write ends the connection.
func (l *Loop) writeNow(data []byte) bool {
	if data == nil {
		return true
	}
	if l.conn == nil {
		return false
	}
	if err := l.conn.write(data); err != nil {
		l.dropConnection(fmt.Errorf("write to broker: %w", err), false)
		return false
	}
	l.keepAlive.sent()
	return true
}

// writePacket encodes p and writes it at once, ahead of queued writes. It
// is for packets that depend on no journal change.
func (l *Loop) writePacket(p packet) bool {
	data, err := l.codec.encode(p)
	if err != nil {
		l.log.Error("encode packet", "packet", p.packetName(), "err", err)
		return false
	}
	return l.writeNow(data)
}

// disconnectWriteTimeout bounds the write of a DISCONNECT.
const disconnectWriteTimeout = 500 * time.Millisecond

// closeConn closes the connection, sending DISCONNECT with reason first
// when reason is not nil.
func (l *Loop) closeConn(reason *byte) {
	c := l.conn
	l.wire.Store(nil)
	l.liveGen.Store(0)
	if reason != nil {
		// DISCONNECT is a courtesy: a full send buffer must not hold a
		// shutdown past its drain deadline for a whole keep alive period.
		c.writeTimeout = min(c.writeTimeout, disconnectWriteTimeout)
		l.writePacket(&disconnectPacket{ReasonCode: *reason})
	}
	c.close()
	l.conn = nil
	l.keepAlive.stop()
	l.ackTick.stop()
	l.stable.stop()
	l.drain.stop()
	l.throttleWait.stop()
	l.onWire.clear()
	clear(l.birthIDs)
	clear(l.subIDs)
	l.resend = nil
	l.stats.update(func(s *Stats) { s.Connected, s.Inflight = false, 0 })
}

// dropConnection ends the current connection because of cause, reports it
// and plans what comes next under the reconnect policy. With graceful it
// sends DISCONNECT 0x00 first, so the broker discards the will. A cause
// that wraps a protocolError sends DISCONNECT with its reason code first,
// so the broker's log shows why the client left (MQTT 5.0 section 4.13).
func (l *Loop) dropConnection(cause error, graceful bool) {
	if l.conn == nil {
		return
	}
	url := l.conn.url
	strike := l.noteConnectionEnd(cause)
	if !strike {
		// An end that isolation counts against a message is no sign of
		// another client with the same client id.
		l.watchCloses(cause)
	}
	var reason *byte
	var violation *protocolError
	switch {
	case graceful:
		normal := byte(0x00)
		reason = &normal
	case errors.As(cause, &violation):
		reason = &violation.code
		cause = fmt.Errorf("%w: sent DISCONNECT with %s", cause, reasonName(violation.code, "disconnect"))
	}
	l.closeConn(reason)
	l.stats.update(func(s *Stats) { s.LastError = cause.Error() })
	l.emit(Event{Kind: EventDisconnected, Err: cause})

	switch {
	case l.draining || l.shutdownRequested():
		// Shutdown may not have run yet when a cut write ended the
		// connection; the loop stops either way.
		l.log.Warn("disconnected while shutting down", "url", url, "err", cause)
		l.finish()
	case l.manualOffline || errors.Is(cause, errDisconnectRequested):
		// Disconnect or Reconnect decides what comes next, under any policy.
		l.log.Info("disconnected", "url", url, "err", cause)
	case l.opts.Reconnect == ReconnectNever:
		l.log.Warn("disconnected, not reconnecting", "url", url, "err", cause)
		l.finish()
	default:
		if strike {
			// The broker took the connection and ended it on one
			// message, so it is up: a short connection is no reason to
			// wait longer before the next try to isolate that message.
			l.backoff.reset()
		}
		delay := l.backoff.next()
		l.log.Warn("disconnected, reconnecting", "url", url, "err", cause, "backoff_ms", delay.Milliseconds())
		l.scheduleReconnect(delay)
	}
}

// shutdownRequested reports whether Shutdown was called, also before the
// loop has run its command.
func (l *Loop) shutdownRequested() bool {
	select {
	case <-l.shutdownCh:
		return true
	default:
		return false
	}
}
