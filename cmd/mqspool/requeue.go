package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/spf13/cobra"

	"github.com/mqspool/mqspool/internal/format"
	"github.com/mqspool/mqspool/internal/pickup"
)

// reasonSuffix ends the name of a reason file, which contains why the
// file named without the suffix failed.
const reasonSuffix = ".reason"

func newRequeueFailedCommand() *cobra.Command {
	var flags configFlags
	c := &cobra.Command{
		Use:   "requeue-failed",
		Short: "Move every file in failed/ back into new/ to retry it",
		Long: `Move every file in failed/ back into new/ under the same relative path, so a
running daemon retries it, and remove its .reason file. Works while the
daemon runs: it only renames files within the spool directory.

NAME.reason is taken for the reason file of NAME when NAME is beside it.
A file whose name is already taken in new/ stays in failed/. The others are
still moved, and the command then lists the names and exits 1.

A spool-SEQUENCE.record file, a stored record that could not be decoded
into a message, stays in failed/ and is listed: its .reason file says
how to publish what is legible in it.`,
		Args: exactArgs(0),
		RunE: func(c *cobra.Command, _ []string) error {
			loaded, err := flags.loadOffline(c)
			if err != nil {
				return err
			}
			res, err := requeueFailed(loaded.Config.Spool.Dir)
			out := c.OutOrStdout()
			fmt.Fprintf(out, "requeued %s\n", plural(int64(res.moved), "file"))
			for _, p := range res.orphans {
				fmt.Fprintf(out, "kept %s: no file of that name without %s is beside it, so it is taken for "+
					"the reason of a deleted file: delete it, or move it into new/ yourself if it is a message\n",
					p, reasonSuffix)
			}
			for _, p := range res.records {
				fmt.Fprintf(out, "kept %s: a stored record that could not be decoded, not a message: "+
					"see its .reason file\n", p)
			}
			return errors.Join(err, res.collisionError())
		},
	}
	flags.register(c)
	return c
}

// requeueResult is the outcome of requeueFailed.
type requeueResult struct {
	// moved counts the files renamed into new/.
	moved int
	// collisions lists the new/ paths that already existed, whose files
	// stay in failed/.
	collisions []string
	// orphans lists the failed/ paths of reason files whose file is gone.
	orphans []string
	// records lists the failed/ paths of undecodable records.
	records []string
}

// collisionError returns the error that lists the names already taken in
// new/, or nil when there were none.
func (r requeueResult) collisionError() error {
	if len(r.collisions) == 0 {
		return nil
	}
	return fmt.Errorf("requeue failed/: %d files stay in failed/ because new/ already has a file "+
		"of the same name: %s: move or remove those files in new/, or wait until the daemon took them, "+
		"then run requeue-failed again", len(r.collisions), strings.Join(r.collisions, ", "))
}

// requeueFailed renames failed/REL to new/REL for every entry that is
// not a directory or a reason file, symbolic links and FIFOs included, and
// removes REL.reason. A missing failed/ counts as empty, and a missing
// spool directory is an error. A name already taken in new/ is skipped
// and listed in the result. Any other error stops it. The directories it took files
// from are synced at the end.
func requeueFailed(spoolDir string) (requeueResult, error) {
	r := requeuer{failed: filepath.Join(spoolDir, "failed"), newDir: filepath.Join(spoolDir, "new")}
	if fi, err := os.Stat(spoolDir); err != nil || !fi.IsDir() {
		return r.result, fmt.Errorf("requeue failed/: spool directory %s not found: check spool.dir or --config", spoolDir)
	}
	// The daemon creates failed/ at start, so a spool directory without
	// it has no failed files yet.
	if _, err := os.Lstat(r.failed); errors.Is(err, fs.ErrNotExist) {
		return r.result, nil
	}
	err := filepath.WalkDir(r.failed, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !e.IsDir() {
			return nil
		}
		return r.requeueDir(p)
	})
	for _, dir := range r.emptied {
		err = errors.Join(err, format.SyncDir(dir))
	}
	if err != nil {
		return r.result, fmt.Errorf("requeue failed/: %w", err)
	}
	return r.result, nil
}

// requeuer moves the files of failed/ back into new/.
type requeuer struct {
	failed  string
	newDir  string
	emptied []string
	result  requeueResult
}

// requeueDir moves the files directly in dir, which lies in failed/. The
// entries are read once before any move, so that a reason file is
// recognized by the names that were beside it.
func (r *requeuer) requeueDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	names := make(map[string]bool, len(entries))
	for _, e := range entries {
		names[e.Name()] = true
	}

	moved := false
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		switch classifyFailed(e.Name(), names) {
		case failedReason:
			continue
		case failedOrphan:
			r.result.orphans = append(r.result.orphans, filepath.Join(dir, e.Name()))
			continue
		}
		if dir == r.failed && recordName.MatchString(e.Name()) {
			r.result.records = append(r.result.records, filepath.Join(dir, e.Name()))
			continue
		}
		ok, err := r.requeueFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return err
		}
		moved = moved || ok
	}
	if moved {
		r.emptied = append(r.emptied, dir)
	}
	return nil
}

// requeueFile moves one failed file into new/ and removes its reason
// file. It returns false without an error when new/ already has the name.
func (r *requeuer) requeueFile(p string) (bool, error) {
	rel, err := filepath.Rel(r.failed, p)
	if err != nil {
		return false, err
	}
	to := filepath.Join(r.newDir, rel)
	err = moveInto(p, to)
	if errors.Is(err, fs.ErrExist) {
		r.result.collisions = append(r.result.collisions, to)
		return false, nil
	}
	if err != nil {
		return false, err
	}
	os.Remove(p + reasonSuffix)
	r.result.moved++
	return true, nil
}

// recordName matches the name the daemon gives an undecodable record in
// failed/: spool-, the 20-digit sequence number, a number the name gets
// when it is taken, and pickup.RecordExt.
var recordName = regexp.MustCompile(`^spool-[0-9]{20}(\.[0-9]+)?` + regexp.QuoteMeta(pickup.RecordExt) + `$`)

// failedKind is the role of a file in failed/.
type failedKind int

const (
	// failedFile is a file to move back into new/.
	failedFile failedKind = iota
	// failedReason is the reason file of a file beside it.
	failedReason
	// failedOrphan is a reason file whose file is gone, or a failed file
	// named NAME.reason that has no reason file of its own. The two look
	// the same.
	failedOrphan
)

// classifyFailed returns the role of the file name in failed/, given the
// names in its directory. NAME.reason is the reason file of NAME when NAME is
// there, and a failed file when it has its own NAME.reason.reason.
func classifyFailed(name string, names map[string]bool) failedKind {
	base, ok := strings.CutSuffix(name, reasonSuffix)
	switch {
	case !ok:
		return failedFile
	case names[base]:
		return failedReason
	case names[name+reasonSuffix]:
		return failedFile
	default:
		return failedOrphan
	}
}

// moveInto renames from to to without replacing a file at to, and syncs
// the directory of to.
func moveInto(from, to string) error {
	if err := format.MkdirAllSync(filepath.Dir(to)); err != nil {
		return err
	}
	if err := format.RenameNoReplace(from, to); err != nil {
		return err
	}
	return format.SyncDir(filepath.Dir(to))
}
