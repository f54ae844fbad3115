package eventloop

// idTable maps packet identifiers to values through an array of 65 536
// entries, allocated on first use. A flow looks its identifier up several
// times per message, and the array needs no hashing. It costs 512 KiB for
// 8-byte values. The zero value of T means no entry.
type idTable[T comparable] struct {
	values []T
	count  int
}

// get returns the value of id, or the zero value when there is none.
func (t *idTable[T]) get(id uint16) T {
	var zero T
	if t.values == nil {
		return zero
	}
	return t.values[id]
}

// set stores v, which must not be the zero value, for id.
func (t *idTable[T]) set(id uint16, v T) {
	var zero T
	if t.values == nil {
		t.values = make([]T, 1<<16)
	}
	if t.values[id] == zero {
		t.count++
	}
	t.values[id] = v
}

// delete removes the entry of id, if any.
func (t *idTable[T]) delete(id uint16) {
	var zero T
	if t.values == nil || t.values[id] == zero {
		return
	}
	t.values[id] = zero
	t.count--
}

// len returns the number of entries.
func (t *idTable[T]) len() int { return t.count }

// clear removes every entry.
func (t *idTable[T]) clear() {
	if t.count > 0 {
		clear(t.values)
		t.count = 0
	}
}

// each calls f for the entries in identifier order until f returns false.
func (t *idTable[T]) each(f func(id uint16, v T) bool) {
	var zero T
	for id, v := range t.values {
		if v != zero && !f(uint16(id), v) {
			return
		}
	}
}
