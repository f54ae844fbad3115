// Package format reads and writes the files that producers drop into the
// spool directory: .msg files (MQTT headers, a blank line, the payload),
// .jsonl files (one JSON object per message) and raw files (the whole file
// is the payload, the topic comes from the directory path).
//
// Parsers never touch the disk and keep no state, so they are safe for
// concurrent use. [WriteFileAtomic] implements the drop itself: it writes
// into tmp/, syncs the file, renames it into new/ and syncs new/, so the
// file is durable and complete when it appears.
package format
