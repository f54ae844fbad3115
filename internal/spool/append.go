package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Append stores the messages of files in one fsync'd transaction, each
// file's messages under new increasing sequence numbers together with the
// file's identity. Files are taken in order. When a limit leaves no room
// for a file under OverflowReject, that file and the ones after it are not
// stored, and the error wraps ErrFull. A file that could never fit stops
// the call the same way with ErrTooLarge. A file whose identity is
// already stored (see [Spool.Seen]) is counted as accepted without
// storing its messages again. accepted counts the files taken, which are
// durable even when err is not nil.
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
		msgs := tx.Bucket(bucketMessages)
		msgs.FillPercent = messagesFillPercent
		ids := tx.Bucket(bucketFiles)
		now := time.Now()
		for _, id := range forget {
			if err := ids.Delete(fileKey(id)); err != nil {
				return fmt.Errorf("delete identity of %s: %w", id.Name, err)
			}
		}

		for i, f := range files {
			// A file whose identity is stored was appended before a crash
			// stopped its unlink; taking it again would duplicate it.
			if v := ids.Get(fileKey(f.ID)); v != nil {
				repeats = append(repeats, f.ID.Name)
				files[i].FirstSeq = fileFirstSeq(v)
				accepted++
				continue
			}
			records := encodeFile(now, f)
			size := recordsSize(records)
			if err := s.checkRoom(tx, t, f.ID, int64(len(records)), size, &drops); err != nil {
				if errors.Is(err, ErrFull) || errors.Is(err, ErrTooLarge) {
					stop = err
					return nil
				}
				return err
			}
			first := t.lastSeq + 1
			for _, rec := range records {
				t.lastSeq++
				if err := msgs.Put(seqKey(t.lastSeq), rec); err != nil {
					return fmt.Errorf("store message %d of %s: %w", t.lastSeq, f.ID.Name, err)
				}
				t.messages++
				t.bytes += int64(len(rec))
			}
			if err := ids.Put(fileKey(f.ID), fileValue(first, len(records))); err != nil {
				return fmt.Errorf("store identity of %s: %w", f.ID.Name, err)
			}
			if len(records) > 0 {
				files[i].FirstSeq = first
			}
			accepted++
		}
		return nil
	})
	if err != nil {
		return 0, err
	}

	s.logDrops(drops)
	for _, name := range repeats {
		s.log.Info("file was already appended; not queueing it again", "file", name)
	}
	if accepted > 0 {
		s.signalCursors()
	}
	return accepted, stop
}

func encodeFile(now time.Time, f FileBatch) [][]byte {
	records := make([][]byte, len(f.Messages))
	for i := range f.Messages {
		records[i] = encodeRecord(now, &f.Messages[i])
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

// Seen reports whether a file with this identity was appended and not yet
// forgotten.
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
// inspection.
func fileValue(first uint64, n int) []byte {
	b := binary.BigEndian.AppendUint64(nil, first)
	return binary.BigEndian.AppendUint64(b, uint64(n))
}

// fileFirstSeq returns the first sequence number stored by fileValue, or 0
// for a value too short to hold one.
func fileFirstSeq(v []byte) uint64 {
	if len(v) < 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v[:8])
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
