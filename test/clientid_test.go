package test

import (
	"strings"
	"testing"
	"time"

	"github.com/mqspool/mqspool/test/harness"
)

// TestClientID_SharedIDWarns runs two daemons with one client id against
// mosquitto, which closes the older connection at each connect without a
// DISCONNECT. One of them must log that a shared client id is the likely
// cause and name the key that fixes it.
func TestClientID_SharedIDWarns(t *testing.T) {
	b := harness.StartBroker(t, "")
	first := harness.NewDaemon(t, b.URL(), "")
	second := harness.NewDaemon(t, b.URL(), "")
	for _, d := range []*harness.Daemon{first, second} {
		d.DumpOnFailure()
		d.Start()
	}

	const want = "another client using the same client id"
	harness.WaitFor(t, 30*time.Second, "a warning about the shared client id", func() bool {
		return strings.Contains(first.Log(), want) || strings.Contains(second.Log(), want)
	})
	for _, d := range []*harness.Daemon{first, second} {
		if log := d.Log(); strings.Contains(log, want) && !strings.Contains(log, "client_id=mqspool-t") {
			t.Errorf("the warning does not name the client id mqspool-t:\n%s", log)
		}
	}
}
