package test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mqspool/mqspool/internal/control"
	"github.com/mqspool/mqspool/test/harness"
)

// TestBackpressure_LargeDropWithStoppedBroker drops many small files at
// once and stops the broker with SIGSTOP: the event loop must still find
// the dead broker in time, the status must reply at once, memory must stay
// bounded, and after SIGCONT everything must drain.
func TestBackpressure_LargeDropWithStoppedBroker(t *testing.T) {
	if testing.Short() {
		t.Skip("drops 20 000 files")
	}
	broker := harness.StartBroker(t, "")
	sub := harness.Subscribe(t, broker.Addr(), "bp/#", 1)
	d := harness.NewDaemon(t, broker.URL(), "log:\n  level: info\n")
	d.DumpOnFailure()
	d.Start()

	const total = 20000
	for i := range total {
		d.Drop(fmt.Sprintf("m-%05d.msg", i), []byte(fmt.Sprintf("Topic: bp/%d\nQoS: 1\n\nseq-%06d", i%4, i)))
	}
	broker.Pause()
	stopped := time.Now()

	// Dead broker found within 1.5 keep alive periods plus margin.
	harness.WaitFor(t, 2*keepAlive+2*time.Second, "the stopped broker logged as dead", func() bool {
		return strings.Contains(d.Log(), "connection is dead") || strings.Contains(d.Log(), "timed out")
	})
	t.Logf("dead broker logged after %s", time.Since(stopped).Round(100*time.Millisecond))

	// The daemon must reply on its control socket at once. The time to
	// start a CLI process is not the daemon's to count.
	begin := time.Now()
	if _, err := control.Send(context.Background(), d.Socket, control.Request{Command: control.CommandStatus}); err != nil {
		t.Errorf("status while the broker is stopped: %v", err)
	}
	if took := time.Since(begin); took > time.Second {
		t.Errorf("status took %s while the broker is stopped, want under 1 s", took)
	}
	if rss := d.RSSAnonKiB(); rss > 100*1024 {
		t.Errorf("RssAnon %d KiB with %d files queued, want under 100 MiB", rss, total)
	}

	broker.Resume()
	harness.WaitFor(t, 120*time.Second, "all messages after SIGCONT", func() bool {
		missing, _ := tally(t, sub, total)
		return len(missing) == 0
	})
}
