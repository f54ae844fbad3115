package spool

import (
	"errors"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/mqspool/mqspool/internal/state"
)

func TestGroupCommitIsolatesFailure(t *testing.T) {
	s := openSpool(t, testOptions(t))
	boom := errors.New("boom")
	put := func(key string) func(*bolt.Tx, *totals) error {
		return func(tx *bolt.Tx, _ *totals) error {
			return tx.Bucket(bucketMeta).Put([]byte(key), []byte{1})
		}
	}
	group := []*pendingWrite{
		{op: "first", fn: put("first"), done: make(chan error, 1)},
		{op: "fails", fn: func(*bolt.Tx, *totals) error { return boom }, done: make(chan error, 1)},
		{op: "third", fn: put("third"), done: make(chan error, 1)},
	}
	s.writeMu.Lock()
	s.commitGroup(group)
	s.writeMu.Unlock()

	for i, want := range []error{nil, boom, nil} {
		if err := <-group[i].done; !errors.Is(err, want) {
			t.Fatalf("write %s: error = %v, want %v", group[i].op, err, want)
		}
	}
	err := s.view("read", func(tx *bolt.Tx) error {
		for _, key := range []string{"first", "third"} {
			if tx.Bucket(bucketMeta).Get([]byte(key)) == nil {
				t.Errorf("write %s was not committed", key)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestGroupCommitSharesTotals(t *testing.T) {
	s := openSpool(t, testOptions(t))
	mustAppend(t, s, batch("a", 0, 2))
	group := []*pendingWrite{
		{op: "append", fn: func(tx *bolt.Tx, tot *totals) error {
			tot.lastSeq++
			tot.messages++
			tot.bytes += 10
			return tx.Bucket(bucketMessages).Put(seqKey(tot.lastSeq), make([]byte, 10))
		}, done: make(chan error, 1)},
		{op: "deliver", fn: func(tx *bolt.Tx, tot *totals) error {
			j := journalTx{s: s, tx: tx, t: tot}
			return j.apply(state.Change{Kind: state.ChangeDelivered, Seq: 1})
		}, done: make(chan error, 1)},
	}
	before := s.Stats().Bytes
	s.writeMu.Lock()
	s.commitGroup(group)
	s.writeMu.Unlock()
	for _, w := range group {
		if err := <-w.done; err != nil {
			t.Fatalf("write %s: %v", w.op, err)
		}
	}
	m := testMessage(0)
	equal(t, "messages", s.Stats().Messages, int64(2))
	equal(t, "bytes", s.Stats().Bytes, before+10-int64(len(encodeRecord(time.Time{}, &m))))
	equal(t, "group commits", s.groupCommits, uint64(1))
}
