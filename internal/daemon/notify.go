package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	sd "github.com/coreos/go-systemd/v22/daemon"
)

// statusInterval is how often the STATUS= line sent to systemd is
// refreshed.
const statusInterval = 2 * time.Second

// notifier sends sd_notify messages. Outside systemd, where NOTIFY_SOCKET
// is unset, every call does nothing.
type notifier struct {
	log *slog.Logger
}

// send sends state to systemd and logs a failure, because systemd then
// considers the service not ready or hung.
func (n notifier) send(state string) {
	if _, err := sd.SdNotify(false, state); err != nil {
		n.log.Warn("systemd notification failed", "state", state, "err", err)
	}
}

// notifyReady sends READY=1 once the spool is open and the pickup runs. It
// does not wait for the broker, because a gateway that starts offline is
// working.
func (d *Daemon) notifyReady() {
	d.notify.send(sd.SdNotifyReady + "\nSTATUS=" + d.statusLine())
}

// notifyStopping sends STOPPING=1 when the drain begins.
func (d *Daemon) notifyStopping() {
	d.notify.send(sd.SdNotifyStopping + "\nSTATUS=stopping: draining inflight messages")
}

// statusLine is the one-line state that systemctl status shows.
func (d *Daemon) statusLine() string {
	ls := d.loop.Stats()
	ss := d.spool.Stats()
	conn := "disconnected"
	if ls.Connected {
		conn = "connected to " + ls.URL
	}
	line := fmt.Sprintf("%s; queue %d messages, %d bytes; inflight %d", conn, ss.Messages, ss.Bytes, ls.Inflight)
	if ls.Paused {
		line += "; paused"
	}
	if held := d.downlink.heldSummary(); held != "" {
		line += "; " + held
	}
	return line
}

// reportStatus refreshes the STATUS= line until ctx ends.
func (d *Daemon) reportStatus(ctx context.Context) {
	t := time.NewTicker(statusInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			d.notify.send("STATUS=" + d.statusLine())
		}
	}
}

// watchdog sends WATCHDOG=1 at half the timeout systemd set in
// WATCHDOG_USEC, but only while the event loop and the pickup prove to be
// alive. Delivery plays no part, so an offline gateway is not restarted.
func (d *Daemon) watchdog(ctx context.Context) {
	timeout, err := sd.SdWatchdogEnabled(false)
	if err != nil {
		d.log.Warn("systemd watchdog settings unreadable, watchdog off", "err", err)
		return
	}
	if timeout <= 0 {
		return
	}
	d.log.Info("systemd watchdog on", "timeout", timeout, "ping_interval", timeout/2)
	t := time.NewTicker(timeout / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			d.watchdogTick(time.Now())
		}
	}
}

// watchdogTick pings systemd when both parts prove alive at now. A
// stalled part is logged, and the missing pings let systemd restart the
// daemon. The overdue time is an attribute of its own, which the repeat
// limiter leaves out, so a stall logs one line per window.
func (d *Daemon) watchdogTick(now time.Time) {
	overdue, err := d.live.check(now)
	if err != nil {
		args := []any{"err", err}
		if overdue > 0 {
			args = append(args, "overdue", overdue.Round(time.Millisecond))
		}
		d.log.Error("watchdog ping withheld", args...)
		return
	}
	d.notify.send(sd.SdNotifyWatchdog)
}
