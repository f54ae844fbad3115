package main

import (
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/spf13/cobra"

	"github.com/mqspool/mqspool/internal/config"
	"github.com/mqspool/mqspool/internal/pickup"
	"github.com/mqspool/mqspool/internal/spool"
)

// maxListLimit bounds a page of spool ls, which is read into memory.
const maxListLimit = 100_000

// offlineLockTimeout is how long the spool commands wait for the database
// lock before concluding that a running daemon holds it.
const offlineLockTimeout = time.Second

func newSpoolCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "spool",
		Short: "Inspect and repair the spool (stats, ls and compact need the daemon stopped)",
	}
	c.AddCommand(newSpoolStatsCommand(), newSpoolLsCommand(), newRequeueFailedCommand(), newSalvageCommand(), newCompactCommand())
	return c
}

// openOffline opens the configured database read-only, failing after a
// short wait when a running daemon holds it.
func openOffline(cfg *config.Config) (*spool.Spool, error) {
	if _, err := os.Stat(cfg.Spool.DB); err != nil {
		return nil, fmt.Errorf("spool database %s: %w: check spool.db", cfg.Spool.DB, err)
	}
	sp, err := spool.Open(spool.Options{Path: cfg.Spool.DB, LockTimeout: offlineLockTimeout, ReadOnly: true})
	if errors.Is(err, spool.ErrLocked) {
		return nil, fmt.Errorf("%w (systemctl stop mqspool)", err)
	}
	return sp, err
}

func newSpoolStatsCommand() *cobra.Command {
	var flags configFlags
	c := &cobra.Command{
		Use:   "stats",
		Short: "Show messages, bytes, oldest age, outstanding flows and failed/ count",
		Args:  exactArgs(0),
		RunE: func(c *cobra.Command, _ []string) error {
			loaded, err := flags.loadOffline(c)
			if err != nil {
				return err
			}
			cfg := loaded.Config
			sp, err := openOffline(cfg)
			if err != nil {
				return err
			}
			defer sp.Close()

			st := sp.Stats()
			out := c.OutOrStdout()
			fmt.Fprintf(out, "database:  %s\n", cfg.Spool.DB)
			fmt.Fprintf(out, "messages:  %d\n", st.Messages)
			fmt.Fprintf(out, "bytes:     %s\n", config.ByteSize(st.Bytes))
			if !st.Oldest.IsZero() {
				fmt.Fprintf(out, "oldest:    %s (%s ago)\n", st.Oldest.UTC().Format(time.RFC3339), time.Since(st.Oldest).Round(time.Second))
			}
			fmt.Fprintf(out, "flows:     %d outgoing, %d incoming awaiting PUBREL\n", st.Flows, st.Incoming)
			files, bytes := pickup.FailedUsage(cfg.Spool.Dir)
			fmt.Fprintf(out, "failed/:   %d files, %s\n", files, config.ByteSize(bytes))
			return nil
		},
	}
	flags.register(c)
	return c
}

func newSpoolLsCommand() *cobra.Command {
	var flags configFlags
	var after uint64
	var limit int
	c := &cobra.Command{
		Use:   "ls",
		Short: "List queued messages in spool order, a page at a time",
		Args:  exactArgs(0),
		RunE: func(c *cobra.Command, _ []string) error {
			if limit < 1 || limit > maxListLimit {
				return usageError(fmt.Errorf("--limit %d is invalid: use 1 to %d messages per page", limit, maxListLimit))
			}
			loaded, err := flags.loadOffline(c)
			if err != nil {
				return err
			}
			sp, err := openOffline(loaded.Config)
			if err != nil {
				return err
			}
			defer sp.Close()

			recs, more, err := listPage(sp, after, limit)
			if err != nil {
				return err
			}

			out := c.OutOrStdout()
			fmt.Fprintf(out, "%-12s %-20s %-3s %8s  %s\n", "SEQ", "ENQUEUED", "QOS", "BYTES", "TOPIC")
			for _, r := range recs {
				fmt.Fprintf(out, "%-12d %-20s %-3d %8d  %s\n", r.Seq, r.Enqueued.UTC().Format(time.DateTime), r.Message.QoS, len(r.Message.Payload), printableTopic(r.Message.Topic))
			}
			if more {
				fmt.Fprintf(out, "next page: %s\n", nextPageCommand(c, flags.file, limit, recs[len(recs)-1].Seq))
			}
			return nil
		},
	}
	flags.register(c)
	c.Flags().Uint64Var(&after, "after", 0, "list messages with a sequence number above this one")
	c.Flags().IntVar(&limit, "limit", 50, "messages per page")
	return c
}

// listPage returns up to limit records with a sequence number above
// after, and whether more follow.
func listPage(sp *spool.Spool, after uint64, limit int) ([]spool.Record, bool, error) {
	// No sequence number is above the largest one, and List would wrap
	// after+1 around to the first record.
	if after == math.MaxUint64 {
		return nil, false, nil
	}

	// A record beyond the page shows that a next page exists.
	recs, err := sp.List(after, limit+1)
	if err != nil {
		return nil, false, err
	}
	more := len(recs) > limit
	return recs[:min(len(recs), limit)], more, nil
}

func newCompactCommand() *cobra.Command {
	var flags configFlags
	c := &cobra.Command{
		Use:   "compact",
		Short: "Give back the disk space of delivered messages by rewriting spool.db",
		Long: `Rewrite spool.db into a new file that holds only what is still queued and
put it in place of the old one. The database keeps its peak size after a
backlog drains, because the space of delivered messages is only reused,
never returned; compact returns it. The daemon must be stopped. The file
system needs room for a copy of the messages still queued. The new file
keeps the old one's mode and owner, and a damaged database is left as it
is.`,
		Args: exactArgs(0),
		RunE: func(c *cobra.Command, _ []string) error {
			loaded, err := flags.loadOffline(c)
			if err != nil {
				return err
			}
			res, err := spool.Compact(loaded.Config.Spool.DB, offlineLockTimeout)
			if errors.Is(err, spool.ErrLocked) {
				return fmt.Errorf("%w (systemctl stop mqspool)", err)
			}
			if errors.Is(err, spool.ErrCorrupt) {
				db := loaded.Config.Spool.DB
				return fmt.Errorf("%w: the database is damaged and was left as it is: with the daemon "+
					"stopped, move it aside (mv %s %s.damaged-copy), start the daemon and recover the "+
					"messages with mqspool spool salvage %s.damaged-copy", err, db, db, db)
			}
			if err != nil {
				return err
			}
			if res.KeptOriginal {
				fmt.Fprintf(c.OutOrStdout(), "%s is already compact (%s, %d messages queued): kept it as it was\n",
					res.Path, config.ByteSize(res.Before), res.Messages)
				return nil
			}
			fmt.Fprintf(c.OutOrStdout(), "compacted %s from %s to %s, %d messages queued\n",
				res.Path, config.ByteSize(res.Before), config.ByteSize(res.After), res.Messages)
			return nil
		},
	}
	flags.register(c)
	return c
}

// printableTopic returns topic as it is when every character prints, and
// quoted with Go escapes otherwise, so that a control character stored by
// an older version cannot reach the terminal.
func printableTopic(topic string) string {
	if strings.IndexFunc(topic, func(r rune) bool { return !unicode.IsPrint(r) }) < 0 {
		return topic
	}
	return strconv.Quote(topic)
}

// nextPageCommand returns the command line that lists the page after seq,
// with the --config and --limit the user gave.
func nextPageCommand(c *cobra.Command, file string, limit int, seq uint64) string {
	args := []string{"mqspool", "spool", "ls"}
	if file != "" {
		args = append(args, "--config", shellQuote(file))
	}
	if c.Flags().Changed("limit") {
		args = append(args, "--limit", strconv.Itoa(limit))
	}
	args = append(args, "--after", strconv.FormatUint(seq, 10))
	return strings.Join(args, " ")
}

// shellQuote quotes s for a POSIX shell unless it needs no quoting.
func shellQuote(s string) string {
	plain := s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-+=:,@", r))
	}) < 0
	if plain {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
