package spool

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"runtime/debug"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Salvage calls fn for every readable message in the database at path, in
// sequence order, without changing the file. It is meant for a database
// that Open renamed aside. It first reads through bbolt. When bbolt cannot
// open the file or panics on a damaged page, Salvage scans the file's
// pages directly for the remaining stored messages. skipped counts records that look
// like messages but fail their checksum. An error from fn stops Salvage
// and is returned.
func Salvage(path string, fn func(Record) error) (copied int, skipped int, err error) {
	last, copied, skipped, err := salvageBolt(path, fn)
	var cbErr callbackError
	if errors.As(err, &cbErr) {
		return copied, skipped, cbErr.err
	}
	if errors.Is(err, ErrLocked) || errors.Is(err, fs.ErrNotExist) {
		return copied, skipped, err
	}
	if err == nil {
		return copied, skipped, nil
	}

	slog.Default().Warn("bbolt could not read the whole file; scanning its pages directly",
		"path", path, "error", err, "copied_so_far", copied)
	n, bad, err := salvagePages(path, last, fn)
	return copied + n, skipped + bad, err
}

// RecordedMessages returns the number of queued messages that the meta
// bucket of the database at path records, and false when the file cannot
// be read that far. Salvage compares it with what it found.
func RecordedMessages(path string) (n int64, ok bool) {
	db, err := openForSalvage(path)
	if err != nil {
		return 0, false
	}
	defer db.Close()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if recover() != nil {
			n, ok = 0, false
		}
	}()
	err = db.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if meta == nil || meta.Get(keyMessages) == nil {
			return errors.New("no count recorded")
		}
		n = int64(getU64(meta, keyMessages))
		return nil
	})
	return n, err == nil
}

// callbackError carries an error returned by the caller's fn through
// bbolt's ForEach.
type callbackError struct{ err error }

func (e callbackError) Error() string { return e.err.Error() }

// salvageBolt reads the messages bucket through bbolt. It returns the
// last sequence number handed to fn, so a page scan can continue after
// it.
func salvageBolt(path string, fn func(Record) error) (last uint64, copied, skipped int, err error) {
	db, err := openForSalvage(path)
	if err != nil {
		return 0, 0, 0, err
	}
	defer db.Close()

	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: bbolt panicked after seq %d: %v", ErrCorrupt, last, r)
		}
	}()
	err = db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketMessages)
		if b == nil {
			return fmt.Errorf("%w: %s has no messages bucket", ErrCorrupt, path)
		}
		return b.ForEach(func(k, v []byte) error {
			if len(k) != 8 {
				return nil
			}
			enqueued, m, decErr := decodeRecord(v)
			if decErr != nil {
				skipped++
				return nil
			}
			if err := fn(Record{Seq: keySeq(k), Enqueued: enqueued, Message: m}); err != nil {
				return callbackError{err}
			}
			last = keySeq(k)
			copied++
			return nil
		})
	})
	return last, copied, skipped, err
}

func openForSalvage(path string) (db *bolt.DB, err error) {
	defer func() {
		if r := recover(); r != nil {
			db, err = nil, fmt.Errorf("%w: bbolt panicked while opening %s: %v", ErrCorrupt, path, r)
		}
	}()
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("salvage %s: %w", path, err)
	}
	if err := checkBeforeOpen(path); err != nil {
		return nil, err
	}
	db, err = bolt.Open(path, 0o400, &bolt.Options{ReadOnly: true, Timeout: DefaultLockTimeout})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("%w: %s: stop the running daemon before salvaging its database", ErrLocked, path)
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return db, nil
}

// salvagePages scans the file for leaf pages holding stored messages and
// calls fn for those with a sequence number above after, in order.
func salvagePages(path string, after uint64, fn func(Record) error) (copied, skipped int, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, fmt.Errorf("salvage %s: %w", path, err)
	}
	defer f.Close()

	found, skipped, err := scanPages(f, fileSize(path))
	if err != nil {
		return 0, skipped, err
	}
	for _, loc := range found.sorted() {
		if loc.seq <= after {
			continue
		}
		raw := make([]byte, loc.size)
		if _, err := f.ReadAt(raw, loc.offset); err != nil && !errors.Is(err, io.EOF) {
			return copied, skipped, fmt.Errorf("read message %d from %s: %w", loc.seq, path, err)
		}
		enqueued, m, decErr := decodeRecord(raw)
		if decErr != nil {
			skipped++
			continue
		}
		if err := fn(Record{Seq: loc.seq, Enqueued: enqueued, Message: m}); err != nil {
			return copied, skipped, err
		}
		copied++
	}
	return copied, skipped, nil
}
