package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync"
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
without waiting for the drain, still saving the session.

SIGHUP reads the config file again and applies log.level, the throttle and
the routes without dropping the connection; other changed keys are named in
a warning and need a restart.`,
		Args: exactArgs(0),
		RunE: func(c *cobra.Command, _ []string) error {
			loaded, err := flags.load(c, runFlagKeys)
			if err != nil {
				return err
			}
			reload := func() (*config.Config, error) {
				l, err := flags.load(c, runFlagKeys)
				if err != nil {
					return nil, err
				}
				return l.Config, nil
			}
			return runDaemon(c.Context(), loaded, reload, c.ErrOrStderr())
		},
	}
	flags.register(c)
	registerRunFlags(c)
	return c
}

// registerRunFlags adds the flags in runFlagKeys to c. config validate and
// config print take them too, so that they show the configuration of a
// daemon started with the same flags.
func registerRunFlags(c *cobra.Command) {
	f := c.Flags()
	f.StringSlice("broker-url", nil, "broker URL, mqtt://host:port or mqtts://host:port (repeatable; overrides broker.urls)")
	f.String("client-id", "", "MQTT client identifier, at most 23 characters (overrides broker.client_id)")
	f.String("spool-dir", "", "spool directory holding tmp/, new/ and failed/ (overrides spool.dir)")
	f.String("spool-db", "", "bbolt database file (overrides spool.db)")
	f.String("control-socket", "", "unix socket for status and ctl (overrides control.socket)")
	f.String("metrics-listen", "", "host:port for Prometheus metrics (overrides metrics.listen)")
	f.String("log-level", "", "debug, info, warn or error (overrides log.level)")
	f.String("log-format", "", "text or json (overrides log.format)")
	f.SetNormalizeFunc(flagAlias("socket", "control-socket"))
}

func runDaemon(parent context.Context, loaded *config.Loaded, reload func() (*config.Config, error), stderr io.Writer) error {
	cfg := loaded.Config
	log, level, err := daemon.NewLogger(cfg.Log, stderr)
	if err != nil {
		return usageError(err)
	}
	for _, w := range loaded.Warnings {
		log.Warn("configuration warning", "warning", w)
	}
	for _, problem := range cfg.FileProblems() {
		// Each connect reads the files again, so one put in place later
		// is used then; stopping here would also stop systemd's restarts.
		log.Warn("a file the broker connection needs is unreadable or invalid; connecting will fail until it is fixed",
			"problem", problem)
	}

	hard, stopHard := context.WithCancel(parent)
	defer stopHard()
	soft, stopSoft := context.WithCancel(hard)
	defer stopSoft()

	// Signals are handled from here on, so a SIGTERM while the database
	// opens still ends in an orderly stop. A SIGHUP that arrives before
	// the daemon exists is applied once it does.
	var reloads reloader
	stopSignals := handleSignals(log, signalActions{
		soft: stopSoft, hard: stopHard, hardAfter: cfg.Shutdown.DrainTimeout + hardStopMargin,
		reload: func() { reloads.request(log, reload) },
	})
	defer stopSignals()

	d, err := daemon.New(cfg, log, level)
	if err != nil {
		log.Error("start failed", "err", err)
		return err
	}
	reloads.attach(log, d, reload)
	return d.Run(soft, hard)
}

// reloader hands SIGHUP reloads to the daemon, holding one back while the
// daemon is still being created.
type reloader struct {
	mu      sync.Mutex // guards d, pending and count
	d       *daemon.Daemon
	pending bool
	// count numbers the reloads. Each one logs its number, so that the
	// repeat limit of the logger does not drop its error or restart
	// warning as a copy of the previous reload's.
	count int
}

// request reloads now, or once attach is called.
func (r *reloader) request(log *slog.Logger, load func() (*config.Config, error)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.count++
	if r.d == nil {
		r.pending = true
		return
	}
	reloadConfig(log.With("reload", r.count), r.d, load)
}

// attach sets the daemon and applies a reload requested before.
func (r *reloader) attach(log *slog.Logger, d *daemon.Daemon, load func() (*config.Config, error)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.d = d
	if r.pending {
		reloadConfig(log.With("reload", r.count), d, load)
	}
}

// reloadConfig reads the configuration again and hands it to the daemon.
// An invalid file leaves the running configuration in place.
func reloadConfig(log *slog.Logger, d *daemon.Daemon, load func() (*config.Config, error)) {
	cfg, err := load()
	if err != nil {
		log.Error("configuration not reloaded, keeping the running one", "err", err)
		return
	}
	d.Reload(cfg, log)
}

// signalActions are the callbacks that handleSignals runs.
type signalActions struct {
	soft, hard context.CancelFunc
	hardAfter  time.Duration // after the first stop signal, call hard
	reload     func()
}

// handleSignals cancels soft on the first SIGTERM or SIGINT, and hard on
// the second or when the drain overruns by far. SIGHUP calls reload.
func handleSignals(log *slog.Logger, a signalActions) func() {
	ch := make(chan os.Signal, 4)
	signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	done := make(chan struct{})

	go func() {
		var overrun <-chan time.Time
		count := 0
		for {
			select {
			case sig := <-ch:
				if sig == syscall.SIGHUP {
					log.Info("signal received, reloading configuration", "signal", sig.String())
					a.reload()
					continue
				}
				count++
				log.Info("signal received", "signal", sig.String(), "count", count)
				if count == 1 {
					a.soft()
					overrun = time.After(a.hardAfter)
					continue
				}
				a.hard()
			case <-overrun:
				log.Warn("drain overran its deadline, stopping now", "deadline", a.hardAfter)
				a.hard()
			case <-done:
				return
			}
		}
	}()
	// The process exits right after the daemon stopped. A signal arriving
	// in between must not kill it with the default action and turn a clean
	// stop into a failure, so the signals are ignored from then on.
	return func() {
		signal.Ignore(syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
		signal.Stop(ch)
		close(done)
	}
}
