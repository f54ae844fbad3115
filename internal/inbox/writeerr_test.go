package inbox

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mqspool/mqspool/internal/format"
	"github.com/mqspool/mqspool/internal/message"
)

// A failed write names the file once and adds what to do about its
// cause.
func TestInbox_WriteError_NamesFix(t *testing.T) {
	in := openTest(t, Options{})
	path := in.Dir() + "/tmp/x.msg"
	cases := []struct {
		cause        error
		want, absent string
	}{
		{syscall.ENOSPC, "free space on the file system of " + in.Dir(), ""},
		{syscall.EACCES, "make " + in.Dir() + " writable", ""},
		// Permissions do not make a read-only mount writable.
		{syscall.EROFS, "mount the file system of " + in.Dir() + " read-write", "daemon's user"},
		{syscall.EIO, "", ""},
	}
	for _, tc := range cases {
		err := in.withFix(&fs.PathError{Op: "write", Path: path, Err: tc.cause})

		if !errors.Is(err, tc.cause) {
			t.Errorf("%v: error %q does not wrap its cause", tc.cause, err)
		}
		if n := strings.Count(err.Error(), path); n != 1 {
			t.Errorf("%v: error %q names the file %d times, want once", tc.cause, err, n)
		}
		if tc.want != "" && !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %q lacks %q", tc.cause, err, tc.want)
		}
		if tc.absent != "" && strings.Contains(err.Error(), tc.absent) {
			t.Errorf("%v: error %q names %q, a fix for another cause", tc.cause, err, tc.absent)
		}
	}
}

// A message whose rename into new/ succeeded but whose sync of new/
// failed is in new/ already. The retry syncs new/ again and does not
// write the message a second time.
func TestInbox_SyncDirRetryWritesOnce(t *testing.T) {
	in := openTest(t, Options{})
	var syncs atomic.Int32
	in.syncDir = func(dir string) error {
		if filepath.Base(dir) == "new" && syncs.Add(1) <= 2 {
			return &fs.PathError{Op: "sync", Path: dir, Err: syscall.EIO}
		}
		return format.SyncDir(dir)
	}
	runTest(t, in)
	var released atomic.Int32
	in.Enqueue(delivery("cmd/a", "once", 1, &released))
	waitFor(t, "release", func() bool { return released.Load() == 1 })

	if n := syncs.Load(); n < 3 {
		t.Errorf("new/ synced %d times, want 2 failures and a success", n)
	}
	if names := newFiles(t, in); len(names) != 1 {
		t.Errorf("new/ contains %v, want the message once", names)
	}
	if st := in.Stats(); st.Received != 1 {
		t.Errorf("received = %d, want 1", st.Received)
	}
	if st := in.Stats(); st.BacklogFiles != 1 {
		t.Errorf("backlog = %d files, want 1", st.BacklogFiles)
	}
	if st := in.Stats(); st.WriteError != "" {
		t.Errorf("write error %q after the sync succeeded, want none", st.WriteError)
	}
}

// A message for failed/ whose write fails is tried again under a new
// name. Each attempt leaves nothing behind, and a retry after a failed
// sync of failed/ does not write the message a second time.
func TestInbox_FailedRetryWritesOnce(t *testing.T) {
	fixed := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cases := []struct {
		name  string
		setup func(t *testing.T, in *Inbox)
	}{
		{"payload not writable", func(t *testing.T, in *Inbox) {
			// The first two names are directories, so the payload
			// cannot take them.
			var names namer
			for range 2 {
				name := names.next(fixed, "")
				if err := os.MkdirAll(filepath.Join(in.Dir(), "failed", name), 0o755); err != nil {
					t.Fatal(err)
				}
			}
		}},
		{"sync of failed/ fails", func(t *testing.T, in *Inbox) {
			var syncs atomic.Int32
			in.syncDir = func(dir string) error {
				if filepath.Base(dir) == "failed" && syncs.Add(1) <= 2 {
					return &fs.PathError{Op: "sync", Path: dir, Err: syscall.EIO}
				}
				return format.SyncDir(dir)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := openTest(t, Options{})
			in.now = func() time.Time { return fixed }
			tc.setup(t, in)
			runTest(t, in)
			var released atomic.Int32
			d := delivery("a", "payload", 1, &released)
			d.Message.UserProperties = []message.UserProperty{{Key: "a=b", Value: "c"}}
			in.Enqueue(d)
			waitFor(t, "release", func() bool { return released.Load() == 1 })

			var payloads, reasons int
			entries, err := os.ReadDir(filepath.Join(in.Dir(), "failed"))
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range entries {
				switch {
				case !e.Type().IsRegular():
				case strings.HasSuffix(e.Name(), ".reason"):
					reasons++
				default:
					payloads++
				}
			}
			if payloads != 1 {
				t.Errorf("failed/ contains %d payloads, want 1", payloads)
			}
			if reasons != 1 {
				t.Errorf("failed/ contains %d .reason files, want 1", reasons)
			}
			if st := in.Stats(); st.Failed != 1 {
				t.Errorf("failed = %d, want 1", st.Failed)
			}
		})
	}
}
