package eventloop

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mqspool/mqspool/internal/state"
)

// batchJournal records the size of each Commit call.
type batchJournal struct {
	mu    sync.Mutex // guards sizes
	sizes []int
}

func (j *batchJournal) Commit(changes []state.Change) error {
	j.mu.Lock()
	j.sizes = append(j.sizes, len(changes))
	j.mu.Unlock()
	return nil
}

func (j *batchJournal) batches() []int {
	j.mu.Lock()
	defer j.mu.Unlock()
	return slices.Clone(j.sizes)
}

// newTestCommitter returns a committer that lingers after batches of at
// least from changes until until are pending, wait passed, or no change
// came for gap.
func newTestCommitter(t *testing.T, j Journal, from, until int, wait, gap time.Duration) *committer {
	t.Helper()
	return startCommitter(&committer{journal: j, lingerFrom: from, lingerUntil: until, lingerFor: wait, lingerGap: gap,
		retryDelay: commitRetryDelay})
}

func changes(n int) []state.Change {
	out := make([]state.Change, n)
	for i := range out {
		out[i] = state.Change{Kind: state.ChangeDelivered, Seq: uint64(i + 1)}
	}
	return out
}

func waitCommitted(t *testing.T, c *committer, ticket uint64) {
	t.Helper()
	waitFor(t, 5*time.Second, "commit", func() bool {
		_, committed, _ := c.progress()
		return committed >= ticket
	})
}

func TestCommitter_LingersAfterLargeBatch(t *testing.T) {
	j := &batchJournal{}
	c := newTestCommitter(t, j, 4, 1000, time.Hour, time.Hour)
	defer c.stop()
	waitCommitted(t, c, c.add(changes(4)...))

	for range 3 {
		c.add(changes(1)...)
	}
	time.Sleep(200 * time.Millisecond)
	if _, committed, _ := c.progress(); committed != 4 {
		t.Fatalf("%d changes committed while lingering, want 4", committed)
	}
	c.stop()
	if got, want := j.batches(), []int{4, 3}; !slices.Equal(got, want) {
		t.Fatalf("batches %v, want %v: the three changes after a large batch go in one commit, made at stop", got, want)
	}
}

func TestCommitter_LingerEndsWhenEnoughPending(t *testing.T) {
	j := &batchJournal{}
	c := newTestCommitter(t, j, 4, 10, time.Hour, time.Hour)
	defer c.stop()
	waitCommitted(t, c, c.add(changes(4)...))

	waitCommitted(t, c, c.add(changes(10)...))
	if got, want := j.batches(), []int{4, 10}; !slices.Equal(got, want) {
		t.Fatalf("batches %v, want %v", got, want)
	}
}

func TestCommitter_SmallBatchesCommitAtOnce(t *testing.T) {
	j := &batchJournal{}
	c := newTestCommitter(t, j, 4, 1000, time.Hour, time.Hour)
	defer c.stop()
	for range 3 {
		waitCommitted(t, c, c.add(changes(3)...))
	}
	if got, want := j.batches(), []int{3, 3, 3}; !slices.Equal(got, want) {
		t.Fatalf("batches %v, want %v", got, want)
	}
}

func TestCommitter_LingerEndsAtDeadline(t *testing.T) {
	j := &batchJournal{}
	c := newTestCommitter(t, j, 4, 1000, 100*time.Millisecond, 200*time.Millisecond)
	defer c.stop()
	waitCommitted(t, c, c.add(changes(4)...))

	// A change every 10ms keeps the gap rule from ending the wait, so
	// only the 100ms deadline splits the 60 changes into commits.
	var ticket uint64
	for range 60 {
		ticket = c.add(changes(1)...)
		time.Sleep(10 * time.Millisecond)
	}
	waitCommitted(t, c, ticket)
	if got := j.batches(); len(got) < 4 {
		t.Fatalf("batches %v, want the 60 changes over 600ms split by the 100ms deadline into 3 or more commits", got)
	}
}

func TestCommitter_LingerEndsWhenChangesStop(t *testing.T) {
	j := &batchJournal{}
	c := newTestCommitter(t, j, 4, 1000, time.Hour, 200*time.Millisecond)
	defer c.stop()
	waitCommitted(t, c, c.add(changes(4)...))

	// Changes keep coming more often than the gap, so the commit waits
	// for all of them.
	start := time.Now()
	var ticket uint64
	for range 5 {
		ticket = c.add(changes(1)...)
		time.Sleep(10 * time.Millisecond)
	}
	waitCommitted(t, c, ticket)
	if waited := time.Since(start); waited < 200*time.Millisecond {
		t.Errorf("commit came %s after the first change, want at least the 200ms gap", waited)
	}
	if got, want := j.batches(), []int{4, 5}; !slices.Equal(got, want) {
		t.Fatalf("batches %v, want %v", got, want)
	}
}

// A failed Commit is tried again with the same changes in front of those
// added since, so nothing is lost or reordered, and progress shows the
// error only while commits fail.
func TestCommitter_RetriesFailedBatchInOrder(t *testing.T) {
	j := &testJournal{}
	j.fail.Store(true)
	c := startCommitter(&committer{journal: j, lingerFrom: 1 << 30, retryDelay: 20 * time.Millisecond})
	defer c.stop()

	c.add(state.Change{Kind: state.ChangeSent, Seq: 1})
	waitFor(t, 5*time.Second, "the failure", func() bool { _, _, err := c.progress(); return err != nil })
	ticket := c.add(state.Change{Kind: state.ChangeAcked, Seq: 1}, state.Change{Kind: state.ChangeSent, Seq: 2})

	j.fail.Store(false)
	waitCommitted(t, c, ticket)
	if _, _, err := c.progress(); err != nil {
		t.Errorf("progress error %v after a commit succeeded, want none", err)
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	var got []uint64
	for _, ch := range j.changes {
		got = append(got, ch.Seq)
	}
	if want := []uint64{1, 1, 2}; !slices.Equal(got, want) {
		t.Errorf("committed seqs %v, want %v", got, want)
	}
}

// stop returns while commits fail, after one more try.
func TestCommitter_StopWhileFailing(t *testing.T) {
	j := &testJournal{}
	j.fail.Store(true)
	c := startCommitter(&committer{journal: j, lingerFrom: 1 << 30, retryDelay: time.Hour})
	c.add(state.Change{Kind: state.ChangeSent, Seq: 1})
	waitFor(t, 5*time.Second, "the failure", func() bool { _, _, err := c.progress(); return err != nil })

	stopped := make(chan struct{})
	go func() { c.stop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("stop did not return while commits failed")
	}
}
