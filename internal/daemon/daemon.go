// Package daemon assembles the running mqspool: the spool database, the
// spool-directory pickup and the event loop, connected through the seams
// each package defines. It owns the order of start and stop:
//
//	start: open spool → create directories → restore session → pickup and
//	       event loop run
//	stop:  stop pickup (intake) → event loop drains within the deadline and
//	       sends DISCONNECT → save session state → close the database
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/mqspool/mqspool/internal/config"
	"github.com/mqspool/mqspool/internal/control"
	"github.com/mqspool/mqspool/internal/eventloop"
	"github.com/mqspool/mqspool/internal/message"
	"github.com/mqspool/mqspool/internal/pickup"
	"github.com/mqspool/mqspool/internal/spool"
)

// lockTimeout bounds the wait for another process's lock on spool.db.
const lockTimeout = 2 * time.Second

// Daemon is one running mqspool.
type Daemon struct {
	cfg    *config.Config
	log    *slog.Logger
	spool  *spool.Spool
	pickup *pickup.Pickup
	loop   *eventloop.Loop

	clientIDValue string
	rates         rates
	started       time.Time
}

// New opens the spool and prepares the pickup and the event loop. Nothing
// runs until [Daemon.Run].
func New(cfg *config.Config, log *slog.Logger) (*Daemon, error) {
	d := &Daemon{cfg: cfg, log: log, started: time.Now()}

	// The spool quarantines through the pickup, which needs the spool as
	// its store, so the hook looks the pickup up when it runs.
	sp, err := spool.Open(spoolOptions(cfg, log, d.quarantine))
	if err != nil {
		return nil, fmt.Errorf("open spool %s: %w", cfg.Spool.DB, err)
	}
	d.spool = sp

	if err := d.build(); err != nil {
		sp.Close()
		return nil, err
	}
	return d, nil
}

func (d *Daemon) build() error {
	p, err := pickup.New(pickupOptions(d.cfg, d.log), d.spool)
	if err != nil {
		return fmt.Errorf("prepare spool directory %s: %w", d.cfg.Spool.Dir, err)
	}
	d.pickup = p

	clientID, err := d.clientID()
	if err != nil {
		return err
	}
	d.clientIDValue = clientID
	restored, err := d.spool.LoadState()
	if err != nil {
		return fmt.Errorf("load session state from %s: %w", d.cfg.Spool.DB, err)
	}
	opts, err := loopOptions(d.cfg, clientID, d.log)
	if err != nil {
		return err
	}
	loop, err := eventloop.New(opts, &spoolSource{cursor: d.spool.NewCursor()}, d.spool, restored)
	if err != nil {
		return fmt.Errorf("prepare event loop: %w", err)
	}
	d.loop = loop

	d.log.Info("spool opened", "db", d.cfg.Spool.DB, "dir", d.cfg.Spool.Dir,
		"messages", d.spool.Stats().Messages, "flows", len(restored.Outgoing),
		"session", restored.Session, "client_id", clientID)
	return nil
}

func (d *Daemon) clientID() (string, error) {
	if d.cfg.Broker.ClientID != "" {
		return d.cfg.Broker.ClientID, nil
	}
	id, err := d.spool.ClientID(deriveClientID)
	if err != nil {
		return "", fmt.Errorf("derive client id: %w: set broker.client_id", err)
	}
	return id, nil
}

func (d *Daemon) quarantine(seq uint64, m *message.Message, raw []byte, reason string) error {
	name := fmt.Sprintf("spool-%020d", seq)
	return d.pickup.Quarantine(name, m, raw, reason)
}

// Run forwards until ctx is cancelled, then stops in order and returns
// nil for a clean stop. Cancelling hard while the drain runs ends the
// drain at once; the session state is still saved.
func (d *Daemon) Run(ctx, hard context.Context) error {
	d.log.Info("mqspool started", "brokers", d.cfg.Broker.URLs, "client_id", d.clientIDValue)

	intakeCtx, stopIntake := context.WithCancel(context.Background())
	defer stopIntake()
	var wg sync.WaitGroup
	pickupErr := make(chan error, 1)
	wg.Go(func() { pickupErr <- d.pickup.Run(intakeCtx) })
	wg.Go(func() { d.sampleRates(intakeCtx) })

	ctl := d.listenControl()
	if ctl != nil {
		wg.Go(ctl.Serve)
	}

	loopErr := d.drive(ctx, hard, stopIntake)

	stopIntake()
	if ctl != nil {
		ctl.Close()
	}
	wg.Wait()
	perr := <-pickupErr
	if perr != nil && !errors.Is(perr, context.Canceled) {
		d.log.Error("pickup stopped with an error", "err", perr)
	}
	return errors.Join(loopErr, d.close())
}

// drive polls the event loop. When ctx ends it stops the intake and asks
// the loop to drain; when hard ends it returns at once. ctx must be a child
// of hard.
func (d *Daemon) drive(ctx, hard context.Context, stopIntake func()) error {
	draining := false
	for {
		pollCtx := ctx
		if draining {
			pollCtx = hard
		}

		ev, err := d.loop.Poll(pollCtx)
		switch {
		case errors.Is(err, eventloop.ErrClosed):
			return nil
		case err != nil && hard.Err() != nil:
			d.log.Warn("stopping without waiting for the drain")
			return nil
		case err != nil && !draining && ctx.Err() != nil:
			draining = true
			d.log.Info("shutting down", "drain_timeout", d.cfg.Shutdown.DrainTimeout)
			stopIntake()
			d.loop.Shutdown(d.cfg.Shutdown.DrainTimeout)
			continue
		case err != nil:
			return fmt.Errorf("event loop: %w", err)
		}
		d.observe(ev)
	}
}

func (d *Daemon) observe(ev eventloop.Event) {
	switch ev.Kind {
	case eventloop.EventAcknowledged:
		o := ev.Outcome
		switch o.Kind {
		case eventloop.Failed:
			d.log.Error("message moved to failed/", "seq", o.Seq, "reason", o.Reason)
		case eventloop.Expired:
			d.log.Warn("message expired in the spool", "seq", o.Seq)
		case eventloop.Dropped:
			d.log.Warn("qos 0 message dropped while offline", "seq", o.Seq)
		}
	case eventloop.EventIncoming:
		// No subscriptions are configured in this build, so nothing should
		// arrive; release it so the broker is not left waiting.
		d.log.Warn("unexpected incoming publish released", "topic", ev.Incoming.Message.Topic)
		ev.Incoming.Release()
	}
}

// listenControl opens the control socket. Without it the daemon still
// forwards, so a failure is logged rather than returned.
func (d *Daemon) listenControl() *control.Server {
	srv, err := control.Listen(d.cfg.Control.Socket, controlHandler{d: d}, d.log.With("component", "control"))
	if err != nil {
		d.log.Error("control socket unavailable; status and ctl will not work", "socket", d.cfg.Control.Socket, "err", err)
		return nil
	}
	return srv
}

func (d *Daemon) sampleRates(ctx context.Context) {
	const interval = time.Second
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			d.rates.sample(d.pickup.Stats().MessagesIngested, d.loop.Stats().Acked, interval)
		}
	}
}

func (d *Daemon) close() error {
	var errs []error
	st := d.loop.State()
	if err := d.loop.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close event loop: %w", err))
	}
	if err := d.spool.SaveState(st); err != nil {
		errs = append(errs, fmt.Errorf("save session state: %w", err))
	}
	if err := d.spool.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close spool: %w", err))
	}
	d.log.Info("mqspool stopped", "flows", len(st.Outgoing), "uptime", time.Since(d.started).Round(time.Second))
	return errors.Join(errs...)
}
