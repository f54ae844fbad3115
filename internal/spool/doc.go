// Package spool is mqspool's durable message queue, kept in a bbolt
// database.
//
// # What is durable when
//
// Every method that changes the database returns only after its bbolt
// transaction has been committed, which fsyncs the file. In particular:
//
//   - [Spool.Append] stores a file's messages and the file's identity
//     ([FileID]) in one transaction. Once it returns, the messages are
//     accepted and the file may be unlinked. Until [Spool.Forget] runs,
//     [Spool.Seen] reports the file and Append skips it, so a crash
//     between the commit and the unlink does not enqueue it twice.
//   - [Spool.Commit] applies a batch of session changes from the event
//     loop in one transaction. For QoS 2, PUBREC deletes the message and
//     moves its flow record to the PUBREL stage in the same transaction.
//   - [Spool.SaveState] writes the whole session state in one
//     transaction.
//
// Reading through a [Cursor] removes nothing. A message leaves the
// database only through Commit, through drop-oldest when a limit is
// reached, or by quarantine of a damaged record, so a crash loses no
// accepted message.
//
// # Damaged databases
//
// Open checks the database when the previous process did not close it
// cleanly, and a database it cannot open or check is renamed aside as
// PATH.corrupt-TIMESTAMP and replaced by an empty one; nothing is deleted.
// [Salvage] copies the readable messages out of such a file. A stored
// message that fails its checksum is handed to Options.Quarantine and then
// deleted, so one bad record never blocks the queue.
package spool
