package pickup

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mqspool/mqspool/internal/format"
	"github.com/mqspool/mqspool/internal/message"
	"github.com/mqspool/mqspool/internal/spool"
)

// Defaults used for zero values in [Options].
const (
	DefaultSettle          = 2 * time.Second
	DefaultRescanInterval  = 30 * time.Second
	DefaultMaxMessageBytes = 1 << 20
	DefaultBatchMax        = 4096
)

// Route sets topic, QoS and retain for files whose path under new/
// matches a glob. The first matching route applies. Fields that a file
// sets itself win over the route.
type Route struct {
	// Match is a slash-separated glob on the path under new/, such as
	// "site1/*/*.json". Each segment is matched with [path.Match], and a
	// segment "**" matches any number of segments, including none.
	Match string
	// Topic replaces the topic a raw file takes from its directory, and
	// is the topic of .msg and .jsonl messages that set none. Empty keeps
	// the path topic or publish.default_topic.
	Topic string
	// QoS and Retain apply to messages that do not set them; nil leaves
	// the publish.* default.
	QoS    *byte
	Retain *bool
	// AllowDollar permits topics starting with $.
	AllowDollar bool
}

// Options configures a [Pickup]. Zero durations and sizes take the
// Default* values.
type Options struct {
	// Dir is the spool directory (spool.dir) that contains tmp/, new/ and
	// failed/.
	Dir string
	// Settle is how long a file written in place must keep its size and
	// modification time before a rescan takes it.
	Settle time.Duration
	// RescanInterval is the time between full rescans of new/.
	RescanInterval time.Duration
	// DefaultTopic is used when neither the file, its path nor a route
	// gives a topic; empty rejects such files.
	DefaultTopic string
	// TopicPrefix is prepended to every topic.
	TopicPrefix   string
	DefaultQoS    byte
	DefaultRetain bool
	Routes        []Route
	// MaxMessageBytes limits each message, as [message.Message.Size]
	// counts it, and the size of raw files. A .msg file may be 64 KiB
	// larger for its headers, and a .jsonl file 16 times as large.
	MaxMessageBytes int
	// MessageIDProperty names a user property that carries a unique,
	// stable id for each message; empty adds none.
	MessageIDProperty string
	// IngestTimeProperty names a user property that carries the RFC 3339
	// ingest time; empty adds none.
	IngestTimeProperty string
	// MinFreeBytes pauses ingest while FreeSpacePath's file system has
	// fewer free bytes; 0 disables the check.
	MinFreeBytes  uint64
	FreeSpacePath string
	// BatchMax is the maximum number of files in one Store.Append call.
	// Each batch pays for two bbolt syncs and a directory sync, which cost
	// more than reading thousands of small files, so a backlog goes in
	// large batches. batchBytes still bounds the memory one batch uses.
	BatchMax int
	// QueueMax bounds the files queued in memory, so that a backlog in
	// new/, as behind a full spool, costs no memory in proportion. Files
	// beyond it wait in new/, and rescans queue the oldest of them as the
	// queue empties. It is at least BatchMax.
	QueueMax int
	// FailedWarnBytes is the size of failed/ above which a warning is
	// logged at most once an hour; 0 turns the warning off. Nothing in
	// failed/ is ever deleted.
	FailedWarnBytes int64
	// Logger receives warnings for bad files and errors; nil discards.
	Logger *slog.Logger
	// Claim, if set, reports whether the daemon holds the spool directory
	// now at the path. Each rescan calls it before it lists new/, and so
	// does each batch unless new/ or one of OwnFiles is missing. The
	// directory may have been removed, replaced or moved since, taking the
	// daemon's lock file along, and another daemon may have locked the one
	// now at the path. While Claim reports false, the pickup watches and
	// queues nothing, so the two daemons ingest the same files only in a
	// batch under way when the other daemon takes the lock.
	Claim func() bool
	// OwnFiles names files that the daemon keeps in the spool directory,
	// such as its lock file. One of them missing while the directory is
	// still in place means the directory may be being removed, so rescans
	// wait as when new/ is missing.
	OwnFiles []string
}

// Store is the durable queue that takes the messages. The spool
// implements it.
type Store interface {
	// AppendForget removes the identities in forget, then commits the
	// files (or parts of one, see [spool.FileBatch]) in order, each with
	// its identity, in one transaction, and returns how many leading
	// files it took. A file whose identity is stored in full was
	// committed by an earlier run that stopped before the unlink: it is
	// taken without storing its messages again. It returns
	// [spool.ErrFull] when the spool limits leave no room for the rest,
	// and [spool.ErrTooLarge] when the next file can never fit, which the
	// pickup then moves to failed/. With either, the transaction still
	// committed; with any other error it did not.
	AppendForget(files []spool.FileBatch, forget []spool.FileID) (accepted int, err error)
	// Forget removes identity records once their files are unlinked.
	Forget(ids []spool.FileID) error
	// FileIDs returns the stored identities.
	FileIDs() ([]spool.FileID, error)
	// FileProgress reports how many messages of a file appended in parts
	// are stored, and whether all of them are.
	FileProgress(id spool.FileID) (stored int, complete bool, err error)
}

// Stats is a snapshot of the pickup's counters.
type Stats struct {
	FilesIngested    uint64
	MessagesIngested uint64
	// FilesFailed counts files and messages moved to failed/.
	FilesFailed uint64
	// Waiting is the number of files in new/ held back from ingest by a
	// full spool, disk pressure or a store error. Files beyond
	// Options.QueueMax are counted as of the last rescan.
	Waiting int
	// DiskPressure is true while ingest is paused for lack of free space.
	DiskPressure bool
	// SpoolFull is true while spool.max_bytes or spool.max_messages
	// holds files back.
	SpoolFull bool
	// StaleTmpFiles counts files left in tmp/ for over a day.
	StaleTmpFiles int
	// Parted is the long .jsonl file being stored in parts, if any.
	Parted      PartedProgress
	LastError   string
	LastErrorAt time.Time
}

// PartedProgress is how far a long .jsonl file stored in parts got.
// Path is empty when no file is being stored in parts.
type PartedProgress struct {
	Path   string
	Stored int // messages of the file in the spool
	Total  int // messages in the file
}

// Pickup ingests the spool directory. Create it with [New].
type Pickup struct {
	opts      Options
	store     Store
	log       *slog.Logger
	newDir    string
	failedDir string
	tmpDir    string

	routesMu sync.RWMutex // guards routes, which SetRoutes replaces
	routes   []route

	// freeBytes returns the free bytes at a path; tests replace it.
	freeBytes func(path string) (uint64, error)
	// now returns the current time; tests replace it.
	now func() time.Time
	// fsyncDir syncs a directory after removals; tests replace it.
	fsyncDir func(fd int) error

	mu    sync.Mutex // guards stats
	stats Stats

	failed failedCounter // the size of failed/

	// The fields below belong to the goroutine running Run.
	queue    []string             // files ready for ingest, in arrival order
	queued   map[string]bool      // members of queue
	settling map[string]settleRef // files written in place, not yet settled
	// writing holds the files that an IN_CREATE showed being created in
	// place and that no IN_CLOSE_WRITE has finished yet (see createdOpen).
	// Each of them is in settling too.
	writing   map[string]struct{}
	tentative map[string]time.Time // queued files that may be incomplete, with a deadline
	headWait  time.Time            // when a tentative file at the head is looked at again
	// overflowed is set while files wait in new/ that the queue, bounded
	// by Options.QueueMax, left out. reserve has the oldest of them in
	// order, as the last full scan listed them, and unlisted counts the
	// others as of that scan, plus those announced since. refillAt is the
	// earliest time of the rescan that queues them (see refill).
	overflowed  bool
	reserve     []candidate
	unlisted    int
	refillAt    time.Time
	refilling   bool          // set while refill runs its rescan
	retryAt     time.Time     // no ingest before this time
	backoff     time.Duration // current wait after a full spool or store error
	storeErrLog rateLimit
	// housekeepingLog limits the warnings about tmp/ and failed/.
	housekeepingLog rateLimit
	// full is set while the store rejects appends as full, so each
	// change is logged once, within the limit of fullLog. waitingRoom is
	// set by each try that did not fit, until RoomFreed, which other
	// goroutines call, sends a wakeup on room.
	full        bool
	waitingRoom atomic.Bool
	room        chan struct{}
	// fullLog limits the warning that the spool is full to one a minute,
	// because a spool near its limit can fill and drain many times a
	// minute. fullSpells counts the times it filled since that warning,
	// and fullLogged is set while a spell whose warning went out lasts.
	fullLog    rateLimit
	fullSpells int
	fullLogged bool
	// forget holds the identities of files unlinked since the last commit,
	// for the next AppendForget, and forgetBy is when to store them alone
	// if no batch comes first.
	forget   []spool.FileID
	forgetBy time.Time
	// rescanAgain is set when an event handled during a sync calls for a
	// rescan, such as an overflow. deferred has the events that came after
	// such an overflow. finishSync handles both.
	rescanAgain bool
	deferred    []watchEvent
	// lateMarkers counts the sync marker events still to come from syncs
	// that ended before theirs arrived. syncWD is the spool directory's
	// watch, which delivers them, or -1 without one.
	lateMarkers int
	syncWD      int32
	// syncDir is the spool directory that syncWD watches, so a rescan can
	// tell when the path leads to another one. viaLink is set when that
	// path goes through a symbolic link, whose change no watch reports;
	// each rescan sets it again, since a directory may be replaced by a
	// link. pathCheckAt is when the path or a lost claim is checked next.
	syncDir     fs.FileInfo
	viaLink     bool
	pathCheckAt time.Time
	// claimLost is set while Options.Claim fails, so that the claim is
	// tried again once a second rather than at the next periodic rescan.
	claimLost bool
	// dirModes has the modes of the spool directory, tmp/, new/ and
	// failed/ at start, which restoreDirs gives the directories it creates.
	dirModes map[string]fs.FileMode
	// syncLost is set from the end of the spool directory's watch until a
	// rescan watches the directory again. restoreAt is set when new/ was
	// removed, for the rescan that creates it again.
	syncLost  bool
	restoreAt time.Time
	// restoreApproved lets the next rescan run although new/ or a marker
	// is missing. removalEntries is the number of entries that the spool
	// directory's tree had at the last check while a rescan waited, or -1.
	restoreApproved bool
	removalEntries  int
	// markerMade is set once the scan marker was created, so that its
	// absence means it was removed.
	markerMade bool
	// forgetBackoff is the wait after a failed Forget, and forgetErrLog
	// limits its log lines.
	forgetBackoff time.Duration
	forgetErrLog  rateLimit
	// removing is the committed batch whose files are being unlinked in
	// the background while the next batch is read and committed.
	removing *removal
	// parted is the file at the head of the queue that is appended in
	// parts, while it waits for room in the spool.
	parted *partedFile
	// started is when New ran; see seen.
	started    time.Time
	unreadable map[string]time.Time // last log time of each unreadable file
	// unremoved contains the stored files whose removal from new/ failed
	// since the last rescan other than a refill.
	unremoved map[string]bool
	// rejectHeld has the bad files whose move to failed/ failed; see
	// holdReject.
	rejectHeld   map[string]heldReject
	watchErrLog  rateLimit
	spaceErrLog  rateLimit
	cutoffErrLog rateLimit
}

// New checks opts, creates tmp/, new/ and failed/ when missing and
// returns a Pickup that ingests into store once Run is called.
func New(opts Options, store Store) (*Pickup, error) {
	if opts.Dir == "" {
		return nil, errors.New("spool directory is empty: set spool.dir")
	}
	if opts.DefaultQoS > 2 {
		return nil, fmt.Errorf("default qos %d is invalid: use 0, 1 or 2", opts.DefaultQoS)
	}
	if opts.TopicPrefix != "" {
		if err := message.ValidateTopic(opts.TopicPrefix+"x", true); err != nil {
			return nil, fmt.Errorf("topic prefix %q: %w", opts.TopicPrefix, err)
		}
	}
	if opts.DefaultTopic != "" {
		if err := message.ValidateTopic(opts.TopicPrefix+opts.DefaultTopic, true); err != nil {
			return nil, fmt.Errorf("default topic %q: %w", opts.DefaultTopic, err)
		}
	}
	routes, err := compileRoutes(opts.Routes)
	if err != nil {
		return nil, err
	}
	applyDefaults(&opts)

	p := &Pickup{
		opts:       opts,
		store:      store,
		log:        opts.Logger,
		newDir:     filepath.Join(opts.Dir, "new"),
		failedDir:  filepath.Join(opts.Dir, "failed"),
		tmpDir:     filepath.Join(opts.Dir, "tmp"),
		failed:     failedCounter{dir: filepath.Join(opts.Dir, "failed")},
		routes:     routes,
		freeBytes:  statfsFree,
		now:        time.Now,
		fsyncDir:   unix.Fsync,
		queued:     make(map[string]bool),
		settling:   make(map[string]settleRef),
		writing:    make(map[string]struct{}),
		tentative:  make(map[string]time.Time),
		unreadable: make(map[string]time.Time),
		unremoved:  make(map[string]bool),
		rejectHeld: make(map[string]heldReject),
		room:       make(chan struct{}, 1),
		syncWD:     -1,
		viaLink:    throughSymlink(opts.Dir),
	}
	for _, dir := range []string{p.tmpDir, p.newDir} {
		if err := format.MkdirAllSync(dir); err != nil {
			return nil, fmt.Errorf("%w: make %s writable by the daemon's user", err, opts.Dir)
		}
	}
	// Only bad input goes to failed/, and each move creates it again, so
	// a failed/ that cannot be created does not stop the daemon: bad files
	// stay in new/ and refused messages in the spool until it works.
	if err := format.MkdirAllSync(p.failedDir); err != nil {
		p.log.Error("failed/ cannot be created; bad files stay in new/ and messages the broker rejects "+
			"stay queued until it can: make failed/ a writable directory", "path", p.failedDir, "err", err)
	}
	p.dirModes = dirModes(opts.Dir, p.tmpDir, p.newDir, p.failedDir)
	p.removalEntries = -1
	return p, nil
}

// dirModes returns the permission, setgid and sticky bits of each of
// dirs that exists, keyed by path.
func dirModes(dirs ...string) map[string]fs.FileMode {
	modes := make(map[string]fs.FileMode)
	for _, dir := range dirs {
		if info, err := os.Stat(dir); err == nil {
			modes[dir] = info.Mode() & (fs.ModePerm | fs.ModeSetgid | fs.ModeSticky)
		}
	}
	return modes
}

func applyDefaults(o *Options) {
	if o.Settle <= 0 {
		o.Settle = DefaultSettle
	}
	if o.RescanInterval <= 0 {
		o.RescanInterval = DefaultRescanInterval
	}
	if o.MaxMessageBytes <= 0 {
		o.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if o.BatchMax <= 0 {
		o.BatchMax = DefaultBatchMax
	}
	if o.QueueMax <= 0 {
		o.QueueMax = DefaultQueueMax
	}
	o.QueueMax = max(o.QueueMax, o.BatchMax)
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
}

// Stats returns a snapshot of the counters. It is safe from any goroutine.
func (p *Pickup) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stats
}

// setError records err as the last error.
func (p *Pickup) setError(err error) {
	p.mu.Lock()
	p.stats.LastError = err.Error()
	p.stats.LastErrorAt = p.now()
	p.mu.Unlock()
}

func (p *Pickup) updateStats(fn func(s *Stats)) {
	p.mu.Lock()
	fn(&p.stats)
	p.mu.Unlock()
}

// rateLimit lets one event through per interval.
type rateLimit struct{ last time.Time }

func (r *rateLimit) allow(now time.Time, every time.Duration) bool {
	if !r.last.IsZero() && now.Sub(r.last) < every {
		return false
	}
	r.last = now
	return true
}
