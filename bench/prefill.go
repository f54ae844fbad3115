package main

import (
	"bytes"
	"fmt"

	"github.com/mqspool/mqspool/internal/message"
	"github.com/mqspool/mqspool/internal/spool"
)

// prefillBatch is how many messages one Append call stores.
const prefillBatch = 1000

// prefill stores n messages of size payload bytes with qos on dataTopic
// in a new spool database at path, through the spool's own API, so a
// daemon started on it finds them queued. It removes the file identities
// again, as the pickup does once it has unlinked the files, so that the
// daemon does not start by removing them.
func prefill(path string, n, size int, qos byte) error {
	s, err := spool.Open(spool.Options{Path: path})
	if err != nil {
		return fmt.Errorf("open spool %s: %w", path, err)
	}
	payload := bytes.Repeat([]byte("p"), size)
	var prev []spool.FileID
	for first := 0; first < n; first += prefillBatch {
		msgs := make([]message.Message, min(prefillBatch, n-first))
		for i := range msgs {
			msgs[i] = message.Message{Topic: dataTopic, Payload: payload, QoS: qos}
		}
		id := spool.FileID{Ino: uint64(first + 1), Name: fmt.Sprintf("prefill-%d", first)}
		if _, err := s.AppendForget([]spool.FileBatch{{ID: id, Messages: msgs}}, prev); err != nil {
			s.Close()
			return fmt.Errorf("append messages %d to %d to %s: %w", first, first+len(msgs)-1, path, err)
		}
		prev = []spool.FileID{id}
	}
	if err := s.Forget(prev); err != nil {
		s.Close()
		return fmt.Errorf("remove file identities from %s: %w", path, err)
	}
	if err := s.Close(); err != nil {
		return fmt.Errorf("close spool %s: %w", path, err)
	}
	return nil
}
