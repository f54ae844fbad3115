package main

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/mqspool/mqspool/internal/config"
	"github.com/mqspool/mqspool/internal/format"
	"github.com/mqspool/mqspool/internal/message"
	"github.com/mqspool/mqspool/internal/pickup"
	"github.com/mqspool/mqspool/internal/spool"
)

func newSalvageCommand() *cobra.Command {
	var flags configFlags
	c := &cobra.Command{
		Use:   "salvage FILE",
		Short: "Copy every readable message from a damaged database into new/",
		Long: `Copy every readable message from a database that was renamed aside (or any
other spool database) into new/ as .msg files, in spool order, so the
daemon sends them again. A message with a value that a .msg header cannot
hold, such as a user property key with '=', is written as a .jsonl file.
Messages that were already delivered before the damage may be sent twice.

The files are named salvage-<run>-<sequence>.msg (or .jsonl), where <run>
is the start time of this salvage and a random part, so that a second
salvage does not reuse the names of an earlier one. A name that is taken anyway stops the
salvage with exit status 1, and no file is replaced.

FILE may not be the configured spool.db: the daemon sends the messages in
that file itself. The daemon may keep running meanwhile. Only a FILE that
a running daemon holds as its database stops salvage, with exit status 1.`,
		Args: exactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			loaded, err := flags.loadOffline(c)
			if err != nil {
				return err
			}
			return runSalvage(c, loaded, args[0])
		},
	}
	flags.register(c)
	return c
}

func runSalvage(c *cobra.Command, loaded *config.Loaded, file string) error {
	cfg := loaded.Config
	if err := checkNotSpoolDB(file, cfg.Spool.DB); err != nil {
		return err
	}
	if err := checkSalvageFile(file); err != nil {
		return err
	}
	dir := cfg.Spool.Dir
	if err := ensureSpoolDir(dir, spoolDirFix(loaded)); err != nil {
		return err
	}

	run := salvageRunID(time.Now())
	copied, skipped, err := spool.Salvage(file, func(r spool.Record) error {
		m := pickup.Unprefixed(r.Message, cfg.Publish.TopicPrefix)
		return salvageMessage(dir, fmt.Sprintf("salvage-%s-%020d", run, r.Seq), m)
	})
	if err != nil {
		return fmt.Errorf("salvage %s after %d messages: %w", file, copied, err)
	}
	if copied == 0 {
		return fmt.Errorf("no readable message found in %s (%d unreadable): check that it is an mqspool database", file, skipped)
	}
	fmt.Fprintf(c.OutOrStdout(), "salvaged %d messages into %s as salvage-%s-*, skipped %d unreadable\n",
		copied, filepath.Join(dir, "new"), run, skipped)
	printRecorded(c.OutOrStdout(), file, copied, skipped)
	return nil
}

// checkSalvageFile rejects a file that cannot hold a database before
// bbolt and the page scan try it: a missing file, a device such as
// /dev/null, a directory or an empty file.
func checkSalvageFile(file string) error {
	const fix = "give the path of the database that was renamed aside, such as spool.db.corrupt-* next to spool.db"
	info, err := os.Stat(file)
	if err != nil {
		return fmt.Errorf("salvage: %w: %s", err, fix)
	}
	if !info.Mode().IsRegular() {
		return usageError(fmt.Errorf("salvage: %s is %s, not a database file: %s", file, config.FileKind(info.Mode()), fix))
	}
	if info.Size() == 0 {
		return fmt.Errorf("salvage: %s is empty, so there is nothing to salvage: %s", file, fix)
	}
	return nil
}

// printRecorded compares the salvaged count with the queue length that
// the database records, when it can be read, so that messages lost to
// the damage are not hidden behind "skipped 0". Skipped records were
// found, so they are not counted as destroyed a second time.
func printRecorded(w io.Writer, file string, copied, skipped int) {
	recorded, ok := spool.RecordedMessages(file)
	found := int64(copied) + int64(skipped)
	switch {
	case !ok:
		fmt.Fprintln(w, "the database's own count of queued messages is unreadable, so it is unknown how many were lost")
	case found < recorded:
		fmt.Fprintf(w, "the database recorded %d queued messages, so %d were not found: "+
			"the damage destroyed them\n", recorded, recorded-found)
	case int64(copied) > recorded:
		fmt.Fprintf(w, "the database recorded %d queued messages: the other %d were delivered before "+
			"the damage and come back from freed pages, so subscribers get them again\n",
			recorded, int64(copied)-recorded)
	}
}

// salvageMessage drops m into new/ as NAME.msg, or as NAME.jsonl when a
// .msg header cannot hold one of its values. Stopping there instead would
// leave every later message of the database unsalvaged.
func salvageMessage(dir, name string, m message.Message) error {
	all := format.Fields{Topic: true, QoS: true, Retain: true}
	data, msgErr := encodeMessage(m, all)
	if msgErr == nil {
		return dropFile(dir, name+".msg", data)
	}
	var buf bytes.Buffer
	if err := format.WriteJSONL(&buf, m); err != nil {
		return errors.Join(msgErr, err)
	}
	return dropFile(dir, name+".jsonl", buf.Bytes())
}

// spoolDirFix names where the loaded spool.dir comes from, for the error
// about a missing spool directory. salvage has no --spool-dir flag, so the
// configuration is the only place to change it.
func spoolDirFix(loaded *config.Loaded) string {
	const key = "spool.dir"
	switch loaded.Sources[key] {
	case config.SourceEnv:
		return "check " + config.EnvName(key)
	case config.SourceFile:
		return "check spool.dir in " + loaded.File
	}
	if loaded.File != "" {
		return "set spool.dir in " + loaded.File
	}
	return "pass the daemon's configuration with --config, or set spool.dir in " + config.DefaultFile
}

// checkNotSpoolDB rejects file when it is the configured database db.
// Salvaging it would queue every message a second time, next to the
// copies the daemon sends itself.
func checkNotSpoolDB(file, db string) error {
	fileInfo, err := os.Stat(file)
	if err != nil {
		// spool.Salvage reports the file that cannot be read.
		return nil
	}
	dbInfo, err := os.Stat(db)
	if err != nil || !os.SameFile(fileInfo, dbInfo) {
		return nil
	}
	return usageError(fmt.Errorf("%s is the configured spool.db %s: the daemon sends the messages "+
		"in it itself, so salvage would queue each of them twice: salvage a copy renamed aside, "+
		"such as %s.corrupt-<timestamp>, instead", file, db, filepath.Base(db)))
}

// salvageRunID returns the part of the file names that sets one salvage
// apart from the others: its start time in UTC and 4 random bytes, so
// that two runs within the same second differ too.
func salvageRunID(now time.Time) string {
	var b [4]byte
	rand.Read(b[:])
	return now.UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b[:])
}
