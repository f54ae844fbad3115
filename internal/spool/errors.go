package spool

import "errors"

// Errors returned by the spool in addition to those in types.go.
var (
	// ErrTooLarge is returned by Append for a file whose messages alone
	// exceed spool.max_bytes or spool.max_messages, so it can never fit.
	ErrTooLarge = errors.New("file is larger than the whole spool limit")
	// ErrCorrupt is returned when bbolt finds a damaged page while the
	// spool is open. The database is then left marked as not closed
	// cleanly, so the next Open checks it and renames it aside.
	ErrCorrupt = errors.New("spool database is corrupt")
	// ErrReadOnly is returned by methods that write when the spool was
	// opened with Options.ReadOnly.
	ErrReadOnly = errors.New("spool is open read-only")
)
