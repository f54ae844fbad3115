package eventloop

import (
	"bufio"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
)

// brokerScript sets how the fake broker behaves. Tests change it with
// fakeBroker.set while a connection runs.
type brokerScript struct {
	connackCode byte
	// connackFor, if set, returns the CONNACK reason code for a CONNECT
	// in place of connackCode.
	connackFor        func(p *packets.Connect) byte
	sessionPresent    func(conn int) bool
	receiveMaximum    uint16
	maximumPacketSize uint32
	serverKeepAlive   *uint16
	sessionExpiry     *uint32
	maximumQoS        *byte
	retainAvailable   *byte
	closeAfterConnack bool
	// closeAfter, unless 0, closes each connection this long after its
	// CONNACK.
	closeAfter time.Duration
	noPingresp bool
	// dropAck returns true to leave a PUBLISH without PUBACK or PUBREC.
	dropAck func(conn int, p *packets.Publish) bool
	// noPubcomp returns true to leave the PUBRELs of a connection
	// without PUBCOMP.
	noPubcomp func(conn int) bool
	// ackCode returns the reason code for PUBACK or PUBREC.
	ackCode func(p *packets.Publish) byte
	// subackCode returns the SUBACK reason code for a filter; nil grants
	// the requested QoS.
	subackCode func(filter string) byte
	// noSubscriptionIDs sends Subscription Identifiers Available 0.
	noSubscriptionIDs bool
	// stallAfterConnack stops reading after CONNACK, so the client's
	// send buffer fills, and keeps the connection open until close.
	stallAfterConnack bool
	// endOn returns true to end the connection on a PUBLISH instead of
	// acknowledging it, after DISCONNECT with code unless code is 0.
	endOn func(p *packets.Publish) (code byte, end bool)
	// resetOnEnd, if it returns true for a connection, makes an end by
	// endOn a reset (linger 0) instead of an orderly close.
	resetOnEnd func(conn int) bool
	// endOnSubscribe, unless 0, ends the connection on a SUBSCRIBE with
	// DISCONNECT of this code.
	endOnSubscribe byte
	// editConnack, if set, changes the CONNACK properties of connection
	// conn after the fields above set them, for values they cannot
	// express, such as Receive Maximum 0.
	editConnack func(conn int, props *packets.Properties)
}

// wirePacket is one packet the fake broker received (fromClient) or sent.
type wirePacket struct {
	conn       int
	fromClient bool
	kind       byte
	id         uint16
	dup        bool
	qos        byte
	retain     bool
	topic      string
	payload    string
	code       byte
	cleanStart bool
	keepAlive  uint16
	willFlag   bool // CONNECT: has a Will message
	willRetain bool
	willQoS    byte
	expiry     *uint32
	filters    []string // SUBSCRIBE and UNSUBSCRIBE
	subID      int      // Subscription Identifier of a SUBSCRIBE; 0: none
	size       int      // bytes on the wire, for packets from the client
	at         time.Time
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// fakeBroker is an in-process MQTT 5 broker on 127.0.0.1 that speaks
// through the paho packets package and records every packet.
type fakeBroker struct {
	t  testing.TB
	ln net.Listener

	mu      sync.Mutex // guards the fields below
	script  brokerScript
	wire    []wirePacket
	conns   []net.Conn
	accepts []time.Time
	wg      sync.WaitGroup
	stop    chan struct{} // closed by close, ends stalled connections
	stopped sync.Once
}

func newFakeBroker(t testing.TB, script brokerScript) *fakeBroker {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	return serveFakeBroker(t, ln, script)
}

// serveFakeBroker runs a fake broker on ln, which may be a TLS listener.
func serveFakeBroker(t testing.TB, ln net.Listener, script brokerScript) *fakeBroker {
	b := &fakeBroker{t: t, ln: ln, script: script, stop: make(chan struct{})}
	b.wg.Add(1)
	go b.accept()
	t.Cleanup(b.close)
	return b
}

func (b *fakeBroker) url() string { return "mqtt://" + b.ln.Addr().String() }

func (b *fakeBroker) set(f func(s *brokerScript)) {
	b.mu.Lock()
	f(&b.script)
	b.mu.Unlock()
}

func (b *fakeBroker) close() {
	b.stopped.Do(func() { close(b.stop) })
	b.ln.Close()
	b.mu.Lock()
	for _, c := range b.conns {
		c.Close()
	}
	b.mu.Unlock()
	b.wg.Wait()
}

// dropConnections closes every open connection from the broker side.
func (b *fakeBroker) dropConnections() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range b.conns {
		c.Close()
	}
}

// shutDown ends every open connection as a broker that stops does: with
// DISCONNECT 0x8B server shutting down, then closing the socket.
func (b *fakeBroker) shutDown() {
	b.mu.Lock()
	conns := slices.Clone(b.conns)
	b.mu.Unlock()
	for n, c := range conns {
		b.send(n, c, &packets.Disconnect{ReasonCode: 0x8B, Properties: &packets.Properties{}})
		c.Close()
	}
}

func (b *fakeBroker) accept() {
	defer b.wg.Done()
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return
		}
		b.mu.Lock()
		n := len(b.conns)
		b.conns = append(b.conns, c)
		b.accepts = append(b.accepts, time.Now())
		b.mu.Unlock()
		b.wg.Add(1)
		go b.serve(n, c)
	}
}

func (b *fakeBroker) serve(n int, c net.Conn) {
	defer b.wg.Done()
	defer c.Close()
	r := &countingReader{r: bufio.NewReader(c)}
	for {
		r.n = 0
		cp, err := packets.ReadPacket(r)
		if err != nil {
			return
		}
		b.recordSized(n, cp, r.n)
		// The client learns the limit from CONNACK, so CONNECT is exempt.
		if (cp.Type != packets.CONNECT && b.tooLarge(n, c, r.n)) || !b.reply(n, c, cp) {
			return
		}
	}
}

// tooLarge ends the connection with DISCONNECT 0x95, as MQTT 5 requires
// of a broker, when a packet of size bytes exceeds the Maximum Packet
// Size of the script, and reports whether it did.
func (b *fakeBroker) tooLarge(n int, c net.Conn, size int) bool {
	b.mu.Lock()
	limit := b.script.maximumPacketSize
	b.mu.Unlock()
	if limit == 0 || size <= int(limit) {
		return false
	}
	b.send(n, c, &packets.Disconnect{ReasonCode: 0x95, Properties: &packets.Properties{}})
	return true
}

// reply responds to one packet and reports whether to keep reading.
func (b *fakeBroker) reply(n int, c net.Conn, cp *packets.ControlPacket) bool {
	b.mu.Lock()
	s := b.script
	b.mu.Unlock()
	switch p := cp.Content.(type) {
	case *packets.Connect:
		if s.connackFor != nil {
			s.connackCode = s.connackFor(p)
		}
		b.send(n, c, b.connack(n, s))
		if s.stallAfterConnack {
			<-b.stop
			return false
		}
		if s.closeAfter > 0 {
			select {
			case <-time.After(s.closeAfter):
			case <-b.stop:
			}
			return false
		}
		return s.connackCode < 0x80 && !s.closeAfterConnack
	case *packets.Publish:
		if s.endOn != nil {
			if code, end := s.endOn(p); end {
				if code != 0 {
					b.send(n, c, &packets.Disconnect{ReasonCode: code, Properties: &packets.Properties{}})
				}
				if s.resetOnEnd != nil && s.resetOnEnd(n) {
					_ = c.(*net.TCPConn).SetLinger(0)
				}
				return false
			}
		}
		if p.QoS == 0 || (s.dropAck != nil && s.dropAck(n, p)) {
			return true
		}
		code := byte(0)
		if s.ackCode != nil {
			code = s.ackCode(p)
		}
		if p.QoS == 1 {
			b.send(n, c, &packets.Puback{PacketID: p.PacketID, ReasonCode: code, Properties: &packets.Properties{}})
		} else {
			b.send(n, c, &packets.Pubrec{PacketID: p.PacketID, ReasonCode: code, Properties: &packets.Properties{}})
		}
	case *packets.Pubrel:
		if s.noPubcomp == nil || !s.noPubcomp(n) {
			b.send(n, c, &packets.Pubcomp{PacketID: p.PacketID, Properties: &packets.Properties{}})
		}
	case *packets.Pingreq:
		if !s.noPingresp {
			b.send(n, c, &packets.Pingresp{})
		}
	case *packets.Subscribe:
		if s.endOnSubscribe != 0 {
			b.send(n, c, &packets.Disconnect{ReasonCode: s.endOnSubscribe, Properties: &packets.Properties{}})
			return false
		}
		codes := make([]byte, len(p.Subscriptions))
		for i, sub := range p.Subscriptions {
			codes[i] = sub.QoS
			if s.subackCode != nil {
				codes[i] = s.subackCode(sub.Topic)
			}
		}
		b.send(n, c, &packets.Suback{PacketID: p.PacketID, Reasons: codes, Properties: &packets.Properties{}})
	case *packets.Unsubscribe:
		codes := make([]byte, len(p.Topics))
		b.send(n, c, &packets.Unsuback{PacketID: p.PacketID, Reasons: codes, Properties: &packets.Properties{}})
	case *packets.Disconnect:
		return false
	}
	return true
}

func (b *fakeBroker) connack(n int, s brokerScript) *packets.Connack {
	props := &packets.Properties{ServerKeepAlive: s.serverKeepAlive, MaximumQOS: s.maximumQoS, RetainAvailable: s.retainAvailable,
		SessionExpiryInterval: s.sessionExpiry}
	if s.receiveMaximum > 0 {
		rm := s.receiveMaximum
		props.ReceiveMaximum = &rm
	}
	if s.maximumPacketSize > 0 {
		mps := s.maximumPacketSize
		props.MaximumPacketSize = &mps
	}
	if s.noSubscriptionIDs {
		off := byte(0)
		props.SubIDAvailable = &off
	}
	if s.editConnack != nil {
		s.editConnack(n, props)
	}
	present := s.sessionPresent != nil && s.sessionPresent(n)
	return &packets.Connack{ReasonCode: s.connackCode, SessionPresent: present, Properties: props}
}

// sendTo writes p on connection n, for packets the test injects.
func (b *fakeBroker) sendTo(n int, p packets.Packet) {
	b.mu.Lock()
	c := b.conns[n]
	b.mu.Unlock()
	b.send(n, c, p)
}

// sendRawTo writes data as it is on connection n, for packets that paho
// cannot encode, such as malformed ones.
func (b *fakeBroker) sendRawTo(n int, data []byte) {
	b.mu.Lock()
	c := b.conns[n]
	b.mu.Unlock()
	c.Write(data)
}

func (b *fakeBroker) send(n int, c net.Conn, p packets.Packet) {
	var cp *packets.ControlPacket
	switch p := p.(type) {
	case *packets.Publish:
		cp = p.ToControlPacket()
	default:
		cp = &packets.ControlPacket{Content: p, FixedHeader: packets.FixedHeader{Type: pahoType(p)}}
		if cp.Type == packets.PUBREL {
			cp.Flags = 2
		}
	}
	b.record(n, false, cp)
	cp.WriteTo(c)
}

func pahoType(p packets.Packet) byte {
	switch p.(type) {
	case *packets.Connack:
		return packets.CONNACK
	case *packets.Puback:
		return packets.PUBACK
	case *packets.Pubrec:
		return packets.PUBREC
	case *packets.Pubrel:
		return packets.PUBREL
	case *packets.Pubcomp:
		return packets.PUBCOMP
	case *packets.Suback:
		return packets.SUBACK
	case *packets.Unsuback:
		return packets.UNSUBACK
	case *packets.Pingresp:
		return packets.PINGRESP
	case *packets.Disconnect:
		return packets.DISCONNECT
	}
	panic("fake broker cannot send this packet")
}

func (b *fakeBroker) record(n int, fromClient bool, cp *packets.ControlPacket) {
	b.recordPacket(wirePacket{conn: n, fromClient: fromClient, kind: cp.Type, id: cp.PacketID(), at: time.Now()}, cp)
}

// recordSized records a packet of size bytes from the client.
func (b *fakeBroker) recordSized(n int, cp *packets.ControlPacket, size int) {
	b.recordPacket(wirePacket{conn: n, fromClient: true, kind: cp.Type, id: cp.PacketID(), size: size, at: time.Now()}, cp)
}

func (b *fakeBroker) recordPacket(w wirePacket, cp *packets.ControlPacket) {
	switch p := cp.Content.(type) {
	case *packets.Connect:
		w.cleanStart, w.keepAlive = p.CleanStart, p.KeepAlive
		w.willFlag, w.willRetain, w.willQoS = p.WillFlag, p.WillRetain, p.WillQOS
	case *packets.Publish:
		w.dup, w.qos, w.topic, w.payload = p.Duplicate, p.QoS, p.Topic, string(p.Payload)
		w.retain = p.Retain
		w.expiry = p.Properties.MessageExpiry
	case *packets.Puback:
		w.code = p.ReasonCode
	case *packets.Pubrec:
		w.code = p.ReasonCode
	case *packets.Pubcomp:
		w.code = p.ReasonCode
	case *packets.Disconnect:
		w.code = p.ReasonCode
	case *packets.Subscribe:
		for _, sub := range p.Subscriptions {
			w.filters = append(w.filters, sub.Topic)
		}
		if id := p.Properties.SubscriptionIdentifier; id != nil {
			w.subID = *id
		}
	case *packets.Unsubscribe:
		w.filters = p.Topics
	}
	b.mu.Lock()
	b.wire = append(b.wire, w)
	b.mu.Unlock()
}

// received returns the packets of kind that the client sent.
func (b *fakeBroker) received(kind byte) []wirePacket {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []wirePacket
	for _, w := range b.wire {
		if w.fromClient && w.kind == kind {
			out = append(out, w)
		}
	}
	return out
}

// log returns a copy of every recorded packet.
func (b *fakeBroker) log() []wirePacket {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]wirePacket(nil), b.wire...)
}

func (b *fakeBroker) connections() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.conns)
}

func (b *fakeBroker) acceptTimes() []time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]time.Time(nil), b.accepts...)
}

// maxOutstanding returns the largest number of QoS 1 and QoS 2 publishes
// outstanding at once on any one connection.
func maxOutstanding(log []wirePacket) int {
	open := map[int]map[uint16]bool{}
	maxOpen := 0
	for _, w := range log {
		if open[w.conn] == nil {
			open[w.conn] = map[uint16]bool{}
		}
		switch {
		case w.fromClient && w.kind == packets.PUBLISH && w.qos > 0:
			open[w.conn][w.id] = true
		case !w.fromClient && (w.kind == packets.PUBACK || w.kind == packets.PUBCOMP):
			delete(open[w.conn], w.id)
		}
		maxOpen = max(maxOpen, len(open[w.conn]))
	}
	return maxOpen
}
