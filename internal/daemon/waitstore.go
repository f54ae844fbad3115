package daemon

import "github.com/mqspool/mqspool/internal/spool"

// trackingStore is the pickup's store: the spool, with each committed
// file's sequence numbers reported to the wait tracker.
type trackingStore struct {
	*spool.Spool
	waits *waitTracker
}

// AppendForget appends through the spool and records where each file
// went.
func (s trackingStore) AppendForget(files []spool.FileBatch, forget []spool.FileID) (int, error) {
	n, err := s.Spool.AppendForget(files, forget)
	for _, f := range files[:n] {
		s.waits.committed(f.ID.Name, f.FirstSeq, f.Count, f.More)
	}
	return n, err
}
