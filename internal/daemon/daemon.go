// Package daemon assembles the running mqspool: the spool database, the
// spool-directory pickup and the event loop, connected through the seams
// each package defines. It owns the order of start and stop:
//
//	start: lock the spool directory → open spool → create directories →
//	       restore session → lock inboxes → pickup and event loop run
//	stop:  stop pickup (intake) → event loop drains within the deadline and
//	       sends DISCONNECT → save session state → close the database
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mqspool/mqspool/internal/config"
	"github.com/mqspool/mqspool/internal/control"
	"github.com/mqspool/mqspool/internal/eventloop"
	"github.com/mqspool/mqspool/internal/message"
	"github.com/mqspool/mqspool/internal/metrics"
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
	// dirLock holds the spool directory's lock for the daemon's life.
	// The pickup's goroutine replaces it when the lock file at the path
	// is another one, so it is read and written under dirLockMu.
	dirLockMu sync.Mutex
	dirLock   *os.File
	// relockFailed is set while taking the lock again fails, and
	// dirClaimLost while another daemon holds the lock at the path.
	relockFailed bool
	dirClaimLost bool
	// lockedDir is the spool directory whose lock the daemon took last, so
	// that a lock file removed alone is distinguished from a replaced
	// directory.
	lockedDir dirIdentity
	// socketLock holds the lock beside the control socket, or is nil when
	// the lock file could not be created or locked (see [control.Claim]).
	// Close on a nil *os.File does nothing.
	socketLock *os.File
	loop       *eventloop.Loop

	clientIDValue string
	rates         rates
	started       time.Time

	waits   *waitTracker
	level   *slog.LevelVar // the logger's level, changed by Reload; may be nil
	notify  notifier
	live    liveness
	poll    pollWindow // used by the goroutine that runs drive
	metrics *metrics.Metrics

	downlink *downlink // inboxes of the subscriptions

	// failedKept counts messages kept in the spool because failed/ could
	// not take them, since the start.
	failedKept atomic.Uint64

	// stopping is set when the drain of a stop begins.
	stopping atomic.Bool

	// throttleMu guards throttle, the limits last given to the loop.
	throttleMu sync.Mutex
	throttle   config.Rate
}

// New opens the spool and prepares the pickup and the event loop. Nothing
// runs until [Daemon.Run]. level is the logger's level, which
// [Daemon.Reload] sets; nil leaves the level fixed.
func New(cfg *config.Config, log *slog.Logger, level *slog.LevelVar) (*Daemon, error) {
	d := &Daemon{cfg: cfg, log: log, started: time.Now(), level: level, waits: newWaitTracker(cfg.Spool.Dir),
		throttle: fileThrottle(cfg)}
	d.notify = notifier{log: log}

	// The lock comes first, so that a daemon that finds the spool
	// directory in use leaves nothing behind, not even a new database.
	lock, err := lockSpoolDir(cfg.Spool.Dir)
	if err != nil {
		return nil, err
	}
	d.dirLock = lock
	d.lockedDir, _ = identifyDir(cfg.Spool.Dir)

	// A second daemon on the same socket would run without one, and
	// status and ctl would reach the first daemon for both.
	socketLock, err := control.Claim(cfg.Control.Socket)
	switch {
	case errors.Is(err, control.ErrNoSocketLock):
		// Claim still found no daemon listening on the socket. Only one
		// that starts at the same moment is missed, so the daemon runs on.
		log.Warn("control socket not locked, so a second daemon started at the same moment "+
			"could take it over", "socket", cfg.Control.Socket, "err", err)
	case err != nil:
		lock.Close()
		return nil, err
	}
	d.socketLock = socketLock

	// The spool quarantines through the pickup, which needs the spool as
	// its store, so the hooks look the pickup up when they run.
	sp, err := spool.Open(spoolOptions(cfg, log, d.quarantine, d.droppedOldest, d.roomFreed))
	if err != nil {
		lock.Close()
		socketLock.Close()
		if !strings.Contains(err.Error(), cfg.Spool.DB) {
			err = fmt.Errorf("%s: %w", cfg.Spool.DB, err)
		}
		return nil, fmt.Errorf("open spool: %w", err)
	}
	d.spool = sp

	if err := d.build(); err != nil {
		d.abandon()
		return nil, err
	}
	return d, nil
}

// abandon releases what New took when it fails after opening the spool.
func (d *Daemon) abandon() {
	if d.downlink != nil {
		d.downlink.close()
	}
	d.spool.Close()
	d.socketLock.Close()
	d.releaseSpoolDir()
}

// releaseSpoolDir drops the spool directory's lock.
func (d *Daemon) releaseSpoolDir() {
	d.dirLockMu.Lock()
	defer d.dirLockMu.Unlock()
	d.dirLock.Close()
}

// claimSpoolDir reports whether the daemon holds the lock of the spool
// directory now at its path, and takes it when the lock file there is not
// the one the daemon holds. The pickup calls it before each rescan lists
// new/ and before each batch, because a spool directory removed, replaced
// or moved while the daemon runs takes the lock file along, and a second
// daemon may have locked the new one. Then this daemon leaves the
// directory to it, so that the two share no files beyond a batch under
// way, and takes it once that lock is released.
func (d *Daemon) claimSpoolDir() bool {
	d.dirLockMu.Lock()
	defer d.dirLockMu.Unlock()
	path := filepath.Join(d.cfg.Spool.Dir, spoolDirLock)
	if locked, err := d.dirLock.Stat(); err == nil {
		if current, err := os.Stat(path); err == nil && os.SameFile(locked, current) {
			d.claimTakenBack()
			return true
		}
	}
	lock, err := lockSpoolDir(d.cfg.Spool.Dir)
	if err != nil {
		return d.claimFailed(err)
	}
	d.dirLock.Close()
	d.dirLock = lock
	d.relockFailed = false
	current, err := identifyDir(d.cfg.Spool.Dir)
	sameDir := err == nil && current == d.lockedDir
	d.lockedDir = current
	switch {
	case d.dirClaimLost:
		d.claimTakenBack()
	case sameDir:
		d.log.Warn("spool directory lock file was removed while the daemon ran; created and locked it again",
			"path", filepath.Join(d.cfg.Spool.Dir, spoolDirLock), "hint", "leave the files that start with .mqspool in place")
	default:
		d.log.Error("spool directory was removed or replaced while the daemon ran, so files in the old one "+
			"are lost to mqspool; locked the one now at the path", "dir", d.cfg.Spool.Dir,
			"hint", "stop mqspool before removing or replacing its spool directory")
	}
	return true
}

// claimTakenBack logs the end of a spell in which another daemon held
// the spool directory at the path: its lock was released, or a symbolic
// link leads back to the directory this daemon locked.
func (d *Daemon) claimTakenBack() {
	if !d.dirClaimLost {
		return
	}
	d.dirClaimLost = false
	d.log.Info("spool directory at the path is locked by this daemon again, so it takes new files again",
		"dir", d.cfg.Spool.Dir)
}

// claimFailed logs a failed claim once per failing spell, since the
// pickup tries again once a second, and reports whether the pickup may
// still take files. Only another daemon's lock stops it: without one, no
// other daemon can take the directory either.
func (d *Daemon) claimFailed(err error) bool {
	lockedByOther := errors.Is(err, unix.EWOULDBLOCK)
	if lockedByOther && !d.dirClaimLost {
		d.log.Error("spool directory at the path is locked by another daemon, so this one takes no new files "+
			"from it and goes on delivering what it has stored", "dir", d.cfg.Spool.Dir, "err", err,
			"hint", "stop one of the two daemons, and give each its own spool.dir")
	}
	if !lockedByOther && !d.relockFailed {
		d.log.Error("spool directory lock not taken again, so another daemon may take the directory "+
			"and publish the same files", "err", err)
	}
	d.dirClaimLost = lockedByOther
	d.relockFailed = !lockedByOther
	return !lockedByOther
}

func (d *Daemon) build() error {
	pickupOpts, err := pickupOptions(d.cfg, d.log)
	if err != nil {
		return err
	}
	pickupOpts.Claim = d.claimSpoolDir
	pickupOpts.OwnFiles = []string{spoolDirLock}
	p, err := pickup.New(pickupOpts, trackingStore{Spool: d.spool, waits: d.waits})
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
	d.downlink, err = newDownlink(d.cfg, d.spool, d.log)
	if err != nil {
		return err
	}
	opts.SessionSubscriptions = d.downlink.sessionSubscriptions()
	loop, err := eventloop.New(opts, &spoolSource{cursor: d.spool.NewCursor()}, d.spool, restored)
	if err != nil {
		return fmt.Errorf("prepare event loop: %w", err)
	}
	d.loop = loop
	d.metrics = metrics.New(metrics.Sources{
		Loop: d.loop.Stats, Spool: d.spool.Stats, Pickup: d.pickup.Stats,
		FailedFiles: d.failedFiles,
		CertFile:    d.cfg.Broker.TLS.CertFile,
	})
	d.metrics.Registry().MustRegister(newDownlinkCollector(d.downlink))

	d.log.Info("spool opened", "db", d.cfg.Spool.DB, "dir", d.cfg.Spool.Dir,
		"messages", d.spool.Stats().Messages, "flows", len(restored.Outgoing),
		"session", restored.Session, "client_id", clientID)
	return nil
}

func (d *Daemon) clientID() (string, error) {
	if d.cfg.Broker.ClientID != "" {
		return d.cfg.Broker.ClientID, nil
	}
	id, err := d.spool.ClientID(func() (string, error) { return deriveClientID(d.cfg.Spool.DB) })
	if err != nil {
		return "", fmt.Errorf("derive client id: %w: set broker.client_id", err)
	}
	return id, nil
}

// droppedOldest reports a message that spool.overflow drop-oldest deleted
// to a publish --wait for it. The spool logs it and counts it for the
// metrics.
func (d *Daemon) droppedOldest(seq uint64) {
	d.waits.outcome(eventloop.Outcome{Seq: seq, Kind: eventloop.Dropped,
		Reason: "the spool was full and spool.overflow is drop-oldest"})
}

// roomFreed wakes a pickup that waits for room in a full spool. The spool
// calls it after each commit that deleted messages, which for QoS 2 is
// the commit of PUBCOMP rather than of PUBREC.
func (d *Daemon) roomFreed() {
	if d.pickup != nil {
		d.pickup.RoomFreed()
	}
}

// quarantine moves a message the broker rejected to failed/. The reason
// and the log line name the file under new/ it came from while the wait
// tracker remembers it. After a restart they name no file.
func (d *Daemon) quarantine(seq uint64, m *message.Message, raw []byte, reason string) error {
	name := fmt.Sprintf("spool-%020d", seq)
	args := []any{"seq", seq}
	if source, known := d.waits.source(seq); known {
		reason += " (queued from new/" + source + ")"
		args = append(args, "source", source)
	}
	dst, err := d.pickup.Quarantine(name, m, raw, reason)
	if err != nil {
		d.failedKept.Add(1) // the spool keeps the message and logs it
		return err
	}
	d.log.Error("message moved to failed/", append(args, "failed_path", dst, "reason", reason)...)
	return nil
}

// Run forwards until ctx is cancelled, then stops in order and returns
// nil for a clean stop. Cancelling hard while the drain runs ends the
// drain at once; the session state is still saved.
func (d *Daemon) Run(ctx, hard context.Context) error {
	d.log.Info("mqspool started", "brokers", d.cfg.Broker.URLs, "client_id", d.clientIDValue)
	d.logEffectiveConfig()
	ctx, hard, stopWatch := d.watchDamage(ctx, hard)
	defer stopWatch()

	intakeCtx, stopIntake := context.WithCancel(context.Background())
	defer stopIntake()
	var wg sync.WaitGroup
	pickupErr := make(chan error, 1)
	wg.Go(func() {
		err := d.pickup.Run(intakeCtx)
		d.live.pickupEnded.Store(true)
		pickupErr <- err
	})
	wg.Go(func() { d.sampleRates(intakeCtx) })
	stopServers := d.startServers(&wg)

	// The spool is open and the pickup runs: ready, whether or not the
	// broker is reachable.
	d.live.beatLoop(time.Now(), probeInterval)
	d.notifyReady()
	wg.Go(func() { d.reportStatus(intakeCtx) })
	wg.Go(func() { d.watchdog(intakeCtx) })

	stopDownlink := d.downlink.start()
	loopErr := d.drive(ctx, hard, stopIntake)
	stopDownlink()
	if loopErr == nil && hard.Err() == nil {
		d.publishOffline(hard)
	}

	stopIntake()
	stopServers()
	wg.Wait()
	perr := <-pickupErr
	if perr != nil && !errors.Is(perr, context.Canceled) {
		d.log.Error("pickup stopped with an error", "err", perr)
	}
	if errors.Is(context.Cause(hard), errDamaged) {
		loopErr = errors.Join(loopErr, errDamaged)
	}
	return errors.Join(loopErr, d.close())
}

// connectionEnded returns the error that ends Run when the loop stopped
// by itself: reconnect.policy never ended it with the connection. It is a
// failure, so that systemd's Restart=on-failure starts the daemon again.
func (d *Daemon) connectionEnded() error {
	cause := d.loop.Stats().LastError
	if cause == "" {
		cause = "no error recorded"
	}
	return fmt.Errorf("connection to the broker ended (%s) and reconnect.policy is never: "+
		"let systemd restart mqspool (Restart=on-failure) or set reconnect.policy to always", cause)
}

// errDamaged ends Run when the spool found its file damaged.
var errDamaged = errors.New("spool database is damaged: stopped so that the next start checks it and renames it aside; systemd starts it again")

// watchDamage returns ctx and hard, each also ended when the spool finds
// its file damaged, and a function that stops watching. Reads of the
// damaged file fail again on every try, so the daemon stops without a
// drain, and the next start checks the file and renames it aside. hard
// then has the cause errDamaged.
func (d *Daemon) watchDamage(ctx, hard context.Context) (context.Context, context.Context, func()) {
	hardCtx, cancelHard := context.WithCancelCause(hard)
	softCtx, cancelSoft := context.WithCancel(hardCtx)
	stopFollow := context.AfterFunc(ctx, cancelSoft)
	done := make(chan struct{})
	go func() {
		select {
		case <-d.spool.Damaged():
			d.log.Error("stopping because the spool database is damaged", "path", d.cfg.Spool.DB)
			cancelHard(errDamaged)
		case <-done:
		}
	}()
	return softCtx, hardCtx, func() {
		close(done)
		stopFollow()
		cancelSoft()
		cancelHard(nil)
	}
}

// startServers starts the control socket and the metrics listener and
// returns the function that stops both. Without them the daemon still
// forwards, so a failure is logged rather than returned.
func (d *Daemon) startServers(wg *sync.WaitGroup) (stop func()) {
	ctl := d.listenControl()
	if ctl != nil {
		wg.Go(ctl.Serve)
	}
	ms := d.listenMetrics()
	if ms != nil {
		wg.Go(ms.Serve)
	}
	return func() {
		if ctl != nil {
			ctl.Close()
		}
		if ms != nil {
			ms.Close()
		}
	}
}

// drive polls the event loop. When ctx ends it stops the intake and starts
// the loop's drain. When hard ends it returns at once. ctx must be a child
// of hard. Each Poll is bounded (see pollOnce), so the watchdog sees the
// loop's goroutine come back even when nothing happens.
func (d *Daemon) drive(ctx, hard context.Context, stopIntake func()) error {
	defer d.poll.stop()
	// The loop hears of the stop from here, not from this goroutine, which
	// may be inside a Poll that waits on a write to a stalled broker. systemd
	// hears of it here too, because a loop with nothing to drain may close
	// before this goroutine notices that ctx ended.
	// drive waits for a callback that started, so that STOPPING=1 and
	// the log line come before Run returns even when hard ends together
	// with ctx and the loop closes at once.
	drainStarted := make(chan struct{})
	stopDrain := context.AfterFunc(ctx, func() {
		defer close(drainStarted)
		d.stopping.Store(true)
		d.log.Info("shutting down", "drain_timeout", d.cfg.Shutdown.DrainTimeout)
		d.notifyStopping()
		d.loop.Shutdown(d.cfg.Shutdown.DrainTimeout)
	})
	defer func() {
		if !stopDrain() {
			<-drainStarted
		}
	}()
	stopHard := context.AfterFunc(hard, func() { d.loop.Shutdown(0) })
	defer stopHard()

	draining := false
	for {
		parent := ctx
		if draining {
			parent = hard
		}
		ev, err := d.pollOnce(parent)

		switch {
		case errors.Is(err, context.DeadlineExceeded) && parent.Err() == nil:
			continue
		case errors.Is(err, eventloop.ErrClosed) && ctx.Err() == nil:
			return d.connectionEnded()
		case errors.Is(err, eventloop.ErrClosed):
			return nil
		case err != nil && hard.Err() != nil:
			d.log.Warn("stopping without waiting for the drain")
			return nil
		case err != nil && !draining && ctx.Err() != nil:
			draining = true
			stopIntake()
			d.downlink.stopWaiting()
			continue
		case err != nil:
			return fmt.Errorf("event loop: %w", err)
		}
		d.observe(ev)
	}
}

// pollOnce runs one Poll with a deadline and records the heartbeat.
//
// The deadline is probeInterval while connected. Offline it is longer than
// a backoff wait plus a connect attempt, because a Poll deadline aborts a
// connect in progress (the loop then retries at once).
//
// TODO: a liveness probe in the event loop (a command that the Poll
// goroutine answers) would avoid both the aborted connects and the slower
// detection while offline.
func (d *Daemon) pollOnce(parent context.Context) (eventloop.Event, error) {
	bound := probeInterval
	if !d.loop.Stats().Connected {
		bound = d.cfg.Broker.ConnectTimeout + d.cfg.Reconnect.MaxDelay + probeInterval
	}
	ctx := d.poll.context(parent, bound, &d.live)
	ev, err := d.loop.Poll(ctx)
	d.live.beatLoop(time.Now(), bound)
	return ev, err
}

// pollWindow shares one deadline among the Polls of a window, so that a
// drain, which polls once per acknowledgement, does not create a context
// and a timer for each message.
type pollWindow struct {
	parent context.Context
	ctx    context.Context
	cancel context.CancelFunc
	bound  time.Duration
	start  time.Time
}

// context returns the window's context, and starts a new window when the
// parent or the bound changed, the deadline passed, or half the bound is
// used, so that every Poll gets at least half the bound. Offline, where
// the bound is sized to cover a backoff wait and a connect attempt, each
// Poll gets a window of its own.
func (w *pollWindow) context(parent context.Context, bound time.Duration, live *liveness) context.Context {
	now := time.Now()
	if w.ctx != nil && w.parent == parent && w.bound == bound && bound == probeInterval &&
		w.ctx.Err() == nil && now.Sub(w.start) < bound/2 {
		return w.ctx
	}
	w.stop()
	live.beatLoop(now, bound)
	w.parent, w.bound, w.start = parent, bound, now
	w.ctx, w.cancel = context.WithTimeout(parent, bound)
	return w.ctx
}

// stop releases the window's timer.
func (w *pollWindow) stop() {
	if w.cancel != nil {
		w.cancel()
		w.ctx, w.cancel = nil, nil
	}
}

func (d *Daemon) observe(ev eventloop.Event) {
	switch ev.Kind {
	case eventloop.EventAcknowledged:
		o := ev.Outcome
		d.metrics.ObserveOutcome(o)
		d.waits.outcome(o)
		switch o.Kind {
		case eventloop.Delivered:
			// The check spares a drain building the arguments of a
			// line that is not logged, once per message.
			if d.log.Enabled(context.Background(), slog.LevelDebug) {
				d.log.Debug("message acknowledged", "seq", o.Seq, "latency_ms", o.Latency.Milliseconds())
			}
		case eventloop.Failed:
			// Logged by the quarantine, with its name in failed/.
		case eventloop.Expired:
			d.log.Warn("message expired in the spool", "seq", o.Seq)
		case eventloop.Dropped:
			d.log.Warn("qos 0 message dropped while offline", "seq", o.Seq)
		}
	case eventloop.EventIncoming, eventloop.EventSubscribed:
		d.downlink.observe(ev)
	}
}

// listenControl opens the control socket.
func (d *Daemon) listenControl() *control.Server {
	srv, err := control.Listen(d.cfg.Control.Socket, controlHandler{d: d}, d.log.With("component", "control"))
	if err != nil {
		d.log.Error("control socket unavailable; status and ctl will not work", "socket", d.cfg.Control.Socket, "err", err)
		return nil
	}
	return srv
}

// listenMetrics binds metrics.listen, if set.
func (d *Daemon) listenMetrics() *metrics.Server {
	if d.cfg.Metrics.Listen == "" {
		return nil
	}
	srv, err := metrics.Listen(d.cfg.Metrics.Listen, d.metrics, d.log.With("component", "metrics"))
	if err != nil {
		d.log.Error("metrics unavailable", "listen", d.cfg.Metrics.Listen, "err", err)
		return nil
	}
	d.log.Info("serving metrics", "url", "http://"+srv.Addr()+"/metrics")
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
	defer d.releaseSpoolDir()
	defer d.socketLock.Close()
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
