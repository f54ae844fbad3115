package daemon

import (
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/mqspool/mqspool/internal/config"
	"github.com/mqspool/mqspool/internal/eventloop"
	"github.com/mqspool/mqspool/internal/message"
)

func TestOfflineOptions_OnlyPublishes(t *testing.T) {
	cfg := &config.Config{}
	cfg.Broker.URLs = []string{"mqtt://127.0.0.1:1883"}
	cfg.Reconnect.Policy = "always"
	cfg.Status.Topic = "gw/status"
	cfg.Subscriptions = []config.Subscription{{Filter: "$share/gw/cmd/#", QoS: 1, Dir: "/srv/in"}}

	opts, err := offlineOptions(cfg, "gw-off", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if len(opts.Subscriptions) != 0 || len(opts.SessionSubscriptions) != 0 {
		t.Errorf("status connection subscribes to %v (session %v), want nothing", opts.Subscriptions, opts.SessionSubscriptions)
	}
	if opts.Birth != nil || opts.Will != nil {
		t.Errorf("status connection has birth %v and will %v, want neither", opts.Birth, opts.Will)
	}
	if opts.Reconnect != eventloop.ReconnectNever {
		t.Errorf("status connection reconnect policy %v, want never", opts.Reconnect)
	}
	if opts.SessionExpiry != time.Second {
		t.Errorf("status connection session expiry %v, want 1s", opts.SessionExpiry)
	}
}

// The birth message and the Last Will are retained, so a subscriber that
// arrives later still learns whether the gateway is online.
func TestLoopOptions_BirthAndWillRetained(t *testing.T) {
	cfg := &config.Config{}
	cfg.Broker.URLs = []string{"mqtt://127.0.0.1:1883"}
	cfg.Reconnect.Policy = "always"
	cfg.Status.Topic = "gw/status"

	opts, err := loopOptions(cfg, "gw", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name    string
		m       *message.Message
		payload string
	}{
		{"birth", opts.Birth, "online"},
		{"will", opts.Will, "offline"},
	}
	for _, c := range checks {
		if c.m == nil {
			t.Errorf("%s message missing", c.name)
			continue
		}
		if c.m.Topic != cfg.Status.Topic {
			t.Errorf("%s topic %q, want %q", c.name, c.m.Topic, cfg.Status.Topic)
		}
		if string(c.m.Payload) != c.payload {
			t.Errorf("%s payload %q, want %q", c.name, c.m.Payload, c.payload)
		}
		if !c.m.Retain {
			t.Errorf("%s is not retained", c.name)
		}
		if c.m.QoS != 1 {
			t.Errorf("%s QoS %d, want 1", c.name, c.m.QoS)
		}
	}
}
