package pickup

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/mqspool/mqspool/internal/message"
)

// The pickup's figures start from a walk, count each quarantined message
// at once, and take what other processes changed from the next
// housekeeping walk.
func TestPickupFailedUsage_CountsWithoutWalk(t *testing.T) {
	opts := testOptions(t)
	p, err := New(opts, newFakeStore())
	if err != nil {
		t.Fatal(err)
	}
	failed := filepath.Join(opts.Dir, "failed")
	os.WriteFile(filepath.Join(failed, "old.msg"), []byte("0123456789"), 0o644)
	os.WriteFile(filepath.Join(failed, "old.msg.reason"), []byte("why"), 0o644)

	if files, bytes := p.FailedUsage(); files != 1 || bytes != 13 {
		t.Errorf("before any walk: %d files, %d bytes; want 1 and 13", files, bytes)
	}

	m := &message.Message{Topic: "a/b", QoS: 1, Payload: []byte("p")}
	if _, err := p.Quarantine("spool/42", m, nil, "broker rejected it: not authorized (0x87)"); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Quarantine("raw", nil, []byte("x"), "r"); err != nil {
		t.Fatal(err)
	}
	wantFiles, wantBytes := FailedUsage(opts.Dir)
	files, bytes := p.FailedUsage()
	if files != wantFiles {
		t.Errorf("after two quarantined messages: %d files, want %d as a walk counts", files, wantFiles)
	}
	if bytes != wantBytes {
		t.Errorf("after two quarantined messages: %d bytes, want %d as a walk counts", bytes, wantBytes)
	}

	// A file removed by another process counts until the next walk.
	os.Remove(filepath.Join(failed, "old.msg"))
	os.Remove(filepath.Join(failed, "old.msg.reason"))
	if files, _ := p.FailedUsage(); files != wantFiles {
		t.Errorf("before the walk: %d files, want the %d counted before", files, wantFiles)
	}
	p.housekeeping()
	if files, bytes := p.FailedUsage(); files != wantFiles-1 || bytes != wantBytes-13 {
		t.Errorf("after the walk: %d files, %d bytes; want %d and %d", files, bytes, wantFiles-1, wantBytes-13)
	}
}

// Messages quarantined while walks run are each counted once.
func TestPickupFailedUsage_QuarantineDuringWalks(t *testing.T) {
	opts := testOptions(t)
	p, err := New(opts, newFakeStore())
	if err != nil {
		t.Fatal(err)
	}
	for i := range 500 {
		os.WriteFile(filepath.Join(opts.Dir, "failed", fmt.Sprintf("old-%03d.msg", i)), []byte("x"), 0o644)
	}

	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			default:
				p.failed.refresh()
			}
		}
	})
	m := &message.Message{Topic: "a/b", QoS: 1, Payload: []byte("p")}
	for i := range 200 {
		if _, err := p.Quarantine(fmt.Sprintf("spool-%d", i%3), m, nil, "rejected"); err != nil {
			t.Fatal(err)
		}
	}
	close(done)
	wg.Wait()

	wantFiles, wantBytes := FailedUsage(opts.Dir)
	files, bytes := p.FailedUsage()
	if files != wantFiles {
		t.Errorf("%d files counted, want %d as a walk counts", files, wantFiles)
	}
	if bytes != wantBytes {
		t.Errorf("%d bytes counted, want %d as a walk counts", bytes, wantBytes)
	}
}
