// Package crashpoint stops the process with SIGKILL at a named durable
// step, so tests can show that a crash between any two steps loses
// nothing. It is off unless the environment variable MQSPOOL_CRASHPOINT
// names a point, as "NAME" (the first time it is reached) or "NAME:N"
// (the N-th time). Unset, [Hit] is a single comparison of an empty string.
//
// The points, in the order a message passes them, are listed in [Points].
//
// The package also injects one fault: while the file that the environment
// variable MQSPOOL_COMMIT_FAULT_FILE names exists, [CommitFault] fails the
// journal's commits, as a full disk does.
package crashpoint

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
)

// EnvVar names the crash point to stop at.
const EnvVar = "MQSPOOL_CRASHPOINT"

// The crash points. Each sits between two durable steps.
const (
	// IngestBeforeAppend: files read and parsed, nothing committed.
	IngestBeforeAppend = "ingest-before-append"
	// IngestAfterAppend: messages and file identities committed, files
	// still in new/.
	IngestAfterAppend = "ingest-after-append"
	// IngestAfterPart: one part of a file appended in parts committed,
	// the parts after it not. Not in [Points]: only a long .jsonl file
	// reaches it.
	IngestAfterPart = "ingest-after-part"
	// IngestAfterUnlink: files unlinked, directory not yet synced.
	IngestAfterUnlink = "ingest-after-unlink"
	// IngestAfterSync: unlinks durable, identities not yet forgotten.
	IngestAfterSync = "ingest-after-sync"
	// JournalBeforeCommit: session changes (packet id assigned, PUBREC,
	// acknowledgement) about to be committed.
	JournalBeforeCommit = "journal-before-commit"
	// JournalAfterCommit: session changes committed, the packets that
	// depend on them not yet written.
	JournalAfterCommit = "journal-after-commit"
)

// Points lists every crash point.
var Points = []string{
	IngestBeforeAppend, IngestAfterAppend, IngestAfterUnlink, IngestAfterSync,
	JournalBeforeCommit, JournalAfterCommit,
}

var (
	target    string
	remaining atomic.Int64
)

func init() {
	Set(os.Getenv(EnvVar))
}

// Set arms the point named by spec ("NAME" or "NAME:N"); an empty spec
// disarms. Tests in the same process use it instead of the environment.
func Set(spec string) {
	name, count, found := strings.Cut(spec, ":")
	n := int64(1)
	if found {
		if v, err := strconv.ParseInt(count, 10, 64); err == nil && v > 0 {
			n = v
		}
	}
	target = name
	remaining.Store(n)
}

// Hit kills the process if name is the armed point and this is the N-th
// time it is reached.
func Hit(name string) {
	if target == "" || name != target {
		return
	}
	if remaining.Add(-1) == 0 {
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // SIGKILL cannot be caught; never go on past the point
	}
}

// FaultEnvVar names a file. While it exists, [CommitFault] returns
// [ErrInjected]. Tests create and remove the file to start and end the
// fault at a chosen moment. A real full disk fails a bbolt commit only
// when the commit has to grow the file, which no test can time.
const FaultEnvVar = "MQSPOOL_COMMIT_FAULT_FILE"

// ErrInjected is the error of an injected commit fault.
var ErrInjected = errors.New("injected commit fault: the file named by " + FaultEnvVar + " exists")

var faultFile = os.Getenv(FaultEnvVar)

// CommitFault returns ErrInjected while the file named by FaultEnvVar
// exists. Unset, it is a single comparison of an empty string.
func CommitFault() error {
	if faultFile == "" {
		return nil
	}
	if _, err := os.Stat(faultFile); err == nil {
		return ErrInjected
	}
	return nil
}
