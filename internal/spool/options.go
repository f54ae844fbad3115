package spool

import (
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/mqspool/mqspool/internal/message"
)

// Defaults for zero Options fields.
const (
	DefaultLockTimeout       = time.Second
	DefaultReadAheadMessages = 256
	DefaultReadAheadBytes    = 4 << 20
	// MaxCommitDelay is the longest a write may wait to be grouped with
	// others when the spool is otherwise idle.
	MaxCommitDelay = 10 * time.Millisecond
)

// QuarantineFunc stores a message that leaves the spool undelivered. For a
// record that could not be decoded, m is nil and raw holds the stored
// bytes. Returning an error keeps the message in the spool.
type QuarantineFunc func(seq uint64, m *message.Message, raw []byte, reason string) error

// Options configure [Open].
type Options struct {
	// Path is the bbolt database file.
	Path string
	// LockTimeout is how long Open waits for another process to release
	// the file lock. Default 1s.
	LockTimeout time.Duration

	// MaxBytes and MaxMessages limit the queue; 0 is unlimited. Bytes are
	// the sizes of the stored records.
	MaxBytes    int64
	MaxMessages int64
	Overflow    OverflowPolicy

	// ReadAheadMessages and ReadAheadBytes bound what a Cursor holds in
	// memory. Defaults 256 messages and 4 MiB.
	ReadAheadMessages int
	ReadAheadBytes    int

	// CommitDelay is the longest a write may wait to share a commit with
	// others. Default and maximum 10ms. The spool currently waits not at
	// all: an Append or Commit that arrives while another commit runs
	// shares the next fsync with whatever else queued meanwhile.
	CommitDelay time.Duration

	// Logger receives drops, quarantines and recoveries. Nil discards.
	Logger *slog.Logger
	// Quarantine is called before a failed or undecodable message is
	// deleted, inside the write transaction that deletes it, so it must
	// not call the Spool. Nil only logs such messages.
	Quarantine QuarantineFunc
	// OnDrop is called with the sequence number of each message that
	// OverflowDropOldest deleted, after the deletion committed. It must
	// not call the Spool. Nil only logs them.
	OnDrop func(seq uint64)
	// OnRoomFreed is called after a Commit that deleted messages has
	// committed, so a writer that waits for room in a full spool can try
	// again. It must not call the Spool. Nil does nothing.
	OnRoomFreed func()
	// ReadOnly opens the database for inspection: no writes, no lock
	// against other readers, and no renaming aside of a damaged file.
	ReadOnly bool
	// FullCheck runs the consistency check at open even on a large file
	// that was closed cleanly, which Open otherwise trusts.
	FullCheck bool
}

func (o *Options) applyDefaults() error {
	if o.Path == "" {
		return fmt.Errorf("spool path is empty: set spool.db")
	}
	if o.LockTimeout <= 0 {
		o.LockTimeout = DefaultLockTimeout
	}
	if o.ReadAheadMessages <= 0 {
		o.ReadAheadMessages = DefaultReadAheadMessages
	}
	if o.ReadAheadBytes <= 0 {
		o.ReadAheadBytes = DefaultReadAheadBytes
	}
	if o.CommitDelay <= 0 || o.CommitDelay > MaxCommitDelay {
		o.CommitDelay = MaxCommitDelay
	}
	if o.MaxBytes < 0 || o.MaxMessages < 0 {
		return fmt.Errorf("spool limits max_bytes %d and max_messages %d must not be negative: use 0 for unlimited", o.MaxBytes, o.MaxMessages)
	}
	if o.Overflow != OverflowReject && o.Overflow != OverflowDropOldest {
		return fmt.Errorf("overflow policy %d is invalid: use OverflowReject or OverflowDropOldest", o.Overflow)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return nil
}
