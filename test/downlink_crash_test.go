package test

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/mqspool/mqspool/test/harness"
)

// TestDownlink_RestartAndKill publishes QoS 1 and QoS 2 bursts while the
// daemon is stopped with SIGTERM and killed with SIGKILL. No message may
// be lost and no QoS 2 message stored twice. Every repeated QoS 1
// message must have a copy marked Dup.
func TestDownlink_RestartAndKill(t *testing.T) {
	broker := harness.StartBroker(t, "max_queued_messages 100000")
	root := t.TempDir()
	q1Dir, q2Dir := filepath.Join(root, "inbox-q1"), filepath.Join(root, "inbox-q2")
	d := harness.NewDaemon(t, broker.URL(), fmt.Sprintf(`subscriptions:
  - filter: burst/q1
    qos: 1
    dir: %s
  - filter: burst/q2
    qos: 2
    dir: %s
`, q1Dir, q2Dir))
	d.DumpOnFailure()
	d.Start()
	waitSubscribed(t, d, 2)

	q1 := startLinePublisher(t, broker, "burst/q1", 1)
	q2 := startLinePublisher(t, broker, "burst/q2", 2)
	const perRound, rounds = 150, 4
	total := 0
	for round := range rounds {
		for range perRound {
			q1.send(fmt.Sprintf("seq-%06d", total))
			q2.send(fmt.Sprintf("seq-%06d", total))
			total++
			if total%10 == 0 {
				time.Sleep(2 * time.Millisecond)
			}
		}
		// Stop in the middle of the burst: the publishers go on, and the
		// broker queues for the daemon's session.
		if round%2 == 0 {
			if code := d.Stop(10 * time.Second); code != 0 {
				t.Errorf("exit code after SIGTERM = %d, want 0", code)
			}
		} else {
			d.Kill()
		}
		for range perRound / 3 {
			q1.send(fmt.Sprintf("seq-%06d", total))
			q2.send(fmt.Sprintf("seq-%06d", total))
			total++
		}
		startConnected(t, d)
	}
	q1.close(t)
	q2.close(t)

	repeated := requireInboxesComplete(t, q1Dir, q2Dir, total)
	t.Logf("%d messages per qos, %d qos 1 repeated after 2 SIGTERM and 2 kill -9", total, repeated)
}

// tallyInbox counts the files per sequence number. unmarked lists the
// repeated numbers that have no copy with Dup: true.
func tallyInbox(t *testing.T, files []inboxFile, total int) (missing, dups, unmarked []int) {
	t.Helper()
	counts := make([]int, total)
	marked := make([]bool, total)
	for _, f := range files {
		var seq int
		if _, err := fmt.Sscanf(string(f.Message.Payload), "seq-%d", &seq); err != nil || seq >= total {
			t.Errorf("unexpected payload %q in %s", f.Message.Payload, f.Name)
			continue
		}
		counts[seq]++
		if f.Received["Dup"] == "true" {
			marked[seq] = true
		}
	}
	for seq, c := range counts {
		switch {
		case c == 0:
			missing = append(missing, seq)
		case c > 1:
			dups = append(dups, seq)
			if !marked[seq] {
				unmarked = append(unmarked, seq)
			}
		}
	}
	return missing, dups, unmarked
}
