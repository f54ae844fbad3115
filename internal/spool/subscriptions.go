package spool

import (
	"bytes"

	bolt "go.etcd.io/bbolt"
)

// keySubscriptions holds the subscriptions the broker's session is known
// to hold, in the caller's encoding.
var keySubscriptions = []byte("session_subscriptions")

// SessionSubscriptions returns what [Spool.SaveSessionSubscriptions]
// stored last, or nil.
func (s *Spool) SessionSubscriptions() ([]byte, error) {
	var data []byte
	err := s.view("read session subscriptions", func(tx *bolt.Tx) error {
		data = bytes.Clone(tx.Bucket(bucketMeta).Get(keySubscriptions))
		return nil
	})
	return data, err
}

// SaveSessionSubscriptions stores the broker session's subscriptions in
// a transaction of its own.
func (s *Spool) SaveSessionSubscriptions(data []byte) error {
	return s.write("store session subscriptions", func(tx *bolt.Tx, _ *totals) error {
		return tx.Bucket(bucketMeta).Put(keySubscriptions, data)
	})
}
