package inbox

import (
	"errors"
	"io/fs"
	"strings"
	"syscall"
	"testing"
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
