package spool

import (
	"errors"
	"time"

	"github.com/mqspool/mqspool/internal/message"
)

// FileID is the identity of a spool-directory file, committed in the same
// transaction as its messages so that a crash between that commit and the
// unlink does not enqueue the file twice.
type FileID struct {
	Dev   uint64
	Ino   uint64
	Size  int64
	Ctime int64 // change time in nanoseconds since the Unix epoch
	Name  string

	// Mtime is the modification time in nanoseconds when the file was
	// read. It is not stored, and 0 in identities read back from the
	// spool. The pickup compares it before the unlink, to keep a file
	// written to after it was read.
	Mtime int64
}

// FileBatch is the messages of one file, or of one part of a file too
// long to hold in memory at once, appended all or nothing.
type FileBatch struct {
	ID       FileID
	Messages []message.Message

	// Start is the index in the file of Messages[0], and More reports that
	// parts follow. A whole file has Start 0 and More false. The identity
	// of a file appended in parts records how many of its messages are
	// stored, and each part must start there (see [Spool.FileProgress]).
	Start int
	More  bool

	// FirstSeq and Count are set by [Spool.Append] for each file it
	// accepted: the sequence number of the first message this call
	// stored for the file (or, for a file appended before, of its first
	// message) and how many follow it in order. FirstSeq stays 0 when
	// there are none.
	FirstSeq uint64
	Count    int
}

// Record is a stored message with its place in the queue.
type Record struct {
	Seq uint64
	// Enqueued is the wall-clock time of the append. For a message with a
	// Message Expiry Interval, Cursor.Next and Load move it by the steps
	// of the wall clock since the append in this process.
	Enqueued time.Time
	Message  message.Message
}

// Errors returned by the spool.
var (
	// ErrFull is returned by Append when spool.max_bytes or
	// spool.max_messages leaves no room and the overflow policy is reject.
	ErrFull = errors.New("spool is full")
	// ErrLocked is returned by Open when another process holds the
	// database within the lock timeout.
	ErrLocked = errors.New("spool database is locked by another process")
	// ErrClosed is returned by every method after Close.
	ErrClosed = errors.New("spool is closed")
	// ErrNotFound is returned by Load for a sequence number not in the
	// queue.
	ErrNotFound = errors.New("message not found in spool")
)

// OverflowPolicy is Append's behaviour when a limit is reached.
type OverflowPolicy int

const (
	// OverflowReject keeps new files waiting until there is room.
	OverflowReject OverflowPolicy = iota
	// OverflowDropOldest deletes the oldest queued messages to make room.
	OverflowDropOldest
)
