package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/mqspool/mqspool/internal/message"
)

// Append stores the messages of files in one fsync'd transaction, each
// file's messages under new increasing sequence numbers together with the
// file's identity. Files are taken in order. When a limit leaves no room
// for a file under OverflowReject, that file and the ones after it are not
// stored, and the error wraps ErrFull. A file that could never fit stops
// the call the same way with ErrTooLarge. A file whose identity is
// already stored in full (see [Spool.Seen]) is counted as accepted
// without storing its messages again. accepted counts the files (or
// parts) taken, which are durable even when err is not nil.
func (s *Spool) Append(files []FileBatch) (accepted int, err error) {
	return s.AppendForget(files, nil)
}

// AppendForget is Append that also removes the identities in forget, in
// the same transaction and before the files are looked up, as [Spool.Forget]
// would. It saves the pickup a commit per batch. The identities are
// removed whenever the transaction commits, also when err wraps ErrFull
// or ErrTooLarge; on any other error nothing changes.
func (s *Spool) AppendForget(files []FileBatch, forget []FileID) (accepted int, err error) {
	if len(files) == 0 && len(forget) == 0 {
		return 0, s.checkWritable()
	}
	if len(files) == 0 {
		return 0, s.Forget(forget)
	}

	var stop error
	var drops []droppedMessage
	var repeats []string
	err = s.writeShared("append", func(tx *bolt.Tx, t *totals) error {
		accepted, stop, drops, repeats = 0, nil, nil, nil
		ids := tx.Bucket(bucketFiles)
		for _, id := range forget {
			if err := ids.Delete(fileKey(id)); err != nil {
				return fmt.Errorf("delete identity of %s: %w", id.Name, err)
			}
		}

		// The regime is noted before the commit makes the records
		// visible to a cursor, and in commit order. A regime noted for a
		// commit that then fails is harmless: the next append starts at
		// the same sequence number, and the later regime wins.
		s.wall.note(t.lastSeq+1, s.wall.offsetNow())
		a := appender{tx: tx, t: t, now: time.Now(), drops: &drops}
		for i := range files {
			repeat, err := s.appendFile(&a, &files[i])
			if errors.Is(err, ErrFull) || errors.Is(err, ErrTooLarge) {
				stop = err
				return nil
			}
			if err != nil {
				return err
			}
			if repeat {
				repeats = append(repeats, files[i].ID.Name)
			}
			accepted++
		}
		return nil
	})
	if err != nil {
		return 0, err
	}

	s.reportDrops(drops)
	for _, name := range repeats {
		s.log.Info("file was already appended; not queueing it again", "file", name)
	}
	if accepted > 0 {
		s.signalCursors()
	}
	return accepted, stop
}

// appender is the state one Append transaction shares between files.
type appender struct {
	tx    *bolt.Tx
	t     *totals
	now   time.Time
	drops *[]droppedMessage
}

// appendFile stores the messages of f that are not stored yet, with its
// identity, and sets f.FirstSeq and f.Count. It reports a file already
// appended in full as a repeat, without storing anything: an earlier
// run committed it and stopped before the unlink, and taking it again
// would duplicate it. A part must start at or before the stored
// progress; the messages it repeats are skipped.
func (s *Spool) appendFile(a *appender, f *FileBatch) (repeat bool, err error) {
	ids := a.tx.Bucket(bucketFiles)
	key := fileKey(f.ID)
	v := ids.Get(key)
	first, stored, partial := parseFileValue(v)
	if v != nil && !partial {
		f.FirstSeq, f.Count = first, stored
		return true, nil
	}
	if f.Start > stored {
		return false, fmt.Errorf("part of %s starts at message %d, but only %d of its messages are stored: "+
			"append its parts in order", f.ID.Name, f.Start, stored)
	}

	todo := f.Messages[min(stored-f.Start, len(f.Messages)):]
	records := encodeRecords(a.now, todo)
	if err := s.checkRoom(a.tx, a.t, f.ID, int64(len(records)), recordsSize(records), a.drops); err != nil {
		return false, err
	}

	msgs := a.tx.Bucket(bucketMessages)
	msgs.FillPercent = messagesFillPercent
	next := a.t.lastSeq + 1
	// bbolt may keep the keys and values until the commit, so each record
	// gets a key of its own, cut from one allocation.
	keys := make([]byte, 8*len(records))
	for i, rec := range records {
		a.t.lastSeq++
		key := keys[8*i : 8*i+8 : 8*i+8]
		binary.BigEndian.PutUint64(key, a.t.lastSeq)
		if err := msgs.Put(key, rec); err != nil {
			return false, fmt.Errorf("store message %d of %s: %w", a.t.lastSeq, f.ID.Name, err)
		}
		a.t.messages++
		a.t.bytes += int64(len(rec))
	}
	if len(records) > 0 {
		f.FirstSeq, f.Count = next, len(records)
		if first == 0 {
			first = next // the file's first stored message
		}
	}

	value := fileValue(first, stored+len(records), f.More)
	if err := ids.Put(key, value); err != nil {
		return false, fmt.Errorf("store identity of %s: %w", f.ID.Name, err)
	}
	return false, nil
}

// encodeRecords encodes the records of msgs into one allocation, since
// they live as long as the transaction that stores them.
func encodeRecords(enqueued time.Time, msgs []message.Message) [][]byte {
	size := 0
	for i := range msgs {
		size += recordSize(&msgs[i])
	}
	buf := make([]byte, 0, size)
	records := make([][]byte, len(msgs))
	for i := range msgs {
		start := len(buf)
		buf = appendRecord(buf, enqueued, &msgs[i])
		records[i] = buf[start:len(buf):len(buf)]
	}
	return records
}

func recordsSize(records [][]byte) int64 {
	var n int64
	for _, r := range records {
		n += int64(len(r))
	}
	return n
}

// Seen reports whether a file with this identity was appended, in full
// or in part, and not yet forgotten.
func (s *Spool) Seen(id FileID) (bool, error) {
	var seen bool
	err := s.view("look up file identity", func(tx *bolt.Tx) error {
		seen = tx.Bucket(bucketFiles).Get(fileKey(id)) != nil
		return nil
	})
	return seen, err
}

// FileIDs returns the stored identities: those of files appended and not
// yet forgotten.
func (s *Spool) FileIDs() ([]FileID, error) {
	var ids []FileID
	err := s.view("list file identities", func(tx *bolt.Tx) error {
		return tx.Bucket(bucketFiles).ForEach(func(k, _ []byte) error {
			if id, ok := parseFileKey(k); ok {
				ids = append(ids, id)
			}
			return nil
		})
	})
	return ids, err
}

// Forget removes file identities. Call it once the unlinks of those files
// are durable (the directory was fsynced), never before.
func (s *Spool) Forget(ids []FileID) error {
	if len(ids) == 0 {
		return nil
	}
	return s.write("forget file identities", func(tx *bolt.Tx, _ *totals) error {
		b := tx.Bucket(bucketFiles)
		for _, id := range ids {
			if err := b.Delete(fileKey(id)); err != nil {
				return fmt.Errorf("delete identity of %s: %w", id.Name, err)
			}
		}
		return nil
	})
}

// fileKey encodes every field of the identity, so a file replaced under
// the same name is a different file.
func fileKey(id FileID) []byte {
	b := make([]byte, 0, 32+len(id.Name))
	b = binary.BigEndian.AppendUint64(b, id.Dev)
	b = binary.BigEndian.AppendUint64(b, id.Ino)
	b = binary.BigEndian.AppendUint64(b, uint64(id.Size))
	b = binary.BigEndian.AppendUint64(b, uint64(id.Ctime))
	return append(b, id.Name...)
}

// parseFileKey decodes a key written by fileKey. It reports false for a
// key too short to be one.
func parseFileKey(k []byte) (FileID, bool) {
	if len(k) < 32 {
		return FileID{}, false
	}
	return FileID{
		Dev:   binary.BigEndian.Uint64(k),
		Ino:   binary.BigEndian.Uint64(k[8:]),
		Size:  int64(binary.BigEndian.Uint64(k[16:])),
		Ctime: int64(binary.BigEndian.Uint64(k[24:])),
		Name:  string(k[32:]),
	}, true
}

// fileValue records which sequence numbers the file produced, for
// inspection and for a file appended again after a crash: the first and
// how many are stored. A file appended in parts with parts still to come
// has a third field, a marker byte.
func fileValue(first uint64, n int, more bool) []byte {
	b := make([]byte, 0, 17)
	b = binary.BigEndian.AppendUint64(b, first)
	b = binary.BigEndian.AppendUint64(b, uint64(n))
	if more {
		b = append(b, partialMark)
	}
	return b
}

// partialMark ends the identity value of a file with parts still to come.
const partialMark = 'p'

// parseFileValue decodes a value written by fileValue. A value too short
// to hold the fields gives zeros, and partial reports the marker.
func parseFileValue(v []byte) (first uint64, n int, partial bool) {
	if len(v) < 16 {
		return 0, 0, false
	}
	first = binary.BigEndian.Uint64(v[:8])
	n = int(binary.BigEndian.Uint64(v[8:16]))
	return first, n, len(v) > 16 && v[16] == partialMark
}

// FileProgress reports how many messages of the file with this identity
// are stored, and whether all of them are. A file never appended, or
// appended and forgotten, gives 0 and false.
func (s *Spool) FileProgress(id FileID) (stored int, complete bool, err error) {
	err = s.view("look up file identity", func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketFiles).Get(fileKey(id))
		_, n, partial := parseFileValue(v)
		stored, complete = n, v != nil && !partial
		return nil
	})
	return stored, complete, err
}

// signalCursors wakes every cursor without blocking.
func (s *Spool) signalCursors() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.cursors {
		select {
		case c.ready <- struct{}{}:
		default:
		}
	}
}
