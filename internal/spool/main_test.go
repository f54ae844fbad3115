package spool

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run if a test leaves a goroutine behind, such as a
// bbolt check that never finished.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
