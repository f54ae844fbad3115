package spool

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/mqspool/mqspool/internal/state"
)

// queueModel is the spool reduced to what the queue promises: messages in
// append order, limits, and flows that protect messages from drop-oldest.
type queueModel struct {
	opts     Options
	queue    []uint64          // queued seqs in order
	payload  map[uint64]string // every seq ever appended
	size     map[uint64]int64
	lastSeq  uint64
	inFlight map[uint16]uint64 // packet id to seq
	dropped  uint64
	fileNum  int
	// appendedIDs are the identities stored and not yet forgotten.
	appendedIDs []FileID
}

func (m *queueModel) bytes() int64 {
	var n int64
	for _, seq := range m.queue {
		n += m.size[seq]
	}
	return n
}

func (m *queueModel) fits(n, size int64) bool {
	if m.opts.MaxMessages > 0 && int64(len(m.queue))+n > m.opts.MaxMessages {
		return false
	}
	return m.opts.MaxBytes == 0 || m.bytes()+size <= m.opts.MaxBytes
}

func (m *queueModel) isInFlight(seq uint64) bool {
	for _, s := range m.inFlight {
		if s == seq {
			return true
		}
	}
	return false
}

// append mirrors Append and returns how many files fit and which error
// the spool must return.
func (m *queueModel) append(files []FileBatch) (int, error) {
	for i, f := range files {
		var size int64
		for j := range f.Messages {
			size += int64(len(encodeRecord(time.Time{}, &f.Messages[j])))
		}
		n := int64(len(f.Messages))
		if (m.opts.MaxMessages > 0 && n > m.opts.MaxMessages) || (m.opts.MaxBytes > 0 && size > m.opts.MaxBytes) {
			return i, ErrTooLarge
		}
		if !m.fits(n, size) {
			if m.opts.Overflow == OverflowReject || !m.dropFor(n, size) {
				return i, ErrFull
			}
		}
		for j := range f.Messages {
			m.lastSeq++
			m.queue = append(m.queue, m.lastSeq)
			m.payload[m.lastSeq] = string(f.Messages[j].Payload)
			m.size[m.lastSeq] = int64(len(encodeRecord(time.Time{}, &f.Messages[j])))
		}
	}
	return len(files), nil
}

// dropFor drops the oldest messages not in flight until n records of size
// bytes fit, or drops nothing when they would not fit even then.
func (m *queueModel) dropFor(n, size int64) bool {
	keep := slices.Clone(m.queue)
	var victims []uint64
	for _, seq := range m.queue {
		trial := queueModel{opts: m.opts, queue: keep, size: m.size}
		if trial.fits(n, size) {
			break
		}
		if m.isInFlight(seq) {
			continue
		}
		victims = append(victims, seq)
		keep = slices.DeleteFunc(keep, func(s uint64) bool { return s == seq })
	}
	trial := queueModel{opts: m.opts, queue: keep, size: m.size}
	if !trial.fits(n, size) {
		return false
	}
	m.queue = keep
	m.dropped += uint64(len(victims))
	return true
}

func (m *queueModel) remove(seq uint64) {
	m.queue = slices.DeleteFunc(m.queue, func(s uint64) bool { return s == seq })
}

// visible returns the queued seqs a new cursor yields.
func (m *queueModel) visible() []uint64 {
	var out []uint64
	for _, seq := range m.queue {
		if !m.isInFlight(seq) {
			out = append(out, seq)
		}
	}
	return out
}

// TestSpoolModel runs random appends, reads, flows, acks and reopenings
// against queueModel. The default 100 checks take a few seconds; for a
// longer search run go test -run TestSpoolModel -rapid.checks=2000
// (about 30 s on a 2-core machine).
func TestSpoolModel(t *testing.T) {
	dir := t.TempDir()
	run := 0
	rapid.Check(t, func(rt *rapid.T) {
		run++
		opts := Options{
			Path:              filepath.Join(dir, fmt.Sprintf("model-%d.db", run)),
			MaxMessages:       rapid.Int64Range(0, 12).Draw(rt, "maxMessages"),
			MaxBytes:          rapid.SampledFrom([]int64{0, 300, 1000}).Draw(rt, "maxBytes"),
			Overflow:          rapid.SampledFrom([]OverflowPolicy{OverflowReject, OverflowDropOldest}).Draw(rt, "overflow"),
			ReadAheadMessages: rapid.IntRange(1, 4).Draw(rt, "readAhead"),
		}
		s, err := Open(opts)
		if err != nil {
			rt.Fatalf("Open: %v", err)
		}
		defer func() { s.Close() }()

		model := &queueModel{opts: opts, payload: map[uint64]string{}, size: map[uint64]int64{}, inFlight: map[uint16]uint64{}}
		cursor := s.NewCursor()
		var read []uint64 // seqs returned by the current cursor
		nextPacketID := uint16(1)

		rt.Repeat(map[string]func(*rapid.T){
			"append": func(rt *rapid.T) {
				var files []FileBatch
				for range rapid.IntRange(1, 3).Draw(rt, "files") {
					model.fileNum++
					f := FileBatch{ID: FileID{Ino: uint64(model.fileNum), Name: fmt.Sprintf("f%d", model.fileNum)}}
					for i := range rapid.IntRange(0, 4).Draw(rt, "messages") {
						f.Messages = append(f.Messages, testMessage(model.fileNum*10+i))
					}
					files = append(files, f)
				}
				wantN, wantErr := model.append(files)
				// Forgetting identities of files appended earlier, as the
				// pickup does once they are unlinked, changes no message.
				forget := model.appendedIDs[:rapid.IntRange(0, len(model.appendedIDs)).Draw(rt, "forget")]
				n, err := s.AppendForget(files, forget)
				if err == nil || errors.Is(err, ErrFull) || errors.Is(err, ErrTooLarge) {
					for _, id := range forget {
						if seen, _ := s.Seen(id); seen {
							rt.Fatalf("identity of %s still stored after AppendForget", id.Name)
						}
					}
					model.appendedIDs = model.appendedIDs[len(forget):]
				}
				for _, f := range files[:max(n, 0)] {
					model.appendedIDs = append(model.appendedIDs, f.ID)
				}
				if n != wantN || !errors.Is(err, wantErr) || (wantErr == nil && err != nil) {
					rt.Fatalf("Append = %d, %v; model says %d, %v", n, err, wantN, wantErr)
				}
			},
			"read": func(rt *rapid.T) {
				r, ok, err := cursor.Next()
				if err != nil {
					rt.Fatalf("Next: %v", err)
				}
				if !ok {
					return
				}
				if len(read) > 0 && r.Seq <= read[len(read)-1] {
					rt.Fatalf("cursor returned seq %d after %d", r.Seq, read[len(read)-1])
				}
				if string(r.Message.Payload) != model.payload[r.Seq] {
					rt.Fatalf("seq %d has payload %q, want %q", r.Seq, r.Message.Payload, model.payload[r.Seq])
				}
				read = append(read, r.Seq)
			},
			"deliver": func(rt *rapid.T) {
				seq, ok := pickQueued(rt, model, read)
				if !ok {
					return
				}
				mustCommitModel(rt, s, state.Change{Kind: state.ChangeDelivered, Seq: seq})
				model.remove(seq)
			},
			"send": func(rt *rapid.T) {
				seq, ok := pickQueued(rt, model, read)
				if !ok || model.isInFlight(seq) {
					return
				}
				id := nextPacketID
				nextPacketID++
				mustCommitModel(rt, s, state.Change{Kind: state.ChangeSent, PacketID: id, Seq: seq, QoS: 1, Order: uint64(id)})
				model.inFlight[id] = seq
			},
			"ack": func(rt *rapid.T) {
				if len(model.inFlight) == 0 {
					return
				}
				ids := slices.Sorted(mapKeys(model.inFlight))
				id := rapid.SampledFrom(ids).Draw(rt, "packetID")
				mustCommitModel(rt, s, state.Change{Kind: state.ChangeAcked, PacketID: id, Seq: model.inFlight[id]})
				model.remove(model.inFlight[id])
				delete(model.inFlight, id)
			},
			"reopen": func(rt *rapid.T) {
				if err := s.Close(); err != nil {
					rt.Fatalf("Close: %v", err)
				}
				if s, err = Open(opts); err != nil {
					rt.Fatalf("Open: %v", err)
				}
				cursor, read = s.NewCursor(), nil
				if got, want := seqsOf(drainRapid(rt, s.NewCursor())), model.visible(); !slices.Equal(got, want) {
					rt.Fatalf("after reopen a new cursor yields %v, model has %v", got, want)
				}
			},
			"": func(rt *rapid.T) {
				st := s.Stats()
				if st.Messages != int64(len(model.queue)) || st.Bytes != model.bytes() || st.Dropped != model.dropped {
					rt.Fatalf("stats %+v, model has %d messages, %d bytes, %d dropped", st, len(model.queue), model.bytes(), model.dropped)
				}
				if st.Flows != len(model.inFlight) {
					rt.Fatalf("stats has %d flows, model %d", st.Flows, len(model.inFlight))
				}
			},
		})
	})
}

// pickQueued draws a queued seq that the cursor has returned, so commits
// only concern messages the event loop could know about.
func pickQueued(rt *rapid.T, m *queueModel, read []uint64) (uint64, bool) {
	var candidates []uint64
	for _, seq := range read {
		if slices.Contains(m.queue, seq) {
			candidates = append(candidates, seq)
		}
	}
	if len(candidates) == 0 {
		return 0, false
	}
	return rapid.SampledFrom(candidates).Draw(rt, "seq"), true
}

func mustCommitModel(rt *rapid.T, s *Spool, c state.Change) {
	if err := s.Commit([]state.Change{c}); err != nil {
		rt.Fatalf("Commit(%+v): %v", c, err)
	}
}

func drainRapid(rt *rapid.T, c *Cursor) []Record {
	var out []Record
	for {
		r, ok, err := c.Next()
		if err != nil {
			rt.Fatalf("Next: %v", err)
		}
		if !ok {
			return out
		}
		out = append(out, r)
	}
}

func mapKeys[K comparable, V any](m map[K]V) func(func(K) bool) {
	return func(yield func(K) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}
