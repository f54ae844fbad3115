package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/mqspool/mqspool/internal/config"
	"github.com/mqspool/mqspool/internal/control"
)

// socketFlags locate the control socket: --socket wins, else the config's
// control.socket.
type socketFlags struct {
	configFlags
	socket string
}

func (f *socketFlags) register(c *cobra.Command) {
	f.configFlags.register(c)
	c.Flags().StringVar(&f.socket, "socket", "", "control socket path (default: control.socket from the config)")
	c.Flags().SetNormalizeFunc(flagAlias("control-socket", "socket"))
}

// flagAlias makes a command take the flag name alias for name. The control
// socket is --control-socket to run and --socket to the client commands,
// and each takes the other's spelling too.
func flagAlias(alias, name string) func(*pflag.FlagSet, string) pflag.NormalizedName {
	return func(_ *pflag.FlagSet, flag string) pflag.NormalizedName {
		if flag == alias {
			flag = name
		}
		return pflag.NormalizedName(flag)
	}
}

func (f *socketFlags) path(c *cobra.Command) (string, error) {
	if f.socket != "" {
		return f.socket, nil
	}
	// Without a config file only the socket matters, so a missing
	// broker.urls must not stop status or ctl.
	if f.file == "" {
		if _, err := os.Stat(config.DefaultFile); errors.Is(err, os.ErrNotExist) {
			socket, _ := config.ControlSocket("") // the environment or the default
			return socket, nil
		}
	}
	loaded, err := f.loadOffline(c)
	if err == nil {
		return loaded.Config.Control.Socket, nil
	}

	// A running daemon keeps its configuration when a reload finds the
	// file invalid, and that is when its state matters most.
	socket, ok := config.ControlSocket(f.file)
	if !errors.Is(err, config.ErrInvalid) {
		return "", err
	}
	if !ok {
		return "", fmt.Errorf("%w\n  to reach a running daemon meanwhile, give its control socket with --socket", err)
	}
	fmt.Fprintf(c.ErrOrStderr(), "mqspool: warning: a restart or reload would fail: %v\n"+
		"mqspool: using control.socket %s from the file anyway\n", err, socket)
	return socket, nil
}

func (f *socketFlags) send(c *cobra.Command, req control.Request) (control.Response, error) {
	path, err := f.path(c)
	if err != nil {
		return control.Response{}, err
	}
	resp, err := control.Send(c.Context(), path, req)
	return resp, explainSocketError(path, err)
}

// explainSocketError replaces the "no daemon is listening" error of a
// socket this user may not open, because a daemon may well run there.
func explainSocketError(path string, err error) error {
	if !errors.Is(err, os.ErrPermission) {
		return err
	}
	group := "its group"
	if name := socketGroup(path); name != "" {
		group = "its group " + name
	}
	return fmt.Errorf("control socket %s: permission denied: a daemon may be running, but this user may not use its socket: "+
		"run the command as root or as a member of %s (see docs/operations.md)", path, group)
}

// socketGroup returns the name of the group that owns path, or "".
func socketGroup(path string) string {
	info, err := os.Stat(path)
	if err != nil {
		return ""
	}
	st, ok := info.Sys().(*syscall.Stat_t)
	if !ok {
		return ""
	}
	g, err := user.LookupGroupId(strconv.FormatUint(uint64(st.Gid), 10))
	if err != nil {
		return ""
	}
	return g.Name
}

func newStatusCommand() *cobra.Command {
	var flags socketFlags
	var asJSON bool
	c := &cobra.Command{
		Use:   "status",
		Short: "Show the state of the running daemon",
		Long:  "Show the state of the running daemon through its control socket. Exits 1 when no daemon listens.",
		Args:  exactArgs(0),
		RunE: func(c *cobra.Command, _ []string) error {
			resp, err := flags.send(c, control.Request{Command: control.CommandStatus})
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(c.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(resp.Status)
			}
			printStatus(c.OutOrStdout(), resp.Status)
			return nil
		},
	}
	flags.register(c)
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON for scripts")
	return c
}

func printStatus(w io.Writer, s *control.Status) {
	row := func(name, format string, args ...any) {
		fmt.Fprintf(w, "%-16s "+format+"\n", append([]any{name + ":"}, args...)...)
	}
	if s.Stopping {
		row("state", "stopping: draining before it exits")
	}
	if s.Connected {
		row("connection", "connected to %s (session present %t, client id %s)", s.Broker, s.SessionPresent, s.ClientID)
	} else {
		row("connection", "disconnected (client id %s): %s", s.ClientID, disconnectCause(s))
	}
	row("queue", "%s, %s, oldest %s", plural(s.QueueMessages, "message"), humanBytes(s.QueueBytes), seconds(s.OldestAgeSecs))
	row("inflight", "%d", s.Inflight)
	row("rates", "in %.1f/s, out %.1f/s", s.RateIn, s.RateOut)
	row("paused", "%t", s.Paused)
	row("throttle", "%s", s.Throttle)
	row("disk pressure", "%t", s.DiskPressure)
	row("spool full", "%t", s.SpoolFull)
	if s.WaitingFiles > 0 {
		row("waiting", "%s held back in new/ (spool full, disk pressure or a store error)", plural(int64(s.WaitingFiles), "file"))
	}
	if s.DroppedOverflow > 0 {
		row("dropped", "%s deleted by spool.overflow drop-oldest since the database was created",
			plural(int64(s.DroppedOverflow), "oldest message"))
	}
	row("failed/", "%d files, %s (any cause, kept until removed)", s.FailedFiles, humanBytes(s.FailedBytes))
	if s.FailedError != "" {
		row("failed/ error", "%s", s.FailedError)
	}
	if s.FailedKept > 0 {
		row("kept", "%d rejected messages stay in the spool because failed/ could not take them; "+
			"they are sent again after the next start", s.FailedKept)
	}
	if f := s.PartialFile; f != nil {
		row("storing", "%s in parts: %d of %d messages in the spool", f.Path, f.Stored, f.Total)
	}
	if s.SpoolDirLockedElsewhere {
		row("intake", "stopped: another daemon holds the lock of the spool directory at its path, so this one "+
			"takes no new files from it until that daemon lets go")
	}
	if s.DamagedDatabase != "" {
		row("damaged db", "the spool database was found damaged and moved to %s at start; recover its "+
			"messages with mqspool spool salvage %s", s.DamagedDatabase, s.DamagedDatabase)
	}
	if s.StaleTmpFiles > 0 {
		row("tmp/", "%d files older than a day: a producer may have died before renaming them into new/", s.StaleTmpFiles)
	}
	row("time to drain", "%s", eta(s))
	row("since start", "published %d, acknowledged %d, rejected by the broker or over its limits %d, reconnects %d",
		s.Published, s.Acknowledged, s.Failed, s.Reconnects)
	row("uptime", "%s", seconds(s.UptimeSecs))
	if s.LastError != "" {
		row("last error", "%s", s.LastError)
	}
	if s.IntakeError != "" {
		row("intake error", "%s (%s ago)", s.IntakeError, seconds(s.IntakeErrorAgeSecs))
	}
	for _, sub := range s.Subscriptions {
		printSubscription(row, sub)
	}
}

// printSubscription prints one downlink subscription and its inbox.
func printSubscription(row func(name, format string, args ...any), s control.SubscriptionStatus) {
	state := "ok"
	switch {
	case s.Rejected != "":
		state = "rejected by the broker or over its limits: " + s.Rejected
	case s.Error != "":
		state = "inbox unusable, acknowledgements held: " + s.Error
	case s.Full:
		state = "inbox full, acknowledgements held"
	}
	row("subscription", "%s -> %s: %s", s.Filter, s.Dir, state)
	backlog := fmt.Sprintf("%d files %s", s.BacklogFiles, humanBytes(s.BacklogBytes))
	if s.BacklogStale {
		backlog = "unknown, new/ cannot be counted (last count " + backlog + ")"
	}
	row("  inbox", "received %d (%d with DUP set), backlog %s, qos 0 dropped %d, failed %d, skipped %d",
		s.Received, s.Duplicates, backlog, s.Dropped, s.Failed, s.Skipped)
}

// humanBytes formats n with one decimal in the largest binary unit below
// it, such as 289.1MiB.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	value, exp := float64(n), 0
	for value >= unit && exp < 4 {
		value /= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ciB", value, "KMGT"[exp-1])
}

// disconnectCause returns the last connection error. Without one, the
// daemon either awaits its first CONNACK or closed the connection itself
// with DISCONNECT, as a stop does. The broker URL is set only after a
// CONNACK, so it separates the two cases.
func disconnectCause(s *control.Status) string {
	switch {
	case s.LastError != "":
		return s.LastError
	case s.Broker != "":
		return "mqspool closed the connection to " + s.Broker
	default:
		return "not connected yet"
	}
}

// plural returns n with noun, adding an s unless n is 1.
func plural(n int64, noun string) string {
	if n == 1 {
		return fmt.Sprintf("1 %s", noun)
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

func seconds(v float64) string {
	return (time.Duration(v * float64(time.Second))).Round(time.Second).String()
}

func eta(s *control.Status) string {
	switch {
	case s.QueueMessages == 0:
		return "empty"
	case s.Paused:
		return "unknown (paused)"
	case !s.Connected:
		return "unknown (disconnected)"
	case s.DrainETASecs <= 0 && s.Inflight > 0:
		return "unknown (no rate measured yet)"
	case s.DrainETASecs <= 0:
		return "unknown (not sending)"
	case s.DrainETASecs < 1:
		return "under 1s"
	default:
		return seconds(s.DrainETASecs)
	}
}

func newCtlCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "ctl",
		Short: "Control the running daemon: pause, resume, reconnect, throttle",
	}
	simple := func(name, short string) *cobra.Command {
		var flags socketFlags
		sub := &cobra.Command{
			Use:   name,
			Short: short,
			Args:  exactArgs(0),
			RunE: func(c *cobra.Command, _ []string) error {
				if _, err := flags.send(c, control.Request{Command: name}); err != nil {
					return err
				}
				fmt.Fprintf(c.OutOrStdout(), "%s: done\n", name)
				return nil
			},
		}
		flags.register(sub)
		return sub
	}
	c.AddCommand(
		simple(control.CommandPause, "Stop publishing; the connection stays up with pings"),
		simple(control.CommandResume, "Resume publishing"),
		simple(control.CommandReconnect, "Close the connection and connect again now"),
		newThrottleCommand(),
	)
	return c
}

func newThrottleCommand() *cobra.Command {
	var flags socketFlags
	c := &cobra.Command{
		Use:   "throttle RATE",
		Short: "Limit the publish rate: 100/s (messages), 64KiB/s (bytes) or off",
		Args:  exactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			rate, err := config.ParseRate(args[0])
			if err != nil {
				return usageError(err)
			}
			if _, err := flags.send(c, control.Request{Command: control.CommandThrottle, Rate: args[0]}); err != nil {
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), "throttle %s: done\n", rate)
			return nil
		},
	}
	flags.register(c)
	return c
}
