package spool

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain serves database checks in child processes, and fails the run
// if a test leaves a goroutine behind, such as a bbolt check that never
// finished.
func TestMain(m *testing.M) {
	ServeCheck()
	goleak.VerifyTestMain(m)
}
