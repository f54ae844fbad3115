package eventloop

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/mqspool/mqspool/internal/state"
)

// ErrTimedOut is returned by [PublishAll] when some messages were not
// acknowledged within the timeout. Their outcomes have kind [TimedOut].
var ErrTimedOut = errors.New("messages not acknowledged in time")

// PublishAll publishes reqs on a loop of its own and waits until each one
// has an outcome or timeout passes. The outcomes are in the order of reqs,
// with Seq as given. Nothing is journaled: the session state lives in
// memory and ends with the call. The error is ErrTimedOut (wrapped) on a
// timeout, or why the loop ended early.
func PublishAll(ctx context.Context, opts Options, reqs []Request, timeout time.Duration) ([]Outcome, error) {
	if timeout <= 0 {
		return nil, fmt.Errorf("timeout %s is not positive: give the time to wait for acknowledgements", timeout)
	}
	src := &sliceSource{reqs: reqs}
	l, err := New(opts, src, memoryJournal{}, nil)
	if err != nil {
		return nil, err
	}
	defer l.Close()

	outcomes := make([]Outcome, len(reqs))
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	pending := len(reqs)
	for pending > 0 {
		ev, err := l.Poll(ctx)
		if err != nil {
			return fillUnfinished(outcomes, reqs, pending, timeout, err)
		}
		if ev.Kind != EventAcknowledged {
			continue
		}
		i := int(ev.Outcome.Seq - 1)
		outcomes[i] = ev.Outcome
		outcomes[i].Seq = reqs[i].Seq
		pending--
	}
	l.Shutdown(0)
	for {
		if _, err := l.Poll(ctx); err != nil {
			break
		}
	}
	return outcomes, nil
}

// fillUnfinished marks requests without an outcome as timed out and
// explains why the wait ended.
func fillUnfinished(outcomes []Outcome, reqs []Request, pending int, timeout time.Duration, cause error) ([]Outcome, error) {
	reason := cause.Error()
	if errors.Is(cause, context.DeadlineExceeded) {
		reason = fmt.Sprintf("not acknowledged within %s", timeout)
		cause = fmt.Errorf("%d of %d %w (timeout %s)", pending, len(reqs), ErrTimedOut, timeout)
	}
	for i := range outcomes {
		if outcomes[i].Kind == 0 {
			outcomes[i] = Outcome{Seq: reqs[i].Seq, Kind: TimedOut, Reason: reason}
		}
	}
	return outcomes, cause
}

// sliceSource yields a fixed list of requests, numbered 1 to n so that the
// caller's sequence numbers need not be unique.
type sliceSource struct {
	reqs []Request
	next int
}

func (s *sliceSource) Next() (Request, bool, error) {
	if s.next >= len(s.reqs) {
		return Request{}, false, nil
	}
	s.next++
	return s.request(s.next), true, nil
}

// Ready returns nil: a fixed list never grows.
func (s *sliceSource) Ready() <-chan struct{} { return nil }

func (s *sliceSource) Load(seq uint64) (Request, error) {
	if seq == 0 || seq > uint64(len(s.reqs)) {
		return Request{}, fmt.Errorf("sequence number %d is not among the %d requests", seq, len(s.reqs))
	}
	return s.request(int(seq)), nil
}

func (s *sliceSource) request(seq int) Request {
	r := s.reqs[seq-1]
	r.Seq = uint64(seq)
	return r
}

// memoryJournal accepts every change; the loop's own state is the only
// copy.
type memoryJournal struct{}

func (memoryJournal) Commit([]state.Change) error { return nil }
