// Package inbox writes received MQTT messages into inbox directories as
// .msg files, durably, before their acknowledgement is released.
//
// An inbox directory holds tmp/ and new/, like the spool directory that
// producers write into: each message is written to tmp/, synced, renamed
// into new/ and the directory synced, and only then is its Release
// called. Consumers take files from new/ and remove them.
//
// Goroutines: [Inbox.Enqueue] is called by the goroutine that drives the
// event loop and never waits, so a slow disk cannot delay keep alive.
// [Inbox.Run] is the one worker goroutine of an inbox. It owns the
// directory, the file names and the backlog count. [Inbox.Stats] may be
// called from any goroutine.
package inbox
