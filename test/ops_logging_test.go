package test

import (
	"strings"
	"testing"
	"time"

	"github.com/mqspool/mqspool/test/harness"
)

// TestOpsLogging_EffectiveConfig checks the one-line configuration summary
// at start and that the password never reaches the log or config print.
func TestOpsLogging_EffectiveConfig(t *testing.T) {
	const secret = "s3cret-pw-for-test"
	t.Setenv("MQSPOOL_BROKER_PASSWORD", secret)
	b := harness.StartBroker(t, "")
	d := harness.NewDaemon(t, b.URL(), "throttle:\n  messages_per_second: 50\n")
	d.DumpOnFailure()
	d.Start()
	opsConnected(t, d)

	log := d.Log()
	if n := strings.Count(log, `msg="effective configuration"`); n != 1 {
		t.Errorf("effective configuration logged %d times, want 1", n)
	}
	for _, want := range []string{"broker.password_set=true", "throttle.messages_per_second=50", "broker.client_id=mqspool-t"} {
		if !strings.Contains(log, want) {
			t.Errorf("effective configuration lacks %s", want)
		}
	}
	if code := d.Stop(15 * time.Second); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
	if strings.Contains(d.Log(), secret) {
		t.Error("the broker password appears in the log")
	}

	out, code := harness.Command(t, "config", "print", "--config", d.Config)
	if code != 0 {
		t.Fatalf("config print exited %d:\n%s", code, out)
	}
	if strings.Contains(out, secret) {
		t.Error("config print shows the broker password")
	}
	for _, key := range []string{"metrics.listen", "status.topic", "throttle.messages_per_second", "shutdown.drain_timeout"} {
		if !strings.Contains(out, key) {
			t.Errorf("config print lacks %s:\n%s", key, out)
		}
	}
}
