package inbox

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/mqspool/mqspool/internal/crashpoint"
	"github.com/mqspool/mqspool/internal/format"
)

// CrashAfterSync is the crash point between a durable file in new/ and
// the release of its acknowledgement; see package crashpoint.
const CrashAfterSync = "inbox-after-sync"

// movedFile is a message file renamed into new/, or a payload and its
// .reason renamed into failed/, whose directory has not been synced yet.
type movedFile struct {
	name      string
	dir       string // "new" or "failed"
	key       string // the QoS 2 flow key, or ""
	size      int
	replacing bool  // it replaced the file of the same flow
	cause     error // the encoding error of a message for failed/, or nil
}

// write stores d as one .msg file: tmp/, fsync, rename into new/, fsync
// of new/. A QoS 2 redelivery (Dup set) whose file an earlier process
// wrote and left in new/ replaces that file instead of adding one. A
// message that a .msg file cannot hold goes to failed/ instead.
//
// moved carries the file from one attempt for d to the next. Once the
// rename succeeded, a retry only syncs the directory again, because
// writing the message anew would leave a second copy of it.
func (in *Inbox) write(d Delivery, moved *movedFile) error {
	if moved.name == "" {
		var err error
		*moved, err = in.move(d)
		if err != nil {
			return in.withFix(err)
		}
	}

	if err := in.syncDir(filepath.Join(in.opts.Dir, moved.dir)); err != nil {
		return in.withFix(err)
	}
	if moved.cause != nil {
		in.mu.Lock()
		in.stats.Failed++
		in.mu.Unlock()
		in.log.Error("message moved to the inbox's failed/", "file", moved.name, "topic", d.Message.Topic,
			"err", moved.cause)
		return nil
	}
	crashpoint.Hit(CrashAfterSync)
	if moved.replacing {
		delete(in.flows, moved.key)
	}

	in.counted(d, moved.size, moved.replacing)
	in.log.Debug("message stored", "file", moved.name, "topic", d.Message.Topic, "qos", d.Message.QoS, "dup", d.Dup)
	return nil
}

// move renames the file of d into new/, or into failed/ when a .msg file
// cannot hold d.
func (in *Inbox) move(d Delivery) (movedFile, error) {
	data, err := encode(d)
	if err != nil {
		return in.moveFailed(d, err)
	}
	return in.moveNew(d, data)
}

// moveNew writes data into tmp/, syncs it and renames it into new/.
func (in *Inbox) moveNew(d Delivery, data []byte) (movedFile, error) {
	var key, name string
	if d.Message.QoS == 2 {
		key = FlowKey(d.PacketID, d.Message.Topic, d.Message.Payload)
		if d.Dup {
			name = in.findFlow(key)
		}
	}
	replacing := name != ""
	if !replacing {
		name = in.names.next(in.now(), key)
	}

	newDir := filepath.Join(in.opts.Dir, "new")
	tmp := filepath.Join(in.opts.Dir, "tmp", name)
	if err := writeSynced(tmp, data); err != nil {
		return movedFile{}, err
	}
	name, err := in.moveIntoNew(tmp, newDir, name, key, replacing)
	if err != nil {
		os.Remove(tmp)
		return movedFile{}, err
	}
	return movedFile{name: name, dir: "new", key: key, size: len(data), replacing: replacing}, nil
}

// moveIntoNew renames tmp into newDir and returns the final name. A
// redelivery replaces its file. Any other name must not exist yet, so a
// clock set back across a restart cannot overwrite a message under a name
// already used: the worker then takes the next name.
func (in *Inbox) moveIntoNew(tmp, newDir, name, key string, replacing bool) (string, error) {
	if replacing {
		if err := os.Rename(tmp, filepath.Join(newDir, name)); err != nil {
			return "", fmt.Errorf("move %s into %s: %w", name, newDir, err)
		}
		return name, nil
	}
	err := format.RenameNoReplace(tmp, filepath.Join(newDir, name))
	for tries := 0; errors.Is(err, os.ErrExist) && tries < 3; tries++ {
		name = in.names.next(in.now(), key)
		err = format.RenameNoReplace(tmp, filepath.Join(newDir, name))
	}
	if err != nil {
		return "", fmt.Errorf("move %s into %s: %w", name, newDir, err)
	}
	return name, nil
}

// encode returns the .msg form of d with the received headers.
func encode(d Delivery) ([]byte, error) {
	extra := []format.Header{
		{Name: format.HeaderReceivedAt, Value: d.ReceivedAt.UTC().Format(time.RFC3339Nano)},
		{Name: format.HeaderDup, Value: strconv.FormatBool(d.Dup)},
	}
	if d.SubscriptionIdentifier > 0 {
		extra = append([]format.Header{{Name: format.HeaderSubscriptionIdentifier,
			Value: strconv.Itoa(d.SubscriptionIdentifier)}}, extra...)
	}
	var b bytes.Buffer
	if err := format.WriteMsg(&b, d.Message, extra...); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// counted updates the backlog and counters after a durable write.
func (in *Inbox) counted(d Delivery, size int, replaced bool) {
	if !replaced {
		in.files++
		in.bytes += int64(size)
	}
	in.mu.Lock()
	in.stats.Received++
	if d.Dup {
		in.stats.Duplicates++
	}
	if replaced {
		in.stats.Replaced++
	}
	in.mu.Unlock()
	in.publishBacklog()
}

// findFlow returns the name in new/ written for a QoS 2 flow key, or "".
// It looks the key up in the names of the last count and of the files
// written since, and checks that the file is still there: reading new/
// for every redelivery took seconds per message with a large backlog.
func (in *Inbox) findFlow(key string) string {
	name := in.flows[key]
	if name == "" {
		return ""
	}
	if _, err := os.Lstat(filepath.Join(in.opts.Dir, "new", name)); err != nil {
		delete(in.flows, key)
		return ""
	}
	return name
}

// moveFailed keeps a message that a .msg file cannot hold (a property
// value with a line break, a user property key with '='): its payload
// goes to failed/ with a .reason file beside it, so it is not lost and
// its acknowledgement can be released. Both are written in tmp/ and
// renamed, payload first, so failed/ never shows a partial file or a
// .reason without its payload. A failed attempt removes what it wrote.
func (in *Inbox) moveFailed(d Delivery, cause error) (movedFile, error) {
	dir := filepath.Join(in.opts.Dir, "failed")
	if err := format.MkdirAllSync(dir); err != nil {
		return movedFile{}, err
	}
	name := in.names.next(in.now(), "")
	files := []struct {
		name string
		data []byte
	}{
		{name, d.Message.Payload},
		{name + ".reason", []byte(failedReason(d.Message.Topic, cause))},
	}
	tmpDir := filepath.Join(in.opts.Dir, "tmp")
	var written []string // paths to remove when an attempt fails
	undo := func() {
		for _, path := range written {
			os.Remove(path)
		}
	}
	for _, f := range files {
		tmp := filepath.Join(tmpDir, f.name)
		if err := writeSynced(tmp, f.data); err != nil {
			undo()
			return movedFile{}, err
		}
		written = append(written, tmp)
	}
	for _, f := range files {
		target := filepath.Join(dir, f.name)
		if err := format.RenameNoReplace(filepath.Join(tmpDir, f.name), target); err != nil {
			undo()
			return movedFile{}, fmt.Errorf("move %s into %s: %w", f.name, dir, err)
		}
		written = append(written, target)
	}
	return movedFile{name: name, dir: "failed", cause: cause}, nil
}

// failedReason returns the text of the .reason file for a received
// message that a .msg file cannot hold. It is written for the consumer
// of the inbox, who cannot change the message, so it leaves out the fix
// that cause gives a producer.
func failedReason(topic string, cause error) string {
	problem := cause.Error()
	var valueErr *format.ValueError
	if errors.As(cause, &valueErr) {
		problem = valueErr.Problem
	}
	return fmt.Sprintf("received on topic %q: a .msg file cannot hold this message: %s. "+
		"The file of the same name without .reason is its payload, unchanged. The message "+
		"was acknowledged, so the broker does not send it again. Only its publisher can "+
		"change it.\n", topic, problem)
}

// withFix adds to a failed write of the inbox what the operator can do
// about its cause.
func (in *Inbox) withFix(err error) error {
	switch {
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return fmt.Errorf("%w: free space on the file system of %s, or lower the subscription's max_bytes", err, in.opts.Dir)
	case errors.Is(err, syscall.EROFS):
		return fmt.Errorf("%w: mount the file system of %s read-write, or set the subscription's dir "+
			"to a writable file system", err, in.opts.Dir)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("%w: make %s writable by the daemon's user", err, in.opts.Dir)
	default:
		return err
	}
}

// writeSynced creates path with data and syncs it. Its errors name the
// operation and the path.
func writeSynced(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return err
	}
	return nil
}
