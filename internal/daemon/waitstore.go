package daemon

import "github.com/mqspool/mqspool/internal/spool"

// trackingStore is the pickup's store: the spool, with each committed
// file's sequence numbers reported to the wait tracker.
type trackingStore struct {
	*spool.Spool
	waits *waitTracker
}

// Append appends through the spool and records where each file went.
func (s trackingStore) Append(files []spool.FileBatch) (int, error) {
	n, err := s.Spool.Append(files)
	for _, f := range files[:n] {
		if f.FirstSeq > 0 && len(f.Messages) > 0 {
			s.waits.committed(f.ID.Name, f.FirstSeq, len(f.Messages))
		}
	}
	return n, err
}
