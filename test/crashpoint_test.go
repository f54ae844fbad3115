package test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mqspool/mqspool/internal/crashpoint"
	"github.com/mqspool/mqspool/test/harness"
)

// TestCrashPoint_EveryDurableStep stops the daemon with SIGKILL at each
// durable step in turn, mid-stream, then starts it again: QoS 1 must lose
// nothing and QoS 2 must arrive exactly once.
func TestCrashPoint_EveryDurableStep(t *testing.T) {
	for _, point := range crashpoint.Points {
		t.Run(point, func(t *testing.T) {
			broker := harness.StartBroker(t, "")
			sub := harness.Subscribe(t, broker.Addr(), "cp/#", 2)
			d := harness.NewDaemon(t, broker.URL(), "")
			d.DumpOnFailure()

			// The second time the point is reached is after some messages
			// went through, so the crash lands mid-stream. Files come in
			// bursts far enough apart to be ingested in separate batches.
			d.Env = []string{crashpoint.EnvVar + "=" + point + ":2"}
			d.Start()
			const total = 60
			for i := range total {
				qos := 1 + i%2
				d.Drop(fmt.Sprintf("m-%03d.msg", i), []byte(fmt.Sprintf("Topic: cp/q%d\nQoS: %d\n\nseq-%06d", qos, qos, i)))
				if i%10 == 9 {
					time.Sleep(300 * time.Millisecond)
				}
			}
			if !d.WaitExit(20 * time.Second) {
				t.Fatalf("the daemon did not stop at crash point %s", point)
			}

			d.Env = nil
			d.Start()
			harness.WaitFor(t, 30*time.Second, "every message after the crash", func() bool {
				missing, _ := tally(t, sub, total)
				return len(missing) == 0
			})
			time.Sleep(300 * time.Millisecond)
			_, dups := tally(t, sub, total)
			for _, seq := range dups {
				if seq%2 == 1 { // odd seqs were QoS 2
					t.Errorf("QoS 2 message seq %d arrived more than once", seq)
				}
			}
			harness.WaitFor(t, 10*time.Second, "new/ empty", d.NewEmpty)
		})
	}
}

// TestCrashPoint_LongJSONLBetweenParts stops the daemon with SIGKILL
// after the second part of a .jsonl file too long for one commit. The
// restarted daemon must go on from the stored progress: every line
// arrives, at QoS 2 exactly once.
func TestCrashPoint_LongJSONLBetweenParts(t *testing.T) {
	broker := harness.StartBroker(t, "")
	sub := harness.Subscribe(t, broker.Addr(), "cp/#", 2)
	d := harness.NewDaemon(t, broker.URL(), "")
	d.DumpOnFailure()
	d.Env = []string{crashpoint.EnvVar + "=" + crashpoint.IngestAfterPart + ":2"}
	d.Start()

	const total = 10000 // three parts of at most 4096 lines
	var b strings.Builder
	for i := range total {
		fmt.Fprintf(&b, `{"topic":"cp/jsonl","qos":2,"payload":"seq-%06d"}`+"\n", i)
	}
	d.Drop("long.jsonl", []byte(b.String()))
	if !d.WaitExit(20 * time.Second) {
		t.Fatal("the daemon did not stop after the second part")
	}

	d.Env = nil
	d.Start()
	harness.WaitFor(t, 60*time.Second, "every line after the crash", func() bool {
		missing, _ := tally(t, sub, total)
		return len(missing) == 0
	})
	time.Sleep(300 * time.Millisecond)
	if _, dups := tally(t, sub, total); len(dups) > 0 {
		t.Errorf("%d QoS 2 messages arrived more than once, first seq %d", len(dups), dups[0])
	}
	harness.WaitFor(t, 10*time.Second, "new/ empty", d.NewEmpty)
}
