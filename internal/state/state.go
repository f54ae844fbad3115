// Package state holds the MQTT session state that mqspool keeps on the
// client side: which packet identifiers are outstanding, at which stage of
// the QoS 1 or QoS 2 flow each one is, and which incoming QoS 2 publishes
// await PUBREL. The event loop changes it and reports each change as a
// [Change]; the daemon's journal makes those changes durable, and on the
// next start the journal rebuilds a [State] that the loop resumes from.
//
// A State is not safe for concurrent use: the event loop owns it.
package state

import (
	"errors"
	"fmt"
	"slices"
)

// Stage is the step an outgoing QoS 1 or QoS 2 flow has reached.
type Stage uint8

const (
	// StagePublish means PUBLISH was sent and PUBACK (QoS 1) or PUBREC
	// (QoS 2) is awaited. A resend repeats the PUBLISH with DUP set.
	StagePublish Stage = 1
	// StagePubrel means PUBREC arrived and PUBCOMP is awaited. The message
	// stays in the spool until PUBCOMP. A resend repeats the PUBREL.
	StagePubrel Stage = 2
)

// String returns the stage name used in logs and offline inspection.
func (s Stage) String() string {
	switch s {
	case StagePublish:
		return "publish"
	case StagePubrel:
		return "pubrel"
	default:
		return fmt.Sprintf("stage(%d)", uint8(s))
	}
}

// Flow is one outgoing QoS 1 or QoS 2 publish that the broker has not
// completed.
type Flow struct {
	PacketID uint16
	// Seq is the spool sequence number of the message.
	Seq   uint64
	QoS   byte
	Stage Stage
	// Order is the send order across the session, so that resends after a
	// reconnect go out in the order of the first sends.
	Order uint64
}

// State is the client side of an MQTT session.
type State struct {
	// Session reports that a broker session was started with Clean Start
	// and these flows belong to it, so the next CONNECT may use Clean
	// Start 0. Without it the loop connects with Clean Start 1.
	Session bool
	// NextOrder is the Order the next new flow gets.
	NextOrder uint64
	// LastPacketID is the identifier handed out last; allocation continues
	// after it so that identifiers are spread over the whole range.
	LastPacketID uint16
	// Outgoing holds the open flows. Their send order is Order: removing
	// a flow moves the last one into its place, so the slice itself is
	// not sorted.
	Outgoing []Flow
	// IncomingQoS2 holds packet identifiers of received QoS 2 publishes
	// that were stored and acknowledged with PUBREC but not yet released by
	// PUBREL, sorted.
	IncomingQoS2 []uint16

	// pos contains, at each packet identifier, one more than the index of
	// its flow in Outgoing, or 0 for no flow, so lookups and allocation
	// neither scan the flows nor hash. posLen counts the entries that are
	// not 0. The index is rebuilt whenever it disagrees with Outgoing,
	// which covers a State decoded or built by hand.
	pos    []int32
	posLen int
}

// posSize is the length of pos: one entry per packet identifier.
const posSize = 1 << 16

// ErrNoPacketID is returned by [State.AllocatePacketID] when all 65535
// identifiers are outstanding.
var ErrNoPacketID = errors.New("all 65535 packet identifiers are outstanding")

// AllocatePacketID returns an identifier that no open flow uses. inUse
// reports identifiers taken by other means (for example SUBSCRIBE); it may
// be nil.
func (s *State) AllocatePacketID(inUse func(uint16) bool) (uint16, error) {
	s.index()

	id := s.LastPacketID
	for range 65535 {
		id++
		if id == 0 {
			id = 1
		}
		if s.pos[id] != 0 {
			continue
		}
		if inUse != nil && inUse(id) {
			continue
		}
		s.LastPacketID = id
		return id, nil
	}
	return 0, ErrNoPacketID
}

// index rebuilds pos from Outgoing when its count disagrees.
func (s *State) index() {
	if s.pos != nil && s.posLen == len(s.Outgoing) {
		return
	}
	if s.pos == nil {
		s.pos = make([]int32, posSize)
	} else {
		clear(s.pos)
	}
	s.posLen = 0
	for i, f := range s.Outgoing {
		s.setPos(f.PacketID, i)
	}
}

// lookup returns the index in Outgoing that pos records for id.
func (s *State) lookup(id uint16) (int, bool) {
	s.index()
	v := s.pos[id]
	return int(v) - 1, v != 0
}

func (s *State) setPos(id uint16, i int) {
	if s.pos[id] == 0 {
		s.posLen++
	}
	s.pos[id] = int32(i + 1)
}

func (s *State) deletePos(id uint16) {
	if s.pos[id] != 0 {
		s.posLen--
		s.pos[id] = 0
	}
}

// Flow returns the open flow with packet identifier id.
func (s *State) Flow(id uint16) (Flow, bool) {
	i := s.flowIndex(id)
	if i < 0 {
		return Flow{}, false
	}
	return s.Outgoing[i], true
}

func (s *State) flowIndex(id uint16) int {
	i, ok := s.lookup(id)
	if !ok {
		return -1
	}
	if i >= len(s.Outgoing) || s.Outgoing[i].PacketID != id {
		// Outgoing was changed behind the index: rebuild and look again.
		s.posLen = -1
		if i, ok = s.lookup(id); !ok {
			return -1
		}
	}
	return i
}

// Clone returns a deep copy, for handing the state to another owner.
func (s *State) Clone() *State {
	c := *s
	c.Outgoing = slices.Clone(s.Outgoing)
	c.IncomingQoS2 = slices.Clone(s.IncomingQoS2)
	c.pos, c.posLen = nil, 0
	return &c
}

// Sorted returns a clone whose Outgoing is in send order, for comparing
// two states and for showing one.
func (s *State) Sorted() *State {
	c := s.Clone()
	slices.SortStableFunc(c.Outgoing, func(a, b Flow) int {
		switch {
		case a.Order < b.Order:
			return -1
		case a.Order > b.Order:
			return 1
		}
		return 0
	})
	return c
}

// Apply changes s as c describes. The journal applies the same changes to
// its durable copy, so replaying every change since the last saved State
// yields the same State.
func (s *State) Apply(c Change) error {
	switch c.Kind {
	case ChangeSessionStarted:
		s.Session = true
		s.Outgoing = s.Outgoing[:0]
		s.IncomingQoS2 = s.IncomingQoS2[:0]
		s.posLen = -1
	case ChangeSessionLost:
		s.Outgoing = s.Outgoing[:0]
		s.IncomingQoS2 = s.IncomingQoS2[:0]
		s.posLen = -1
	case ChangeSent:
		return s.addFlow(c)
	case ChangePubrec:
		return s.moveToPubrel(c.PacketID)
	case ChangeAcked, ChangeCompleted, ChangeFailed, ChangeReleased:
		s.removeFlow(c.PacketID)
	case ChangeDelivered, ChangeExpired:
		// QoS 0 and local expiry touch only the spool.
	case ChangeIncomingStored:
		if i, found := slices.BinarySearch(s.IncomingQoS2, c.PacketID); !found {
			s.IncomingQoS2 = slices.Insert(s.IncomingQoS2, i, c.PacketID)
		}
	case ChangeIncomingReleased:
		if i, found := slices.BinarySearch(s.IncomingQoS2, c.PacketID); found {
			s.IncomingQoS2 = slices.Delete(s.IncomingQoS2, i, i+1)
		}
	default:
		return fmt.Errorf("unknown change kind %d", c.Kind)
	}
	return nil
}

func (s *State) addFlow(c Change) error {
	if c.PacketID == 0 {
		return errors.New("flow has packet identifier 0")
	}
	if s.flowIndex(c.PacketID) >= 0 {
		return fmt.Errorf("packet identifier %d is already outstanding", c.PacketID)
	}
	s.Outgoing = append(s.Outgoing, Flow{
		PacketID: c.PacketID, Seq: c.Seq, QoS: c.QoS, Stage: StagePublish, Order: c.Order,
	})
	s.setPos(c.PacketID, len(s.Outgoing)-1)
	s.LastPacketID = c.PacketID
	if c.Order >= s.NextOrder {
		s.NextOrder = c.Order + 1
	}
	return nil
}

func (s *State) moveToPubrel(id uint16) error {
	i := s.flowIndex(id)
	if i < 0 {
		return fmt.Errorf("pubrec for packet identifier %d, which is not outstanding", id)
	}
	s.Outgoing[i].Stage = StagePubrel
	return nil
}

func (s *State) removeFlow(id uint16) {
	i := s.flowIndex(id)
	if i < 0 {
		return
	}
	last := len(s.Outgoing) - 1
	if i != last {
		s.Outgoing[i] = s.Outgoing[last]
		s.setPos(s.Outgoing[i].PacketID, i)
	}
	s.Outgoing = s.Outgoing[:last]
	s.deletePos(id)
}
