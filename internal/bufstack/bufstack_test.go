package bufstack

import "testing"

func TestStack_ReturnsLastPut(t *testing.T) {
	s := New(4, 64, 100)
	a, b := make([]byte, 3, 8), make([]byte, 0, 16)
	s.Put(a)
	s.Put(b)

	got := s.Get()
	if cap(got) != 16 || len(got) != 0 {
		t.Errorf("first Get: len %d cap %d, want an empty buffer of cap 16", len(got), cap(got))
	}
	got = s.Get()
	if cap(got) != 8 || len(got) != 0 {
		t.Errorf("second Get: len %d cap %d, want an empty buffer of cap 8", len(got), cap(got))
	}
	if got := s.Get(); got != nil {
		t.Errorf("Get on an empty stack returned cap %d, want nil", cap(got))
	}
}

func TestStack_DropsOutOfBounds(t *testing.T) {
	s := New(4, 64, 100)
	s.Put(make([]byte, 2))  // below the minimum capacity
	s.Put(make([]byte, 65)) // above the maximum capacity
	for range 2 {
		s.Put(make([]byte, 40))
	}
	s.Put(make([]byte, 40)) // 120 bytes would exceed the total

	kept := 0
	for s.Get() != nil {
		kept++
	}
	if kept != 2 {
		t.Errorf("%d buffers kept, want 2", kept)
	}
}
