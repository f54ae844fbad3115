package harness

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
)

// Received is one PUBLISH as the subscriber saw it.
type Received struct {
	Topic          string
	Payload        []byte
	QoS            byte
	Dup            bool
	Retain         bool
	ContentType    string
	UserProperties [][2]string
	At             time.Time
}

// Subscriber is an MQTT 5 client with a durable session (Clean Start 0,
// Session Expiry 3600 s) that records every PUBLISH and reconnects when
// the broker goes away, so it keeps its place across broker restarts.
type Subscriber struct {
	t      testing.TB
	addr   string
	id     string
	filter string
	qos    byte

	mu       sync.Mutex // guards received, conn and pending
	received []Received
	conn     net.Conn
	// connections counts CONNACKs received.
	connections int
	// pending contains the QoS 2 packet identifiers acknowledged with
	// PUBREC and not yet released, so a resent PUBLISH is not recorded
	// twice.
	pending map[uint16]bool

	cancel context.CancelFunc
	done   chan struct{}
}

// Subscribe connects to addr, subscribes to filter with qos and records
// messages until the test ends.
func Subscribe(t testing.TB, addr, filter string, qos byte) *Subscriber {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &Subscriber{t: t, addr: addr, id: fmt.Sprintf("sub-%d", time.Now().UnixNano()%1e9), filter: filter, qos: qos, cancel: cancel, done: make(chan struct{}), pending: map[uint16]bool{}}

	ready := make(chan struct{})
	go s.run(ctx, ready)
	select {
	case <-ready:
	case <-time.After(10 * time.Second):
		t.Fatalf("subscriber could not subscribe to %s on %s", filter, addr)
	}
	t.Cleanup(s.Close)
	return s
}

// Close disconnects and stops reconnecting.
func (s *Subscriber) Close() {
	s.cancel()
	s.mu.Lock()
	if s.conn != nil {
		s.conn.Close()
	}
	s.mu.Unlock()
	<-s.done
}

// Messages returns a copy of what arrived so far.
func (s *Subscriber) Messages() []Received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Received(nil), s.received...)
}

// Connections returns how many times the subscriber has connected.
func (s *Subscriber) Connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.connections
}

// Count returns how many PUBLISH packets arrived.
func (s *Subscriber) Count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.received)
}

// WaitCount waits until at least n messages arrived.
func (s *Subscriber) WaitCount(n int, timeout time.Duration) {
	s.t.Helper()
	WaitFor(s.t, timeout, fmt.Sprintf("%d messages at the subscriber (have %d)", n, s.Count()), func() bool { return s.Count() >= n })
}

func (s *Subscriber) run(ctx context.Context, ready chan struct{}) {
	defer close(s.done)
	first := true
	for ctx.Err() == nil {
		err := s.session(ctx, func() {
			if first {
				first = false
				close(ready)
			}
		})
		if ctx.Err() == nil && err != nil {
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// session runs one connection until it fails.
func (s *Subscriber) session(ctx context.Context, subscribed func()) error {
	conn, err := net.DialTimeout("tcp", s.addr, time.Second)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.conn = conn
	s.mu.Unlock()
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	expiry := uint32(3600)
	connect := packets.NewControlPacket(packets.CONNECT).Content.(*packets.Connect)
	connect.ClientID, connect.ProtocolName, connect.ProtocolVersion = s.id, "MQTT", 5
	// Keep alive 0: the subscriber never pings, and a long test must not
	// be disconnected by the broker for it.
	connect.KeepAlive = 0
	connect.Properties = &packets.Properties{SessionExpiryInterval: &expiry}
	if _, err := connect.WriteTo(conn); err != nil {
		return err
	}
	cp, err := packets.ReadPacket(conn)
	if err != nil {
		return err
	}
	if ack, ok := cp.Content.(*packets.Connack); !ok || ack.ReasonCode != 0 {
		return fmt.Errorf("subscriber connect rejected: %v", cp)
	}
	s.mu.Lock()
	s.connections++
	s.mu.Unlock()

	sub := packets.NewControlPacket(packets.SUBSCRIBE).Content.(*packets.Subscribe)
	sub.PacketID = 1
	sub.Subscriptions = []packets.SubOptions{{Topic: s.filter, QoS: s.qos}}
	if _, err := sub.WriteTo(conn); err != nil {
		return err
	}
	return s.read(conn, subscribed)
}

func (s *Subscriber) read(conn net.Conn, subscribed func()) error {
	for {
		cp, err := packets.ReadPacket(conn)
		if err != nil {
			return err
		}
		switch p := cp.Content.(type) {
		case *packets.Suback:
			subscribed()
		case *packets.Publish:
			s.record(p)
			if p.QoS == 2 {
				s.mu.Lock()
				s.pending[p.PacketID] = true
				s.mu.Unlock()
			}
			if err := ackPublish(conn, p); err != nil {
				return err
			}
		case *packets.Pubrel:
			s.mu.Lock()
			delete(s.pending, p.PacketID)
			s.mu.Unlock()
			comp := packets.NewControlPacket(packets.PUBCOMP).Content.(*packets.Pubcomp)
			comp.PacketID = p.PacketID
			if _, err := comp.WriteTo(conn); err != nil {
				return err
			}
		}
	}
}

func ackPublish(conn net.Conn, p *packets.Publish) error {
	switch p.QoS {
	case 1:
		ack := packets.NewControlPacket(packets.PUBACK).Content.(*packets.Puback)
		ack.PacketID = p.PacketID
		_, err := ack.WriteTo(conn)
		return err
	case 2:
		rec := packets.NewControlPacket(packets.PUBREC).Content.(*packets.Pubrec)
		rec.PacketID = p.PacketID
		_, err := rec.WriteTo(conn)
		return err
	}
	return nil
}

func (s *Subscriber) record(p *packets.Publish) {
	r := Received{Topic: p.Topic, Payload: append([]byte(nil), p.Payload...), QoS: p.QoS, Dup: p.Duplicate, Retain: p.Retain, At: time.Now()}
	if p.Properties != nil {
		r.ContentType = p.Properties.ContentType
		for _, u := range p.Properties.User {
			r.UserProperties = append(r.UserProperties, [2]string{u.Key, u.Value})
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if p.QoS == 2 && s.pending[p.PacketID] {
		return
	}
	s.received = append(s.received, r)
}
