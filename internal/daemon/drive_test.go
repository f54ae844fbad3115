package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mqspool/mqspool/internal/config"
)

// When hard ends together with ctx, as when the spool finds its file
// damaged, the loop closes at once. Run still returns only after the stop
// callback has logged and sent STOPPING=1.
func TestRun_WaitsForStopCallback(t *testing.T) {
	cfg := offlineConfig(t)
	blocked, release := make(chan struct{}), make(chan struct{})
	started := make(chan struct{})
	log := slog.New(&stopGate{Handler: slog.NewTextHandler(os.Stderr, nil),
		started: started, blocked: blocked, release: release})
	d, err := New(cfg, log, nil)
	if err != nil {
		t.Fatal(err)
	}

	hard, cancelHard := context.WithCancel(context.Background())
	ctx, cancel := context.WithCancel(hard)
	defer cancel()
	ran := make(chan error, 1)
	go func() { ran <- d.Run(ctx, hard) }()
	<-started
	cancelHard()

	select {
	case <-blocked:
	case <-time.After(10 * time.Second):
		close(release)
		t.Fatal("the stop callback did not run")
	}
	select {
	case err := <-ran:
		close(release)
		t.Fatalf("Run returned (%v) while the stop callback had not finished", err)
	case <-time.After(500 * time.Millisecond):
	}
	close(release)
	select {
	case <-ran:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after the stop callback finished")
	}
}

// offlineConfig returns a configuration under a temporary directory whose
// broker URL has no listener.
func offlineConfig(t *testing.T) *config.Config {
	t.Helper()
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "mqtt://" + ln.Addr().String()
	ln.Close()

	path := filepath.Join(dir, "mqspool.yaml")
	yaml := fmt.Sprintf("broker:\n  urls: [%q]\n  client_id: drive-test\n"+
		"spool:\n  dir: %q\n  db: %q\ncontrol:\n  socket: %q\n",
		url, filepath.Join(dir, "spool"), filepath.Join(dir, "spool.db"), filepath.Join(dir, "ctl.sock"))
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	loaded, err := config.Load(config.LoadOptions{File: path,
		LookupEnv: func(string) (string, bool) { return "", false }})
	if err != nil {
		t.Fatal(err)
	}
	return loaded.Config
}

// stopGate is a log handler that closes started at the "mqspool started"
// line and holds the "shutting down" line, which the stop callback logs,
// until release is closed.
type stopGate struct {
	slog.Handler
	started, blocked, release chan struct{}
}

func (g *stopGate) Handle(ctx context.Context, r slog.Record) error {
	switch r.Message {
	case "mqspool started":
		close(g.started)
	case "shutting down":
		close(g.blocked)
		<-g.release
	}
	return g.Handler.Handle(ctx, r)
}
