package eventloop

// idTable maps packet identifiers to values through an array of 65 536
// entries, allocated on first use. A flow looks its identifier up several
// times per message, and the array needs no hashing; it costs 512 KiB for
// 8-byte values. The zero value of T means no entry.
type idTable[T comparable] struct {
	vals []T
	n    int
}

// get returns the value of id, or the zero value when there is none.
func (t *idTable[T]) get(id uint16) T {
	var zero T
	if t.vals == nil {
		return zero
	}
	return t.vals[id]
}

// set stores v, which must not be the zero value, for id.
func (t *idTable[T]) set(id uint16, v T) {
	var zero T
	if t.vals == nil {
		t.vals = make([]T, 1<<16)
	}
	if t.vals[id] == zero {
		t.n++
	}
	t.vals[id] = v
}

// delete removes the entry of id, if any.
func (t *idTable[T]) delete(id uint16) {
	var zero T
	if t.vals == nil || t.vals[id] == zero {
		return
	}
	t.vals[id] = zero
	t.n--
}

// len returns the number of entries.
func (t *idTable[T]) len() int { return t.n }

// clear removes every entry.
func (t *idTable[T]) clear() {
	if t.n > 0 {
		clear(t.vals)
		t.n = 0
	}
}

// each calls f for the entries in identifier order until f returns false.
func (t *idTable[T]) each(f func(id uint16, v T) bool) {
	var zero T
	for id, v := range t.vals {
		if v != zero && !f(uint16(id), v) {
			return
		}
	}
}
