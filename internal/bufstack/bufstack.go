// Package bufstack keeps emptied byte buffers for reuse by one goroutine.
package bufstack

// Stack is a last-in, first-out store of empty byte buffers whose total
// capacity is bounded. It is not safe for concurrent use.
type Stack struct {
	minCap, maxCap, maxTotal int

	bufs  [][]byte
	total int // capacity of the buffers in bufs
}

// New returns a Stack that keeps buffers of capacity minCap to maxCap,
// up to maxTotal bytes of capacity in all.
func New(minCap, maxCap, maxTotal int) *Stack {
	return &Stack{minCap: minCap, maxCap: maxCap, maxTotal: maxTotal}
}

// Get returns an empty buffer, or nil when the stack has none.
func (s *Stack) Get() []byte {
	n := len(s.bufs)
	if n == 0 {
		return nil
	}

	buf := s.bufs[n-1]
	s.bufs[n-1] = nil
	s.bufs = s.bufs[:n-1]
	s.total -= cap(buf)
	return buf
}

// Put keeps buf for a later Get, unless its capacity is out of range or
// the stack is full. The caller must not use buf afterwards.
func (s *Stack) Put(buf []byte) {
	c := cap(buf)
	if c < s.minCap || c > s.maxCap || s.total+c > s.maxTotal {
		return
	}

	s.bufs = append(s.bufs, buf[:0])
	s.total += c
}
