package harness

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
)

// Direction of a packet through the proxy.
type Direction int

// Packet directions.
const (
	ToBroker Direction = iota + 1
	ToClient
)

// String returns "c>b" or "b>c" for logs.
func (d Direction) String() string {
	if d == ToBroker {
		return "c>b"
	}
	return "b>c"
}

// Packet is one MQTT packet seen by the proxy.
type Packet struct {
	At       time.Time
	Conn     int // connection number, from 1
	Dir      Direction
	Type     byte // packets.PUBLISH and so on
	PacketID uint16
	QoS      byte
	Dup      bool
	Topic    string
	Payload  []byte
	// ReasonCode of acknowledgements and CONNACK.
	ReasonCode     byte
	SessionPresent bool
	CleanStart     bool
	ReceiveMaximum uint16
	KeepAlive      uint16
	// TopicAlias of a PUBLISH, 0 when absent.
	TopicAlias uint16
	Dropped    bool
}

// Mode is how the proxy treats traffic.
type Mode int

// Proxy modes.
const (
	// Pass forwards every packet.
	Pass Mode = iota
	// Blackhole stops forwarding in both directions, like a path that
	// silently drops packets: no FIN, no RST, and what was sent waits in
	// the socket buffers, as TCP would retransmit it once the path is back.
	Blackhole
	// Stall stops reading from the client, so its send buffer fills.
	Stall
)

// Proxy is an MQTT-aware TCP proxy on 127.0.0.1 that records every packet
// and can blackhole, stall, reset or drop chosen packets.
type Proxy struct {
	t      testing.TB
	ln     net.Listener
	target string

	mu       sync.Mutex // guards the fields below
	mode     Mode
	drop     func(Packet) bool
	conns    []net.Conn
	log      []Packet
	accepted int
	stallCh  chan struct{}
	wg       sync.WaitGroup
}

// StartProxy listens on a free loopback port and forwards to target.
func StartProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{t: t, ln: ln, target: target, stallCh: make(chan struct{})}
	go p.accept()
	t.Cleanup(p.Close)
	return p
}

// Addr returns the proxy's host:port; URL its mqtt:// URL.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }
func (p *Proxy) URL() string  { return "mqtt://" + p.Addr() }

// Close stops listening and closes every connection.
func (p *Proxy) Close() {
	p.ln.Close()
	p.Reset()
	p.wg.Wait()
}

// SetMode switches the treatment of traffic on every connection.
func (p *Proxy) SetMode(m Mode) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mode != Pass && m == Pass {
		close(p.stallCh)
		p.stallCh = make(chan struct{})
	}
	p.mode = m
}

// SetDrop installs a predicate: packets it matches are not forwarded.
func (p *Proxy) SetDrop(f func(Packet) bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.drop = f
}

// Reset closes every open connection with RST.
func (p *Proxy) Reset() {
	p.mu.Lock()
	conns := p.conns
	p.conns = nil
	p.mu.Unlock()
	for _, c := range conns {
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
		c.Close()
	}
}

// Accepted returns how many client connections the proxy has accepted.
func (p *Proxy) Accepted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepted
}

// Packets returns a copy of the wire log.
func (p *Proxy) Packets() []Packet {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Packet(nil), p.log...)
}

func (p *Proxy) accept() {
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		broker, err := net.DialTimeout("tcp", p.target, 2*time.Second)
		if err != nil {
			client.Close()
			continue
		}
		p.mu.Lock()
		p.accepted++
		id := p.accepted
		p.conns = append(p.conns, client, broker)
		p.mu.Unlock()

		p.wg.Add(2)
		go p.pipe(id, ToBroker, client, broker)
		go p.pipe(id, ToClient, broker, client)
	}
}

func (p *Proxy) pipe(id int, dir Direction, from, to net.Conn) {
	defer p.wg.Done()
	defer from.Close()
	defer to.Close()
	r := bufio.NewReader(from)
	for {
		// Stall must stop reading, so the sender's buffers fill.
		if !p.waitFlowing(from, dir) {
			return
		}
		raw, err := readRaw(r)
		if err != nil {
			return
		}
		// A packet read just before the mode changed is held too.
		if !p.waitFlowing(from, dir) {
			return
		}
		pk := decode(raw, id, dir)

		p.mu.Lock()
		drop := p.drop
		pk.Dropped = drop != nil && drop(pk)
		p.log = append(p.log, pk)
		p.mu.Unlock()

		if pk.Dropped {
			continue
		}
		to.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if _, err := to.Write(raw); err != nil {
			return
		}
	}
}

// waitFlowing blocks while the mode holds traffic in direction dir:
// Blackhole holds both, Stall only the client's. It returns false when the
// connection was closed meanwhile.
func (p *Proxy) waitFlowing(c net.Conn, dir Direction) bool {
	for {
		p.mu.Lock()
		mode, ch := p.mode, p.stallCh
		closed := !p.isOpen(c)
		p.mu.Unlock()
		if closed {
			return false
		}
		held := mode == Blackhole || (mode == Stall && dir == ToBroker)
		if !held {
			return true
		}
		select {
		case <-ch:
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (p *Proxy) isOpen(c net.Conn) bool {
	for _, o := range p.conns {
		if o == c {
			return true
		}
	}
	return false
}

// readRaw reads one whole MQTT packet: fixed header, remaining length and
// body.
func readRaw(r *bufio.Reader) ([]byte, error) {
	first, err := r.ReadByte()
	if err != nil {
		return nil, err
	}
	buf := []byte{first}
	length, mult := 0, 1
	for i := 0; ; i++ {
		b, err := r.ReadByte()
		if err != nil {
			return nil, err
		}
		buf = append(buf, b)
		length += int(b&0x7f) * mult
		if b&0x80 == 0 {
			break
		}
		if i == 3 {
			return nil, errors.New("malformed remaining length")
		}
		mult *= 128
	}
	body := make([]byte, length)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, err
	}
	return append(buf, body...), nil
}

func decode(raw []byte, id int, dir Direction) Packet {
	pk := Packet{At: time.Now(), Conn: id, Dir: dir, Type: raw[0] >> 4}
	cp, err := packets.ReadPacket(bytes.NewReader(raw))
	if err != nil {
		return pk
	}
	switch c := cp.Content.(type) {
	case *packets.Connect:
		pk.CleanStart, pk.KeepAlive = c.CleanStart, c.KeepAlive
	case *packets.Connack:
		pk.ReasonCode, pk.SessionPresent = c.ReasonCode, c.SessionPresent
		if c.Properties != nil && c.Properties.ReceiveMaximum != nil {
			pk.ReceiveMaximum = *c.Properties.ReceiveMaximum
		}
		if c.Properties != nil && c.Properties.ServerKeepAlive != nil {
			pk.KeepAlive = *c.Properties.ServerKeepAlive
		}
	case *packets.Publish:
		pk.PacketID, pk.QoS, pk.Dup, pk.Topic, pk.Payload = c.PacketID, c.QoS, c.Duplicate, c.Topic, c.Payload
		if c.Properties != nil && c.Properties.TopicAlias != nil {
			pk.TopicAlias = *c.Properties.TopicAlias
		}
	case *packets.Puback:
		pk.PacketID, pk.ReasonCode = c.PacketID, c.ReasonCode
	case *packets.Pubrec:
		pk.PacketID, pk.ReasonCode = c.PacketID, c.ReasonCode
	case *packets.Pubrel:
		pk.PacketID, pk.ReasonCode = c.PacketID, c.ReasonCode
	case *packets.Pubcomp:
		pk.PacketID, pk.ReasonCode = c.PacketID, c.ReasonCode
	case *packets.Disconnect:
		pk.ReasonCode = c.ReasonCode
	}
	return pk
}

// MaxOutstanding replays the wire log and returns the largest number of
// QoS 1 and QoS 2 PUBLISH packets the client had sent on one connection
// without a PUBACK, or PUBCOMP, from the broker. It also reports a packet
// identifier sent while still outstanding.
func MaxOutstanding(log []Packet) (max int, reuse error) {
	outstanding := map[int]map[uint16]bool{}
	for _, pk := range log {
		if pk.Dropped {
			continue
		}
		open := outstanding[pk.Conn]
		if open == nil {
			open = map[uint16]bool{}
			outstanding[pk.Conn] = open
		}
		switch {
		case pk.Dir == ToBroker && pk.Type == packets.PUBLISH && pk.QoS > 0:
			if open[pk.PacketID] && !pk.Dup && reuse == nil {
				reuse = fmt.Errorf("packet identifier %d reused while outstanding on connection %d", pk.PacketID, pk.Conn)
			}
			open[pk.PacketID] = true
		case pk.Dir == ToClient && (pk.Type == packets.PUBACK || pk.Type == packets.PUBCOMP):
			delete(open, pk.PacketID)
		case pk.Dir == ToClient && pk.Type == packets.PUBREC && pk.ReasonCode >= 0x80:
			delete(open, pk.PacketID)
		}
		if len(open) > max {
			max = len(open)
		}
	}
	return max, reuse
}

// UnmatchedAcks replays the wire log and reports the first PUBACK, PUBREC
// or PUBCOMP from the broker that matches no outstanding PUBLISH or
// PUBREL of the client on the same connection.
func UnmatchedAcks(log []Packet) error {
	type key struct {
		conn int
		id   uint16
	}
	published := map[key]bool{}
	released := map[key]bool{}
	for _, pk := range log {
		if pk.Dropped {
			continue
		}
		k := key{pk.Conn, pk.PacketID}
		switch {
		case pk.Dir == ToBroker && pk.Type == packets.PUBLISH && pk.QoS > 0:
			published[k] = true
		case pk.Dir == ToBroker && pk.Type == packets.PUBREL:
			released[k] = true
		case pk.Dir == ToClient && (pk.Type == packets.PUBACK || pk.Type == packets.PUBREC):
			if !published[k] {
				return fmt.Errorf("connection %d: %s for packet identifier %d, which is not outstanding", pk.Conn, packetName(pk.Type), pk.PacketID)
			}
			delete(published, k)
		case pk.Dir == ToClient && pk.Type == packets.PUBCOMP:
			if !released[k] {
				return fmt.Errorf("connection %d: PUBCOMP for packet identifier %d, which has no PUBREL outstanding", pk.Conn, pk.PacketID)
			}
			delete(released, k)
		}
	}
	return nil
}

func packetName(t byte) string {
	switch t {
	case packets.PUBACK:
		return "PUBACK"
	case packets.PUBREC:
		return "PUBREC"
	case packets.PUBCOMP:
		return "PUBCOMP"
	}
	return fmt.Sprintf("packet type %d", t)
}
