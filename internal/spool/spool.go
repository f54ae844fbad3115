package spool

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/mqspool/mqspool/internal/format"
)

// Bucket names. Message keys are big-endian sequence numbers, so bbolt's
// key order is the queue order.
var (
	bucketMeta     = []byte("meta")
	bucketMessages = []byte("messages")
	bucketFlows    = []byte("flows")
	bucketIncoming = []byte("incoming")
	bucketFiles    = []byte("files")
)

// Keys in the meta bucket.
var (
	keyClean        = []byte("clean")
	keyLastSeq      = []byte("last_seq")
	keyMessages     = []byte("messages")
	keyBytes        = []byte("bytes")
	keyDropped      = []byte("dropped")
	keyExpired      = []byte("expired")
	keySession      = []byte("session")
	keyLastPacketID = []byte("last_packet_id")
	keyNextOrder    = []byte("next_order")
	keyClientID     = []byte("client_id")
)

// messagesFillPercent packs leaf pages full, because messages are only
// ever appended at the end of the key range.
const messagesFillPercent = 1.0

// Spool is the durable queue. Its methods are safe for concurrent use.
type Spool struct {
	opts Options
	log  *slog.Logger
	db   *bolt.DB

	// renamedAside is the path a damaged database was moved to by Open.
	renamedAside string

	// writeMu serialises write transactions, so that the in-memory
	// totals are updated in commit order.
	writeMu sync.Mutex

	// pendingMu guards pending and groupCommits.
	pendingMu    sync.Mutex
	pending      []*pendingWrite
	groupCommits uint64 // commits that carried more than one write

	// mu guards totals, commitTimes, closed, corrupt, cursors and
	// copiedToFailed.
	mu          sync.Mutex
	totals      totals
	commitTimes commitTimes
	closed      bool
	corrupt     bool
	cursors     map[*Cursor]struct{}
	// copiedToFailed has the messages that Options.Quarantine took in a
	// Commit that then failed, so that a retry of that Commit does not
	// hand them over again.
	copiedToFailed map[uint64]bool

	drops dropLog

	// damaged is closed when corrupt is first set.
	damaged chan struct{}

	// arena is the record buffer kept between journal commits.
	arena atomic.Pointer[recordArena]

	// wall follows steps of the wall clock, for the age of a message.
	wall *wallSteps
}

// totals mirrors the counters in the meta bucket.
type totals struct {
	lastSeq  uint64
	messages int64
	bytes    int64
	dropped  uint64
	expired  uint64
}

// Open opens or creates the spool database at opts.Path. A database that
// cannot be opened or fails its check is renamed aside and replaced by an
// empty one, and [Spool.RenamedAside] then returns where it went. A database
// held by another process yields [ErrLocked] after opts.LockTimeout.
func Open(opts Options) (*Spool, error) {
	if err := opts.applyDefaults(); err != nil {
		return nil, err
	}
	s := &Spool{
		opts: opts, log: opts.Logger, cursors: map[*Cursor]struct{}{}, damaged: make(chan struct{}),
		copiedToFailed: map[uint64]bool{},
		wall:           newWallSteps(),
		drops:          dropLog{every: dropLogEvery},
	}

	// Create the database's directory, as systemd's StateDirectory would,
	// so a run by hand needs no mkdir first.
	var syncDirs []string
	if !opts.ReadOnly {
		dir := filepath.Dir(opts.Path)
		if _, err := os.Stat(dir); err != nil {
			syncDirs = append(syncDirs, filepath.Dir(dir))
		}
		if err := os.MkdirAll(dir, 0o750); err != nil {
			if linkErr := format.DanglingLink(dir); errors.Is(linkErr, format.ErrDanglingLink) {
				err = linkErr
			}
			return nil, fmt.Errorf("create the directory of spool.db %s: %w", opts.Path, err)
		}
		syncDirs = append(syncDirs, dir)
	}

	db, err := s.openMarked()
	if err != nil && (opts.ReadOnly || !isDamage(err)) {
		return nil, err
	}
	if err != nil {
		aside, renameErr := renameAside(opts.Path, opts.LockTimeout, errors.Is(err, errLockLeaked))
		if errors.Is(renameErr, ErrLocked) {
			return nil, renameErr
		}
		if renameErr != nil {
			return nil, fmt.Errorf("spool database %s is damaged (%v) and could not be renamed aside: %w", opts.Path, err, renameErr)
		}
		s.renamedAside = aside
		s.log.Error("spool database is damaged; renamed it aside and started an empty one",
			"path", opts.Path, "renamed_to", aside, "error", err,
			"hint", "recover its messages with: mqspool spool salvage "+aside)
		if err := clearDamageMark(opts.Path); err != nil {
			s.log.Warn("removing the damage mark failed; it names the file renamed aside, so the next "+
				"start warns about it again", "path", opts.Path+damageMarkSuffix, "err", err,
				"hint", "delete the file")
		}
		if db, err = s.openChecked(); err != nil {
			return nil, fmt.Errorf("create fresh spool database %s: %w", opts.Path, err)
		}
	}
	s.db = db

	// bbolt syncs the file but not its directory entry. A database created
	// just now would otherwise be lost in a power cut together with every
	// message committed to it, after the pickup removed their files.
	for _, dir := range syncDirs {
		if err := syncDir(dir); err != nil {
			db.Close()
			return nil, err
		}
	}
	if err := s.loadTotals(); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// initialMmapSize returns the address space bbolt maps at open. Each time
// the file outgrows the mapping, bbolt copies every node of the running
// write transaction to the heap and maps the file again, which took a
// quarter of the CPU of a 100 000-line .jsonl ingest. A mapping larger
// than the file costs address space only, of which 32-bit systems have
// less.
func initialMmapSize() int {
	if strconv.IntSize == 32 {
		return 128 << 20
	}
	return 1 << 30
}

// allocSize is the step in which the file grows once it is smaller than
// the mapping. bbolt's default of 16 MiB would make every new database
// that large, and file systems without sparse files would allocate it.
const allocSize = 4 << 20

// openMarked opens the database like openChecked. When a damage mark
// records a fault while the database was in use, it returns ErrCorrupt
// without opening it, so Open renames it aside.
func (s *Spool) openMarked() (*bolt.DB, error) {
	if s.opts.ReadOnly {
		return s.openChecked()
	}
	if info, err := os.Stat(s.opts.Path); err == nil && info.Mode().IsRegular() && info.Size() == 0 {
		s.log.Warn("spool database is an empty file, so it is set up as a new database with no messages",
			"path", s.opts.Path, "hint", "if it held messages, look for a copy cut short or a restore "+
				"that did not finish, and salvage that copy")
	}
	cause, stale := damageMark(s.opts.Path)
	if cause == "" {
		return s.openChecked()
	}
	_, err := os.Stat(s.opts.Path)
	if errors.Is(err, fs.ErrNotExist) || (err == nil && stale) {
		// Moved away or replaced by hand: the mark has done its work.
		if stale && err == nil {
			s.log.Warn("damage mark names a database that was replaced since, so the file now at the path is "+
				"opened and checked as usual", "path", s.opts.Path, "mark", cause)
		}
		if err := clearDamageMark(s.opts.Path); err != nil {
			return nil, fmt.Errorf("remove the damage mark %s: %w", s.opts.Path+damageMarkSuffix, err)
		}
		return s.openChecked()
	}
	return nil, fmt.Errorf("%w: found damaged while in use: %s", ErrCorrupt, cause)
}

// errLockLeaked marks damage that made bbolt panic inside its Open. Open
// does not close the file it has locked then, so this process holds the
// file's lock until the garbage collector closes that file.
var errLockLeaked = errors.New("the file stays locked by this process")

// openChecked opens the database, checks the whole file when needed,
// creates missing buckets and marks the database as in use. bbolt panics
// on some damaged pages, so a panic here is reported as damage.
func (s *Spool) openChecked() (db *bolt.DB, err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	inOpen := false
	defer func() {
		if r := recover(); r != nil {
			if db != nil {
				db.Close()
			}
			db, err = nil, fmt.Errorf("%w: bbolt panicked while opening %s: %v", ErrCorrupt, s.opts.Path, r)
			if inOpen {
				err = fmt.Errorf("%w (%w)", err, errLockLeaked)
			}
		}
	}()

	if err := checkBeforeOpen(s.opts.Path); err != nil {
		return nil, err
	}
	if info, err := os.Stat(s.opts.Path); err == nil && info.Size() == 0 && s.opts.ReadOnly {
		// bbolt would try to write the first pages through a read-only
		// descriptor and fail with "bad file descriptor".
		return nil, fmt.Errorf("spool database %s is empty (0 bytes), so no message is queued: "+
			"the daemon sets it up at its next start", s.opts.Path)
	}
	checked := false
	if (needsPageWalk(s.opts.Path) || s.opts.FullCheck) && checkChildReady.Load() {
		if err := checkInChild(s.opts.Path); err != nil {
			return nil, err
		}
		checked = true
	}
	inOpen = true
	db, err = openCurrent(s.opts.Path, &bolt.Options{
		Timeout:  s.opts.LockTimeout,
		ReadOnly: s.opts.ReadOnly,
		// A drain frees a page for every few messages it deletes. Writing
		// the list of free pages on every commit made each commit slower
		// as the drain went on: 8 000 down to 1 700 messages per second
		// over 300 000 messages of 1 KiB, measured on one machine. Close
		// stores the list, so only a start after a crash rebuilds it.
		NoFreelistSync:  true,
		FreelistType:    bolt.FreelistMapType,
		InitialMmapSize: initialMmapSize(),
	})
	inOpen = false
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("%w: %s: stop the running daemon or use another spool.db", ErrLocked, s.opts.Path)
	}
	if err != nil {
		return nil, openError(s.opts.Path, err)
	}

	db.AllocSize = allocSize
	if err := s.prepare(db, checked); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// openError describes a failure of bbolt to open path, with the fix for
// the usual causes. The error from the operating system names the path
// already.
func openError(path string, err error) error {
	var pathErr *fs.PathError
	named := errors.As(err, &pathErr) && pathErr.Path == path
	switch {
	case errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.EROFS):
		err = fmt.Errorf("%w: let the daemon's user read and write the file and its directory, "+
			"or set spool.db to a writable path", err)
	}
	if named {
		return fmt.Errorf("open spool database: %w", err)
	}
	return fmt.Errorf("open spool database %s: %w", path, err)
}

// openCurrent opens the database at path with bbolt and makes sure that
// the file it locked is still the one at path. Another process may put a
// new file there while this one waits for the lock: compact does, and so
// does the rename aside of a damaged file. Without the check, this process
// would go on with a file that no longer has a name.
func openCurrent(path string, opts *bolt.Options) (*bolt.DB, error) {
	const attempts = 3
	for range attempts {
		before, statErr := os.Stat(path)
		db, err := bolt.Open(path, 0o600, opts)
		if err != nil {
			return nil, err
		}
		if statErr != nil {
			return db, nil // bbolt created the file, or stat cannot tell
		}
		after, err := os.Stat(path)
		if err == nil && os.SameFile(before, after) {
			return db, nil
		}
		db.Close()
		if err != nil {
			return nil, fmt.Errorf("stat %s after opening it: %w", path, err)
		}
	}
	return nil, fmt.Errorf("%s was replaced %d times while waiting for its lock: stop the other process that writes it", path, attempts)
}

// prepare checks the database unless it was closed cleanly and is large,
// or a child process has just checked it, then creates missing buckets and
// clears the clean marker.
func (s *Spool) prepare(db *bolt.DB, checked bool) error {
	clean, err := wasClosedCleanly(db)
	if err != nil {
		return err
	}
	if !checked && (!clean || s.opts.FullCheck || fileSize(s.opts.Path) <= alwaysCheckBelow) {
		if err := checkDB(db); err != nil {
			return fmt.Errorf("%w: %s: %w", ErrCorrupt, s.opts.Path, err)
		}
	}
	if s.opts.ReadOnly {
		return nil
	}
	return db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketMeta, bucketMessages, bucketFlows, bucketIncoming, bucketFiles} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("create bucket %s: %w", name, err)
			}
		}
		return tx.Bucket(bucketMeta).Put(keyClean, []byte{0})
	})
}

func wasClosedCleanly(db *bolt.DB) (bool, error) {
	clean := false
	err := db.View(func(tx *bolt.Tx) error {
		if meta := tx.Bucket(bucketMeta); meta != nil {
			v := meta.Get(keyClean)
			clean = len(v) == 1 && v[0] == 1
		}
		return nil
	})
	return clean, err
}

// loadTotals reads the counters from the meta bucket; it never scans the
// messages.
func (s *Spool) loadTotals() error {
	return s.view("load totals", func(tx *bolt.Tx) error {
		var t totals
		if meta := tx.Bucket(bucketMeta); meta != nil {
			t.lastSeq = getU64(meta, keyLastSeq)
			t.messages = int64(getU64(meta, keyMessages))
			t.bytes = int64(getU64(meta, keyBytes))
			t.dropped = getU64(meta, keyDropped)
			t.expired = getU64(meta, keyExpired)
		}
		s.mu.Lock()
		s.totals = t
		s.mu.Unlock()
		return nil
	})
}

// Damaged returns a channel that is closed once an operation found the
// file damaged. The spool then stays open but the file cannot be trusted:
// the next Open checks it and renames it aside.
func (s *Spool) Damaged() <-chan struct{} { return s.damaged }

// RenamedAside returns the path that Open moved a damaged database to, or
// "" when the database opened normally.
func (s *Spool) RenamedAside() string { return s.renamedAside }

// Path returns the database file.
func (s *Spool) Path() string { return s.opts.Path }

// Close marks the database as closed cleanly and closes it. A spool that
// saw a damaged page is left unmarked, so the next Open checks it.
func (s *Spool) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	s.closed = true
	corrupt := s.corrupt
	s.mu.Unlock()
	s.closeDrops()

	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	var markErr error
	if !corrupt && !s.opts.ReadOnly {
		// This last commit stores the list of free pages, so the next
		// open reads it instead of walking every page.
		s.db.NoFreelistSync = false
		markErr = s.update("mark clean", func(tx *bolt.Tx) error {
			return tx.Bucket(bucketMeta).Put(keyClean, []byte{1})
		})
	}
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close spool database %s: %w", s.opts.Path, err)
	}
	return markErr
}

// checkOpen returns ErrClosed after Close.
func (s *Spool) checkOpen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	return nil
}

// checkWritable returns ErrClosed or ErrReadOnly when no write may start.
func (s *Spool) checkWritable() error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	if s.opts.ReadOnly {
		return ErrReadOnly
	}
	return nil
}

// Stats is a snapshot of the queue's counters.
type Stats struct {
	Messages int64
	Bytes    int64
	// Oldest is when the first queued message was accepted; zero when
	// the queue is empty.
	Oldest   time.Time
	Flows    int
	Incoming int
	// Dropped and Expired count messages removed by drop-oldest and by
	// Message Expiry since the database was created.
	Dropped uint64
	Expired uint64
	// Commits times the commits since Open.
	Commits CommitTimes
}

// Stats returns the counters kept in memory, and reads the first
// message's enqueued time and counts the flow records in one read
// transaction. Counting here rather than in every commit keeps the walk
// over up to 65 535 flow records out of the drain.
func (s *Spool) Stats() Stats {
	s.mu.Lock()
	t := s.totals
	commits := s.commitTimes.snapshot()
	s.mu.Unlock()
	st := Stats{
		Messages: t.messages, Bytes: t.bytes,
		Dropped: t.dropped, Expired: t.expired,
		Commits: commits,
	}
	if s.checkOpen() != nil {
		return st
	}
	_ = s.view("read oldest", func(tx *bolt.Tx) error {
		if _, v := tx.Bucket(bucketMessages).Cursor().First(); v != nil {
			st.Oldest, _ = recordEnqueued(v)
		}
		st.Flows = bucketLen(tx.Bucket(bucketFlows))
		st.Incoming = bucketLen(tx.Bucket(bucketIncoming))
		return nil
	})
	return st
}

// ClientID returns the stored MQTT client identifier, or calls derive and
// stores its result on first use, so the id stays stable across restarts.
func (s *Spool) ClientID(derive func() (string, error)) (string, error) {
	var id string
	err := s.view("read client id", func(tx *bolt.Tx) error {
		id = string(tx.Bucket(bucketMeta).Get(keyClientID))
		return nil
	})
	if err != nil || id != "" {
		return id, err
	}

	id, err = derive()
	if err != nil {
		return "", fmt.Errorf("derive client id: %w", err)
	}
	if id == "" {
		return "", errors.New("derived client id is empty: set broker.client_id")
	}
	err = s.write("store client id", func(tx *bolt.Tx, _ *totals) error {
		return tx.Bucket(bucketMeta).Put(keyClientID, []byte(id))
	})
	return id, err
}
