package eventloop

import (
	"bufio"
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/mqspool/mqspool/internal/message"
	"github.com/mqspool/mqspool/internal/state"
)

// discardJournal makes every change durable at once and keeps none.
type discardJournal struct{}

func (discardJournal) Commit([]state.Change) error { return nil }

// A message's way through the loop, from PUBLISH to its last
// acknowledgement and outcome, allocates nothing once the loop runs
// steadily, so a long drain makes no garbage per message. The count
// includes the committer's goroutine.
func TestFlow_NoAllocationsPerMessage(t *testing.T) {
	for _, qos := range []byte{0, 1, 2} {
		t.Run(fmt.Sprintf("qos %d", qos), func(t *testing.T) {
			l, conn := newSteadyLoop(t)
			payload := make([]byte, 100)
			var ack ackPacket
			acknowledge := func(kind ackKind, id uint16) {
				ack = ackPacket{Kind: kind, PacketID: id}
				l.handleAck(&ack)
				settle(l)
			}
			seq := uint64(0)
			deliver := func() {
				seq++
				l.publishNew(Request{Seq: seq, Message: message.Message{Topic: "bench/data", Payload: payload, QoS: qos}})
				settle(l)
				id := l.st.LastPacketID
				switch qos {
				case 0:
					settle(l) // the delivery, recorded once the PUBLISH was written
				case 1:
					acknowledge(kindPuback, id)
				case 2:
					acknowledge(kindPubrec, id)
					acknowledge(kindPubcomp, id)
				}
				if len(l.events) != 1 || l.events[0].Outcome.Seq != seq || l.events[0].Outcome.Kind != Delivered {
					t.Fatalf("events after message %d: %+v, want its delivery", seq, l.events)
				}
				l.events = l.events[:0]
				conn.written.Reset()
			}
			for range 100 { // warm up the buffers, free lists and tables
				deliver()
			}

			if allocs := testing.AllocsPerRun(1000, deliver); allocs != 0 {
				t.Errorf("%.2f allocations per qos %d message, want 0", allocs, qos)
			}
			if l.flights.len() != 0 || l.onWire.len() != 0 {
				t.Errorf("%d flights and %d packets on the wire left, want none", l.flights.len(), l.onWire.len())
			}
		})
	}
}

// newSteadyLoop returns a loop connected through a recordingConn to no
// broker, with a journal that keeps nothing.
func newSteadyLoop(t *testing.T) (*Loop, *recordingConn) {
	t.Helper()
	b := newFakeBroker(t, brokerScript{})
	l, err := New(testOptions(b), newMemSource(), discardJournal{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	conn := &recordingConn{}
	l.conn = &connection{netConn: conn, url: b.url(), gen: l.connGen, writeTimeout: time.Second,
		limits: &connackPacket{MaximumQoS: 2, RetainAvailable: true}, done: make(chan struct{})}
	l.applyLimits(l.conn, l.conn.limits)
	return l, conn
}

// settle waits until the journal made every recorded change durable and
// runs the writes and actions that waited for it.
func settle(l *Loop) {
	for {
		queued, committed, _ := l.journal.progress()
		if queued == committed {
			break
		}
		<-l.journal.done
	}
	l.flushWrites()
}

// Reading a batch of acknowledgements into a batch the loop gave back
// allocates nothing.
func TestReadBatch_NoAllocationsForAcks(t *testing.T) {
	var wire []byte
	for id := range 64 {
		wire = append(wire, 0x40, 0x02, 0x00, byte(id+1)) // PUBACK
	}
	r := bytes.NewReader(wire)
	br := bufio.NewReaderSize(r, 4096)
	c := &connection{spare: make(chan *inbound, 2)}
	c.recycle(c.nextBatch())

	allocs := testing.AllocsPerRun(100, func() {
		r.Reset(wire)
		br.Reset(r)
		b := c.nextBatch()
		if err := readBatch(mqtt5Codec{}, br, b); err != nil || len(b.packets) != 64 {
			t.Fatalf("readBatch: %d packets, %v; want 64", len(b.packets), err)
		}
		c.recycle(b)
	})
	if allocs != 0 {
		t.Errorf("%.1f allocations per batch of 64 acknowledgements, want 0", allocs)
	}
}
