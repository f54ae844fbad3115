package test

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mqspool/mqspool/test/harness"
)

// TestDownlink_ResumedSessionFollowsConfig restarts the daemon into its
// broker session: an unchanged list sends no SUBSCRIBE, and a changed
// one unsubscribes the removed filter and subscribes the new one.
func TestDownlink_ResumedSessionFollowsConfig(t *testing.T) {
	broker := harness.StartBroker(t, "")
	root := t.TempDir()
	aDir, bDir := filepath.Join(root, "inbox-a"), filepath.Join(root, "inbox-b")
	subA := fmt.Sprintf("subscriptions:\n  - filter: a/#\n    qos: 1\n    dir: %s\n", aDir)
	d := harness.NewDaemon(t, broker.URL(), subA)
	d.DumpOnFailure()
	d.Start()
	waitSubscribed(t, d, 1)
	stop := func() {
		if code := d.Stop(10 * time.Second); code != 0 {
			t.Fatalf("exit code after SIGTERM = %d, want 0", code)
		}
	}

	// Same list: the session keeps the subscription, nothing is sent.
	stop()
	startConnected(t, d)
	harness.WaitFor(t, 10*time.Second, "a resumed session", func() bool {
		return strings.Contains(d.Log(), "session_present=true")
	})
	mosquittoPub(t, broker, "a/1", 1, "kept")
	harness.WaitFor(t, 10*time.Second, "a/1 in inbox-a", func() bool { return len(readInbox(t, aDir)) == 1 })
	if n := strings.Count(d.Log(), "msg=subscribed"); n != 1 {
		t.Errorf("unchanged list subscribed %d times, want once", n)
	}

	// Changed list: a/# goes, b/# comes.
	stop()
	d.WriteConfig(broker.URL(), fmt.Sprintf("subscriptions:\n  - filter: b/#\n    qos: 1\n    dir: %s\n", bDir))
	d.Start()
	waitSubscribed(t, d, 2)
	harness.WaitFor(t, 10*time.Second, "unsubscribe of a/#", func() bool {
		return strings.Contains(d.Log(), "msg=unsubscribing")
	})
	mosquittoPub(t, broker, "a/2", 1, "gone")
	mosquittoPub(t, broker, "b/1", 1, "new")
	harness.WaitFor(t, 10*time.Second, "b/1 in inbox-b", func() bool { return len(readInbox(t, bDir)) == 1 })
	time.Sleep(300 * time.Millisecond)
	if strings.Contains(d.Log(), "matches no subscription") {
		t.Errorf("a/2 still arrived after the filter was removed")
	}
	if n := len(readInbox(t, aDir)); n != 1 {
		t.Errorf("inbox-a holds %d files, want only the one from before the change", n)
	}
}
