// Package pickup turns files dropped into the spool directory into
// messages and hands them to the spool store.
//
// Producers write into tmp/ and rename into new/ (or a subdirectory of
// it). [Pickup.Run] watches new/ and every subdirectory with inotify,
// rescans the whole tree at start, after an event-queue overflow and every
// rescan interval, and ingests files in one global arrival order. A file
// is taken when it was renamed in, when a writer closed it after writing,
// or, at a rescan, once its size and modification time have not changed
// for the settle time.
//
// Each file is ingested exactly once: its identity (device, inode, size,
// change time, name) is committed by the store in the same transaction as
// its messages. Only then is the file unlinked and its directory synced,
// and only after that is the identity forgotten. A crash between commit
// and unlink therefore leaves a file whose identity the store has seen, and
// the next pickup unlinks it instead of appending it again.
//
// Bad input moves to failed/ under its relative path with a NAME.reason
// file beside it. All directory state belongs to the goroutine that runs
// Run. [Pickup.Stats] and [Pickup.Quarantine] are safe from any goroutine.
package pickup
