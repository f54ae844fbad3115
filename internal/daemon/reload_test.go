package daemon

import (
	"slices"
	"testing"
	"time"

	"github.com/mqspool/mqspool/internal/config"
)

func TestRestartKeys_NamesKeys(t *testing.T) {
	running := &config.Config{}
	running.Broker.URLs = []string{"mqtt://a:1883"}
	running.Log.Format = "text"

	next := &config.Config{}
	next.Broker.URLs = []string{"mqtt://b:1883"}
	next.Broker.Username = "gw"
	next.Broker.TLS.CAFile = "/etc/ssl/ca.pem"
	next.Broker.Password = "secret"
	next.Reconnect.MaxDelay = time.Minute
	next.Subscriptions = []config.Subscription{{Filter: "a/#", Dir: "/srv/in"}}
	next.Log.Format = "json"
	next.Log.Level = "debug"
	next.Routes = []config.Route{{Match: "*"}}

	want := []string{
		"broker.urls", "broker.username", "broker.password", "broker.tls.ca_file",
		"reconnect.max_delay", "subscriptions", "log.format",
	}
	if got := restartKeys(running, next); !slices.Equal(got, want) {
		t.Errorf("restartKeys = %v, want %v", got, want)
	}
}

func TestRestartKeys_Unchanged(t *testing.T) {
	c := &config.Config{}
	c.Broker.URLs = []string{"mqtt://a:1883"}
	if got := restartKeys(c, c); len(got) != 0 {
		t.Errorf("restartKeys of an unchanged config = %v, want none", got)
	}
}

// A change in any section that only a restart applies is named, so the
// reload warning never hides a setting that did not take effect.
func TestRestartKeys_EverySection(t *testing.T) {
	changes := map[string]func(c *config.Config){
		"publish.qos":            func(c *config.Config) { c.Publish.QoS = 2 },
		"spool.max_bytes":        func(c *config.Config) { c.Spool.MaxBytes = 1 },
		"pickup.settle":          func(c *config.Config) { c.Pickup.Settle = time.Second },
		"shutdown.drain_timeout": func(c *config.Config) { c.Shutdown.DrainTimeout = time.Second },
		"control.socket":         func(c *config.Config) { c.Control.Socket = "/run/x.sock" },
		"metrics.listen":         func(c *config.Config) { c.Metrics.Listen = "127.0.0.1:9" },
		"status.topic":           func(c *config.Config) { c.Status.Topic = "gw/status" },
	}
	for key, change := range changes {
		next := &config.Config{}
		change(next)
		got := restartKeys(&config.Config{}, next)
		if !slices.Equal(got, []string{key}) {
			t.Errorf("after a change of %s: restartKeys = %v, want [%s]", key, got, key)
		}
	}
}
