package test

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/mqspool/mqspool/internal/crashpoint"
	"github.com/mqspool/mqspool/internal/inbox"
	"github.com/mqspool/mqspool/test/harness"
)

// TestDownlink_CrashAfterSync kills the daemon after a file is durable in
// new/ and before its acknowledgement is released. The broker sends the
// PUBLISH again with DUP: the QoS 2 copy replaces its file, and the QoS 1
// copy is a second file marked Dup.
func TestDownlink_CrashAfterSync(t *testing.T) {
	for _, qos := range []int{2, 1} {
		t.Run(fmt.Sprintf("qos%d", qos), func(t *testing.T) {
			broker := harness.StartBroker(t, "")
			dir := filepath.Join(t.TempDir(), "inbox")
			d := harness.NewDaemon(t, broker.URL(), fmt.Sprintf("subscriptions:\n  - filter: cp/#\n    qos: %d\n    dir: %s\n", qos, dir))
			d.DumpOnFailure()
			d.Env = []string{crashpoint.EnvVar + "=" + inbox.CrashAfterSync}
			d.Start()
			waitSubscribed(t, d, 1)

			mosquittoPub(t, broker, "cp/x", qos, "only once")
			if killed := d.WaitExit(10 * time.Second); !killed {
				t.Fatalf("daemon did not stop at crash point %s", inbox.CrashAfterSync)
			}
			if n := len(readInbox(t, dir)); n != 1 {
				t.Fatalf("after the crash the inbox holds %d files, want 1", n)
			}

			d.Env = nil
			d.Start()
			want := 1
			if qos == 1 {
				want = 2
			}
			harness.WaitFor(t, 10*time.Second, "the redelivery", func() bool {
				files := readInbox(t, dir)
				return len(files) == want && files[len(files)-1].Received["Dup"] == "true"
			})
			time.Sleep(300 * time.Millisecond)
			files := readInbox(t, dir)
			if len(files) != want {
				t.Fatalf("inbox holds %d files, want %d", len(files), want)
			}
			for _, f := range files {
				if string(f.Message.Payload) != "only once" {
					t.Errorf("file %s payload %q", f.Name, f.Message.Payload)
				}
			}
		})
	}
}
