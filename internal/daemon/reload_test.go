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
