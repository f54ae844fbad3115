package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/mqspool/mqspool/internal/config"
	"github.com/mqspool/mqspool/internal/daemon"
)

// hardStopMargin is how long past shutdown.drain_timeout the daemon waits
// for the event loop before it stops without it. The session state is
// saved either way.
const hardStopMargin = 3 * time.Second

// runFlagKeys maps the run command's flags to config keys.
var runFlagKeys = map[string]string{
	"broker-url":     "broker.urls",
	"client-id":      "broker.client_id",
	"spool-dir":      "spool.dir",
	"spool-db":       "spool.db",
	"control-socket": "control.socket",
	"metrics-listen": "metrics.listen",
	"log-level":      "log.level",
	"log-format":     "log.format",
}

func newRunCommand() *cobra.Command {
	var flags configFlags
	c := &cobra.Command{
		Use:   "run",
		Short: "Run the daemon in the foreground (systemd runs this)",
		Long: `Run the daemon in the foreground until SIGTERM or SIGINT. The first signal
stops intake, waits up to shutdown.drain_timeout for outstanding
acknowledgements, saves the session and exits 0; a second signal stops
without waiting for the drain, still saving the session.`,
		Args: exactArgs(0),
		RunE: func(c *cobra.Command, _ []string) error {
			loaded, err := flags.load(c, runFlagKeys)
			if err != nil {
				return err
			}
			return runDaemon(c.Context(), loaded.Config, c.ErrOrStderr())
		},
	}
	flags.register(c)
	f := c.Flags()
	f.StringSlice("broker-url", nil, "broker URL, mqtt://host:port or mqtts://host:port (repeatable; overrides broker.urls)")
	f.String("client-id", "", "MQTT client identifier, at most 23 characters (overrides broker.client_id)")
	f.String("spool-dir", "", "spool directory holding tmp/, new/ and failed/ (overrides spool.dir)")
	f.String("spool-db", "", "bbolt database file (overrides spool.db)")
	f.String("control-socket", "", "unix socket for status and ctl (overrides control.socket)")
	f.String("metrics-listen", "", "host:port for Prometheus metrics (overrides metrics.listen)")
	f.String("log-level", "", "debug, info, warn or error (overrides log.level)")
	f.String("log-format", "", "text or json (overrides log.format)")
	return c
}

func runDaemon(parent context.Context, cfg *config.Config, stderr io.Writer) error {
	log, err := newLogger(cfg.Log, stderr)
	if err != nil {
		return usageError(err)
	}

	hard, stopHard := context.WithCancel(parent)
	defer stopHard()
	soft, stopSoft := context.WithCancel(hard)
	defer stopSoft()
	stopSignals := handleSignals(log, stopSoft, stopHard, cfg.Shutdown.DrainTimeout+hardStopMargin)
	defer stopSignals()

	d, err := daemon.New(cfg, log)
	if err != nil {
		log.Error("start failed", "err", err)
		return err
	}
	return d.Run(soft, hard)
}

// handleSignals cancels soft on the first SIGTERM or SIGINT, and hard on
// the second or when the drain overruns by far.
func handleSignals(log *slog.Logger, soft, hard context.CancelFunc, hardAfter time.Duration) func() {
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT)
	done := make(chan struct{})

	go func() {
		var overrun <-chan time.Time
		count := 0
		for {
			select {
			case sig := <-ch:
				count++
				log.Info("signal received", "signal", sig.String(), "count", count)
				if count == 1 {
					soft()
					overrun = time.After(hardAfter)
					continue
				}
				hard()
			case <-overrun:
				log.Warn("drain overran its deadline, stopping now", "deadline", hardAfter)
				hard()
			case <-done:
				return
			}
		}
	}()
	return func() {
		signal.Stop(ch)
		close(done)
	}
}

func newLogger(cfg config.Log, w io.Writer) (*slog.Logger, error) {
	level, err := config.ParseLevel(cfg.Level)
	if err != nil {
		return nil, fmt.Errorf("log.level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: level}
	if cfg.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return slog.New(slog.NewTextHandler(w, opts)), nil
}
