package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/mqspool/mqspool/internal/control"
)

// waitRetry is the pause between attempts to reach a daemon that is not
// listening yet, for example while systemd restarts it.
const waitRetry = 200 * time.Millisecond

// waitFlags are the publish flags for waiting on the acknowledgement.
type waitFlags struct {
	wait   time.Duration
	socket string
}

func (f *waitFlags) register(c *cobra.Command) {
	c.Flags().DurationVar(&f.wait, "wait", 0, "wait up to this long (for example 30s) for the broker's acknowledgement; 0: do not wait")
	c.Flags().StringVar(&f.socket, "socket", "", "control socket for --wait (default: control.socket from the config)")
	c.Flags().SetNormalizeFunc(flagAlias("control-socket", "socket"))
}

// waitFor requests the outcome of the file name in new/ from the daemon
// on socket and turns it into the exit status: 0 delivered, 3 timed out,
// 4 rejected.
func (f *waitFlags) waitFor(c *cobra.Command, socket, name string) error {
	deadline := time.Now().Add(f.wait)
	res, err := askWait(c.Context(), socket, name, deadline, c.ErrOrStderr())
	if err != nil {
		return err
	}
	return waitExit(c, name, res)
}

// askWait sends the wait request, retrying while no daemon listens or the
// daemon turns connections away, until deadline. The first request is
// sent even when deadline has passed, so that a short --wait still
// reaches a listening daemon. A daemon that stops during the wait is
// asked again once one listens: the message stays queued, and the next
// daemon reports it if it takes the file from new/ itself. The first time
// no daemon listens, it notes on stderr that the command keeps waiting
// for one.
func askWait(ctx context.Context, socket, name string, deadline time.Time, stderr io.Writer) (control.WaitResult, error) {
	lastMiss := "no daemon listened on " + socket
	noted, notedBusy := false, false
	for attempt := 0; ; attempt++ {
		left := time.Until(deadline)
		if left <= 0 && attempt > 0 {
			return control.WaitResult{State: control.WaitTimedOut, Reason: lastMiss}, nil
		}
		req := control.Request{Command: control.CommandWait, File: name, TimeoutMillis: max(left.Milliseconds(), 1)}
		resp, err := control.Send(ctx, socket, req)
		err = explainSocketError(socket, err)
		switch {
		case err == nil && resp.Wait == nil:
			return control.WaitResult{}, fmt.Errorf("wait for new/%s: the daemon sent no wait result: upgrade it to this version", name)
		case err == nil && resp.Wait.State == control.WaitStopped:
			lastMiss = "the daemon stopped before the acknowledgement"
		case err == nil:
			return *resp.Wait, nil
		case errors.Is(err, control.ErrBusy):
			// The request did not run, and the message stays queued, so
			// it is asked again as if no daemon listened.
			lastMiss = "the daemon on " + socket + " served its maximum of control connections"
			if !notedBusy && left > waitRetry {
				notedBusy = true
				fmt.Fprintf(stderr, "mqspool: the daemon on %s serves its maximum of control connections; "+
					"new/%s stays queued, and this asks again for up to %s\n", socket, name, left.Round(time.Second))
			}
		case !errors.Is(err, control.ErrNoDaemon):
			return control.WaitResult{}, fmt.Errorf("wait for new/%s: %w", name, err)
		case !noted && left > waitRetry:
			noted = true
			fmt.Fprintf(stderr, "mqspool: no daemon listens on %s yet; new/%s stays queued, and this waits up to %s for a daemon to deliver it\n",
				socket, name, left.Round(time.Second))
		}
		time.Sleep(min(waitRetry, left))
	}
}

// waitExit prints the outcome and returns the error carrying its exit
// status.
func waitExit(c *cobra.Command, name string, res control.WaitResult) error {
	switch res.State {
	case control.WaitDelivered:
		fmt.Fprintf(c.OutOrStdout(), "delivered new/%s\n", name)
		return nil
	case control.WaitTimedOut:
		return &exitError{code: exitWaitTimeout, err: fmt.Errorf("new/%s not acknowledged in time (%s): it stays queued and is still sent", name, res.Reason)}
	case control.WaitRejected:
		return &exitError{code: exitRejected, err: fmt.Errorf("new/%s rejected: %s: it is in failed/ with its reason, "+
			"or, when failed/ cannot be written, still queued (the daemon's log says which)", name, res.Reason)}
	default:
		return fmt.Errorf("new/%s not delivered: %s: %s", name, res.State, res.Reason)
	}
}
