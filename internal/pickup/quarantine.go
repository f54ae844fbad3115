package pickup

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/mqspool/mqspool/internal/format"
	"github.com/mqspool/mqspool/internal/message"
)

// maxSuffix bounds the search for a free name in failed/.
const maxSuffix = 10000

// rejectFile moves a bad file from new/ to failed/ under its relative
// path, writes the reason beside it, logs it and counts it.
func (p *Pickup) rejectFile(rel, reason string) {
	text := fmt.Sprintf("%s\n\nThe file was new/%s. To retry it, fix it and move it back "+
		"into new/ (without this .reason file).", reason, rel)
	dst, err := p.place(rel, text, func(dst string) error {
		return format.RenameNoReplace(p.abs(rel), dst)
	})
	if err != nil && dst != "" && !p.unplace(dst, p.abs(rel)) {
		p.log.Error("bad spool file is in failed/ without its .reason file", "failed_path", dst,
			"reason", reason, "err", err)
		p.setError(err)
		return
	}
	if err == nil {
		err = format.SyncDir(filepath.Dir(p.abs(rel)))
	}
	if errors.Is(err, os.ErrNotExist) {
		return
	}
	if err != nil {
		p.holdReject(rel, reason, err)
		return
	}
	delete(p.rejectHeld, rel)
	p.log.Warn("moved bad spool file to failed/", "path", p.abs(rel), "failed_path", dst,
		"reason", reason)
	p.updateStats(func(s *Stats) { s.FilesFailed++ })
}

// heldReject is a bad file whose move to failed/ failed.
type heldReject struct {
	failedAt time.Time // the last failed move
	loggedAt time.Time // the last log line about it
}

// rejectLogInterval is how often one bad file that cannot be moved to
// failed/ is logged.
const rejectLogInterval = time.Minute

// holdReject keeps a bad file that could not be moved to failed/ in new/
// until the next rescan, and events for it are ignored until then. When
// its .reason file cannot be written, as on a full disk, the file is moved
// back into new/, and that move raises an event of its own. Without the
// hold, that event would retry it at once and log an error each time.
// The file is logged at most once a minute.
func (p *Pickup) holdReject(rel, reason string, err error) {
	now := p.now()
	h := p.rejectHeld[rel]
	h.failedAt = now
	if now.Sub(h.loggedAt) >= rejectLogInterval {
		h.loggedAt = now
		p.log.Error("move bad spool file to failed/; it stays in new/ and is retried at each rescan",
			"path", p.abs(rel), "reason", reason, "err", err)
	}
	p.rejectHeld[rel] = h
	p.setError(err)
}

// rejectHeldBack reports whether rel is a bad file whose move to failed/
// failed less than half a rescan interval ago. It uses half so that the
// next rescan takes the file even when the failure came right after the
// last one.
func (p *Pickup) rejectHeldBack(rel string) bool {
	h, ok := p.rejectHeld[rel]
	return ok && p.now().Sub(h.failedAt) < p.opts.RescanInterval/2
}

// pruneRejectHeld removes the files whose move has not failed for a
// minute from rejectHeld: they were moved, fixed or removed.
func (p *Pickup) pruneRejectHeld() {
	now := p.now()
	for rel, h := range p.rejectHeld {
		if now.Sub(h.failedAt) >= rejectLogInterval {
			delete(p.rejectHeld, rel)
		}
	}
}

// RecordExt ends the name of a file in failed/ that contains a stored record
// which could not be decoded into a message. Such a file is not a spool
// file format, so requeue-failed leaves it in failed/.
const RecordExt = ".record"

// recordNote is added to the reason of a record written with RecordExt.
const recordNote = "\nThis file is the stored record as it was, because it could not be decoded " +
	"into a message, so moving it into new/ would publish these bytes as a raw payload. " +
	"If its topic and payload are still legible (od -c FILE), publish them with mqspool publish, " +
	"then delete this file and its .reason file."

// Quarantine writes a message that cannot be delivered into failed/ as
// rel with ".msg" appended (unless rel already ends in .msg), and the
// reason into a .reason file beside it. When m has a value that a .msg
// header cannot hold, it is written as rel with ".jsonl" appended
// instead. When m is nil, raw is written as it is, as rel with RecordExt
// appended. rel is a
// slash-separated relative path such as the original file's name. It
// returns the path it wrote, for the caller to log. It is safe from any
// goroutine.
func (p *Pickup) Quarantine(rel string, m *message.Message, raw []byte, reason string) (string, error) {
	if !filepath.IsLocal(filepath.FromSlash(rel)) {
		return "", fmt.Errorf("quarantine name %q: %w", rel, format.ErrUnsafeName)
	}
	data := raw
	if m != nil {
		var err error
		data, rel, reason, err = encodeQuarantined(Unprefixed(*m, p.opts.TopicPrefix), rel, reason)
		if err != nil {
			return "", fmt.Errorf("quarantine %s: %w", rel, err)
		}
	} else {
		rel += RecordExt
		reason += recordNote
	}

	tmp, err := format.WriteTemp(p.tmpDir, ".quarantine-", 0o640, data)
	if err != nil {
		return "", err
	}
	dst, err := p.place(rel, reason, func(dst string) error {
		return format.RenameNoReplace(tmp, dst)
	})
	if err != nil {
		os.Remove(tmp)
		if dst != "" {
			// The caller keeps the message, so a copy here would be a second one.
			os.Remove(dst)
			os.Remove(dst + ".reason")
		}
		return "", fmt.Errorf("quarantine %s: %w", rel, err)
	}
	p.updateStats(func(s *Stats) { s.FilesFailed++ })
	return dst, nil
}

// encodeQuarantined returns m as a .msg file and rel with that extension.
// A message with a value that a .msg header cannot hold, such as a user
// property key with '=', becomes a .jsonl file instead, so that its topic
// and properties are kept, and a line added to reason gives the cause.
func encodeQuarantined(m message.Message, rel, reason string) (data []byte, name, why string, err error) {
	var buf bytes.Buffer
	msgErr := format.WriteMsg(&buf, m)
	if msgErr == nil {
		if path.Ext(rel) != ".msg" {
			rel += ".msg"
		}
		return buf.Bytes(), rel, reason, nil
	}

	buf.Reset()
	if err := format.WriteJSONL(&buf, m); err != nil {
		return nil, rel, reason, errors.Join(msgErr, err)
	}
	reason += fmt.Sprintf("\nThis file is .jsonl, because the message cannot be written as .msg: %v", msgErr)
	return buf.Bytes(), rel + ".jsonl", reason, nil
}

// Unprefixed returns m with prefix, the publish.topic_prefix that the
// pickup added, taken off its topic. A .msg file of a stored message that
// is moved back into new/ then gets the prefix once and not twice.
//
// NOTE: a message queued under another prefix keeps its topic, and gets
// the current prefix on top when it is moved back.
func Unprefixed(m message.Message, prefix string) message.Message {
	if prefix != "" && len(m.Topic) > len(prefix) && strings.HasPrefix(m.Topic, prefix) {
		m.Topic = m.Topic[len(prefix):]
	}
	return m
}

// place puts a file into failed/ under rel, or under rel with a number
// before its extension when that name is taken, using move. It then
// writes NAME.reason, syncs the directory and returns the name used. When
// an error comes after the move, it returns the name with the error, and
// the file is counted in failed/ from the next walk if it stays there.
func (p *Pickup) place(rel, reason string, move func(dst string) error) (string, error) {
	p.failed.placeMu.Lock()
	defer p.failed.placeMu.Unlock()
	dst, err := p.placeFile(rel, reason, move)
	if err == nil {
		p.failed.add(dst, dst+".reason")
	}
	return dst, err
}

func (p *Pickup) placeFile(rel, reason string, move func(dst string) error) (string, error) {
	rel = fitName(rel)
	dir := filepath.Join(p.failedDir, filepath.Dir(filepath.FromSlash(rel)))
	if err := format.MkdirAllSync(dir); err != nil {
		return "", err
	}
	for n := 0; n < maxSuffix; n++ {
		dst := filepath.Join(p.failedDir, filepath.FromSlash(withSuffix(rel, n)))
		if _, err := os.Lstat(dst + ".reason"); err == nil {
			continue
		}
		err := move(dst)
		if errors.Is(err, os.ErrExist) {
			continue
		}
		if err != nil {
			return "", err
		}
		if err := p.writeReason(dst+".reason", reason); err != nil {
			return dst, err
		}
		return dst, format.SyncDir(dir)
	}
	return "", fmt.Errorf("no free name for %s in failed/ after %d tries: clean up failed/",
		rel, maxSuffix)
}

// unplace moves a file that place moved to dst back to src, after its
// .reason file could not be written, and removes what was written of
// that. It reports false when the file stays at dst.
func (p *Pickup) unplace(dst, src string) bool {
	if err := format.RenameNoReplace(dst, src); err != nil {
		return false
	}
	os.Remove(dst + ".reason")
	return true
}

// nameMax is the longest file name most Linux file systems take (NAME_MAX).
const nameMax = 255

// fitName shortens the last element of rel, keeping its extension, so that
// it still fits nameMax with a number suffix and ".reason" added. Without
// that, a name near the limit would reach failed/ without its reason file,
// and a second file of that name could not reach failed/ at all. The
// reason file records the original name.
func fitName(rel string) string {
	room := nameMax - len(".reason") - len("."+strconv.Itoa(maxSuffix))
	base := path.Base(rel)
	if len(base) <= room {
		return rel
	}
	ext := path.Ext(base)
	if len(ext) > room/2 {
		ext = ""
	}
	stem := strings.TrimSuffix(base, ext)[:room-len(ext)-1]
	for !utf8.ValidString(stem) {
		stem = stem[:len(stem)-1]
	}
	return path.Join(path.Dir(rel), stem+"~"+ext)
}

// withSuffix returns rel for n = 0, and otherwise rel with ".n" before
// its extension, so "a/b.msg" becomes "a/b.1.msg" and keeps its format.
func withSuffix(rel string, n int) string {
	if n == 0 {
		return rel
	}
	ext := path.Ext(rel)
	if strings.Contains(ext, "/") || ext == path.Base(rel) {
		ext = ""
	}
	return strings.TrimSuffix(rel, ext) + "." + strconv.Itoa(n) + ext
}

// writeReason writes the reason file through tmp/ so it appears whole.
func (p *Pickup) writeReason(name, reason string) error {
	tmp, err := format.WriteTemp(p.tmpDir, ".quarantine-", 0o640, []byte(strings.TrimRight(reason, "\n")+"\n"))
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, name); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write reason file: %w", err)
	}
	return nil
}
