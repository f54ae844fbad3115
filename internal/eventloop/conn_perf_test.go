package eventloop

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"
)

// recordingConn is a net.Conn that stores what is written and counts
// write deadlines. Writes fail once failAfter bytes went through, when
// failAfter is positive.
type recordingConn struct {
	net.Conn // nil: methods not overridden here are not used

	mu        sync.Mutex
	written   bytes.Buffer
	deadlines int
	failAfter int
}

var errTestWrite = errors.New("test write failure")

func (c *recordingConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.failAfter > 0 && c.written.Len()+len(b) > c.failAfter {
		n := c.failAfter - c.written.Len()
		c.written.Write(b[:n])
		return n, errTestWrite
	}
	return c.written.Write(b)
}

func (c *recordingConn) SetWriteDeadline(time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deadlines++
	return nil
}

func (c *recordingConn) Close() error { return nil }

// newBatchTestLoop returns a loop with conn as its connection and three
// due items queued, with packets a, b and c, and the slice their after
// functions append written to.
func newBatchTestLoop(t *testing.T, conn *recordingConn) (*Loop, *[]bool) {
	t.Helper()
	b := newFakeBroker(t, brokerScript{})
	l, err := New(testOptions(b), newMemSource(), &testJournal{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	l.conn = &connection{netConn: conn, url: b.url(), gen: l.connGen, writeTimeout: time.Second,
		limits: &connackPacket{}, done: make(chan struct{})}
	results := &[]bool{}
	for _, data := range [][]byte{[]byte("aaaa"), nil, []byte("bbbb"), []byte("cccc")} {
		l.writes = append(l.writes, pendingWrite{gen: l.connGen, data: data, after: func(written bool) {
			if data != nil {
				*results = append(*results, written)
			}
		}})
	}
	return l, results
}

func TestFlushWrites_OneDeadlinePerBatch(t *testing.T) {
	conn := &recordingConn{}
	l, results := newBatchTestLoop(t, conn)
	l.flushWrites()

	if got := conn.written.String(); got != "aaaabbbbcccc" {
		t.Errorf("wire %q, want aaaabbbbcccc", got)
	}
	if conn.deadlines != 1 {
		t.Errorf("%d write deadlines, want 1", conn.deadlines)
	}
	if want := []bool{true, true, true}; !slices.Equal(*results, want) {
		t.Errorf("written %v, want %v", *results, want)
	}
	if len(l.writes) != 0 {
		t.Errorf("%d items still queued", len(l.writes))
	}
	if l.conn == nil {
		t.Error("connection dropped after a successful write")
	}
}

func TestFlushWrites_BatchFailsMidPacket(t *testing.T) {
	conn := &recordingConn{failAfter: 6} // all of aaaa, half of bbbb
	l, results := newBatchTestLoop(t, conn)
	l.flushWrites()

	if want := []bool{true, false, false}; !slices.Equal(*results, want) {
		t.Errorf("written %v, want %v", *results, want)
	}
	if l.conn != nil {
		t.Error("connection kept after a failed write")
	}
	if got := conn.written.String(); got != "aaaabb" {
		t.Errorf("wire %q, want aaaabb: nothing may follow a partial packet", got)
	}
	if len(l.events) != 1 || l.events[0].Kind != EventDisconnected || !errors.Is(l.events[0].Err, errTestWrite) {
		t.Errorf("events %+v, want one EventDisconnected with the write error", l.events)
	}
}

func TestReadBatch_StopsBeforeIncompletePacket(t *testing.T) {
	puback := func(id byte) []byte { return []byte{0x40, 0x02, 0x00, id} }
	wire := slices.Concat(puback(1), puback(2), puback(3), []byte{0x40, 0x02, 0x00})
	r, w := io.Pipe()
	defer w.Close()
	go w.Write(wire) // one write: the reader's first fill takes all of it

	got := make(chan []packet, 1)
	go func() {
		batch := &inbound{}
		readBatch(mqtt5Codec{}, bufio.NewReader(r), batch)
		got <- batch.packets
	}()
	select {
	case batch := <-got:
		if len(batch) != 3 {
			t.Fatalf("batch of %d packets, want the 3 complete ones", len(batch))
		}
		for i, p := range batch {
			if ack, ok := p.(*ackPacket); !ok || ack.PacketID != uint16(i+1) {
				t.Errorf("packet %d is %+v, want PUBACK %d", i, p, i+1)
			}
		}
	case <-time.After(5 * time.Second):
		t.Fatal("readBatch waited for the incomplete fourth packet")
	}
}

func TestPacketBuffered_RemainingLengthForms(t *testing.T) {
	for _, tc := range []struct {
		name string
		wire []byte
		want bool
	}{
		{"empty", nil, false},
		{"type byte only", []byte{0x40}, false},
		{"complete, no body", []byte{0xd0, 0x00}, true},
		{"complete ack", []byte{0x40, 0x02, 0, 1}, true},
		{"two-byte length, body missing", []byte{0x30, 0x80, 0x01, 0, 0}, false},
		{"length bytes cut short", []byte{0x30, 0x80}, false},
	} {
		br := bufio.NewReader(bytes.NewReader(tc.wire))
		br.Peek(len(tc.wire)) // fill the buffer
		if got := packetBuffered(br); got != tc.want {
			t.Errorf("%s: packetBuffered %t, want %t", tc.name, got, tc.want)
		}
	}
}

func TestPushWrite_ReusesFreedFront(t *testing.T) {
	l := &Loop{}
	next, front := uint64(0), uint64(0)
	push := func(n int) {
		for range n {
			next++
			l.pushWrite(pendingWrite{ticket: next})
		}
	}
	take := func(n int) {
		for range n {
			front++
			if got := l.writes[0].ticket; got != front {
				t.Fatalf("front item has ticket %d, want %d", got, front)
			}
			l.writes[0] = pendingWrite{}
			l.writes = l.writes[1:]
		}
	}

	push(64)
	allocs := testing.AllocsPerRun(100, func() { // a steady queue of 8 to 64 items, as in a drain
		take(56)
		push(56)
	})
	if allocs != 0 {
		t.Errorf("%.1f allocations per 56 items taken and pushed, want 0", allocs)
	}
	take(64)
	allocs = testing.AllocsPerRun(100, func() { // a queue that empties each time
		push(1)
		take(1)
	})
	if allocs != 0 {
		t.Errorf("%.1f allocations per item pushed into an empty queue, want 0", allocs)
	}
	if len(l.writes) != 0 {
		t.Errorf("%d items left, want 0", len(l.writes))
	}
}
