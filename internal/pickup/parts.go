package pickup

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/mqspool/mqspool/internal/crashpoint"
	"github.com/mqspool/mqspool/internal/format"
	"github.com/mqspool/mqspool/internal/message"
	"github.com/mqspool/mqspool/internal/spool"
)

// A .jsonl file with more messages than partMessages, or more message
// bytes than partBytes, is appended in parts of at most that size. Each
// part has a commit of its own, so the messages of one file need not all
// be in memory at once. The whole file is checked before its first part,
// so bad input still rejects it before anything is stored.
const (
	partMessages = 4096
	partBytes    = batchBytes
)

// partedFile is a checked .jsonl file that is appended in parts, and how
// far it got. It is kept while the file waits at the head of the queue
// for room in the spool, so that the next try neither checks the file
// again nor parses the parts already stored.
type partedFile struct {
	id spool.FileID
	// route is the route matched when the file was checked, so that a
	// reload of the routes does not split the file between two of them.
	route *route
	// stored counts the file's messages in the store, and from is where
	// the first message not stored starts, once known. After a restart
	// only the count is known, and the parts are parsed from the start.
	stored int
	from   position
	known  bool // whether stored was read from the store
	total  int  // messages in the file, counted by the check
}

// partsOutcome is how far appendParts got with a file.
type partsOutcome int

const (
	partsStored   partsOutcome = iota // every part is stored, so the file can go
	partsWaiting                      // a part did not fit or failed, so try again later
	partsRejected                     // the file was moved to failed/
)

// errPartNotStored stops the walk over a file when a part was not stored.
var errPartNotStored = errors.New("part not stored")

// collect parses a whole file into its messages, with the route r, and
// counts them. A .jsonl file too long to keep in memory is checked to its
// end without keeping them, and reported as parted.
func (p *Pickup) collect(id spool.FileID, data []byte, r *route) (msgs []message.Message, total int, parted bool, err error) {
	size := 0
	msgs = make([]message.Message, 0, messageCapacity(id.Name, data))
	err = p.eachMessage(id, data, r, position{}, func(m message.Message, _ position) error {
		total++
		if parted {
			return nil
		}
		msgs = append(msgs, m)
		size += m.Size()
		if len(msgs) > partMessages || size > partBytes {
			msgs, parted = nil, true
		}
		return nil
	})
	if err != nil {
		return nil, 0, false, err
	}
	return msgs, total, parted, nil
}

// messageCapacity returns how many messages collect expects from the
// file name with content data: one per line of a .jsonl file, which may
// count blank lines, but no more than one part holds.
func messageCapacity(name string, data []byte) int {
	if format.KindOf(name) != format.KindJSONL {
		return 1
	}
	return min(bytes.Count(data, []byte("\n"))+1, partMessages+1)
}

// appendParts stores the parts of f that are not stored yet, in order.
// data is the file's content as read with the identity f.id.
func (p *Pickup) appendParts(f *partedFile, data []byte) partsOutcome {
	if !f.known {
		// NOTE: the stored identity includes the change time, so a file
		// chmod'ed or hard-linked while the daemon was down starts over.
		stored, complete, err := p.store.FileProgress(f.id)
		if err != nil {
			p.storeFailed(err)
			return partsWaiting
		}
		if complete {
			p.log.Info("file was already appended; not queueing it again", "file", f.id.Name)
			return partsStored
		}
		if stored > 0 {
			p.log.Info("resuming a file appended in parts", "file", f.id.Name, "stored", stored)
		}
		f.stored, f.known = stored, true
		p.showParted()
	}

	w := partWriter{p: p, f: f, start: f.from, end: f.from}
	err := p.eachMessage(f.id, data, f.route, f.from, w.add)
	if err == nil {
		err = w.flush(false)
	}

	switch {
	case err == nil:
		return partsStored
	case errors.Is(err, spool.ErrTooLarge):
		p.rejectFile(f.id.Name, fmt.Sprintf("a part of the file: %v%s", err, queuedBefore(f)))
		return partsRejected
	case errors.Is(err, errPartNotStored):
		return partsWaiting
	default:
		// The file was checked with the same route before its first
		// part, so only a restart with another configuration in between
		// makes it bad input now.
		p.rejectFile(f.id.Name, fmt.Sprintf("%v%s", err, queuedBefore(f)))
		return partsRejected
	}
}

// partedGone drops p.parted when its file left new/ (err is set) or
// changed to the identity now before its last part. It queues the old
// identity for removal, and the messages of the earlier parts stay queued.
func (p *Pickup) partedGone(now spool.FileID, err error) {
	f := p.parted
	p.parted = nil
	p.forget = append(p.forget, f.id)
	if f.stored == 0 {
		return
	}
	path := p.abs(f.id.Name)
	switch {
	case err != nil:
		p.log.Warn("file stored in parts left new/ before its last part; the rest of its messages are not queued",
			"path", path, "queued", f.stored)
	case now.Dev == f.id.Dev && now.Ino == f.id.Ino:
		p.log.Warn("file stored in parts changed in new/ before its last part; it is queued again as a new file, "+
			"so its first messages may arrive twice", "path", path, "queued", f.stored,
			"hint", "write files in tmp/ and rename them into new/ when complete")
	default:
		p.log.Warn("file stored in parts was replaced in new/ before its last part; the rest of its messages "+
			"are not queued, and the new file is taken as a file of its own", "path", path, "queued", f.stored,
			"hint", "give each file in new/ a name of its own")
	}
}

// queuedBefore names the messages of a rejected file that its earlier
// parts queued, if any.
func queuedBefore(f *partedFile) string {
	if f.stored == 0 {
		return ""
	}
	return fmt.Sprintf("; its first %d messages were queued before", f.stored)
}

// partWriter collects the messages of one part and appends it when the
// next message would not fit.
type partWriter struct {
	p     *Pickup
	f     *partedFile
	part  []message.Message
	size  int
	start position // the part's first message
	end   position // the end of the part's last message
}

// add takes the message that ends at after. Messages already stored are
// skipped.
func (w *partWriter) add(m message.Message, after position) error {
	if after.index <= w.f.stored {
		w.start, w.end = after, after
		return nil
	}
	if len(w.part) == partMessages || (len(w.part) > 0 && w.size+m.Size() > partBytes) {
		if err := w.flush(true); err != nil {
			return err
		}
	}
	w.part = append(w.part, m)
	w.size += m.Size()
	w.end = after
	return nil
}

// flush appends the collected part; more reports that parts follow.
func (w *partWriter) flush(more bool) error {
	fb := spool.FileBatch{ID: w.f.id, Messages: w.part, Start: w.start.index, More: more}
	accepted, err := w.p.append([]spool.FileBatch{fb})
	if accepted != 1 {
		// append has logged the error and set the backoff.
		if errors.Is(err, spool.ErrTooLarge) {
			return err
		}
		return errPartNotStored
	}
	if more {
		crashpoint.Hit(crashpoint.IngestAfterPart)
	}
	w.p.backoff = 0 // a wait for room before the next part starts short again

	w.f.stored, w.f.from = w.end.index, w.end
	w.start = w.end
	w.part = w.part[:0]
	w.size = 0
	w.p.showParted()
	return nil
}

// showParted puts the progress of the file stored in parts, or its
// absence, into the stats.
func (p *Pickup) showParted() {
	var progress PartedProgress
	if f := p.parted; f != nil {
		progress = PartedProgress{Path: p.abs(f.id.Name), Stored: f.stored, Total: f.total}
	}
	p.updateStats(func(s *Stats) { s.Parted = progress })
}
