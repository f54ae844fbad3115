package inbox

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

	"github.com/mqspool/mqspool/internal/format"
	"github.com/mqspool/mqspool/internal/message"
)

// Options configure an [Inbox]. Zero values take the defaults noted.
type Options struct {
	// Dir is the inbox directory; tmp/ and new/ are created in it.
	Dir string
	// Filter is the subscription's topic filter, for logs.
	Filter string
	// MaxFiles and MaxBytes bound the backlog in new/; 0 is unlimited.
	// At the bound the inbox holds acknowledgements and drops QoS 0.
	MaxFiles int
	MaxBytes int64
	// QueueSize bounds the QoS 0 messages waiting for the worker;
	// default 256. QoS 1 and 2 messages are always queued, see Enqueue.
	QueueSize int
	// PollInterval is how often new/ is checked for changes, so that
	// files a consumer removed make room; default 1s.
	PollInterval time.Duration
	Logger       *slog.Logger
}

// Delivery is one received PUBLISH for the inbox to store.
type Delivery struct {
	Message  message.Message
	PacketID uint16
	Dup      bool
	// SubscriptionIdentifier is the one the PUBLISH carried; 0 when none.
	SubscriptionIdentifier int
	ReceivedAt             time.Time
	// Release lets the broker's acknowledgement go; it is called once the
	// file is durable in new/. Nil for nothing to release.
	Release func()
	// Decline gives the message up without an acknowledgement, so the
	// broker sends it again on a later connection. Nil for nothing to
	// decline.
	Decline func()
	// Redelivered is the event loop's Incoming.Redelivered; nil means
	// never. A QoS 1 message the broker has sent again on a later
	// connection is not stored, since that copy is stored instead.
	Redelivered func() (redelivered, known bool)
	// DeclinedElsewhere reports whether another inbox that the same
	// PUBLISH goes to has declined it. The broker then sends the message
	// again, so a QoS 1 or 2 copy not yet written is declined here too
	// instead of stored twice. Nil means never.
	DeclinedElsewhere func() bool
}

// Stats is a snapshot of an inbox for status output and metrics.
type Stats struct {
	Received     uint64 // messages written into new/
	Duplicates   uint64 // of those, with the DUP flag set, which does not mean stored twice
	Replaced     uint64 // QoS 2 redeliveries that replaced their own file
	Dropped      uint64 // QoS 0 messages dropped: the inbox or its queue was full
	Failed       uint64 // messages a .msg file cannot hold, moved to failed/
	Skipped      uint64 // QoS 1 messages not stored because the broker sent them again
	BacklogFiles int    // files in new/ at the last count
	BacklogBytes int64
	// BacklogStale means the last count of new/ failed, so the backlog
	// is that of an earlier count plus the files written since.
	BacklogStale bool
	Full         bool // at MaxFiles or MaxBytes: acknowledgements are held
	// WriteError is the error that makes the inbox unusable, and empty
	// while it works. Acknowledgements are held meanwhile.
	WriteError string
}

// Inbox stores the messages of one subscription. Create it with [Open],
// run its worker with [Inbox.Run] and feed it with [Inbox.Enqueue].
type Inbox struct {
	opts Options
	log  *slog.Logger
	full atomic.Bool

	queueMu  sync.Mutex    // guards queue, queued0 and overflow
	queue    []Delivery    // waiting for the worker, in arrival order
	queued0  int           // QoS 0 messages in queue
	overflow bool          // the queue passed QueueSize; logged once
	queued   chan struct{} // capacity 1: the queue may have grown

	stopWaits     chan struct{} // closed by StopWaiting
	stopWaitsOnce sync.Once

	mu    sync.Mutex // guards stats
	stats Stats

	// Owned by the goroutine that runs Run.
	now         func() time.Time       // the clock for file names and fullLogged; tests replace it
	syncDir     func(dir string) error // format.SyncDir; tests replace it
	names       namer
	files       int
	bytes       int64
	errByWrite  bool   // stats.WriteError came from a write, not a count
	errKind     string // innermost(err) of the error last logged
	countFailed bool   // the last count of new/ failed
	ready       bool   // tmp/ was cleaned and new/ counted at least once
	// countedDir is new/ as the last full count found it, or nil when the
	// next recount must read new/ in full; see count.
	countedDir os.FileInfo
	countedAt  time.Time // when the last full count started
	fullCounts int       // full counts of new/ since Open, for tests
	// flows maps the flow key of each QoS 2 file that an earlier process
	// left in new/ to its name, so a redelivery after a crash finds its
	// file without reading new/. Files this process writes are never in
	// it, because the loop acknowledges a redelivery of its own flows
	// without an event.
	flows map[string]string
	// declined counts the messages given up after StopWaiting.
	declined int
	// declinedTopics is the set of topics of the declined messages. A
	// later message on such a topic is declined too, because its file
	// would come before the declined one, which the broker sends again
	// only after the restart.
	declinedTopics map[string]struct{}
	// lock is the open inbox directory, locked from the first count on.
	lock *os.File
	// fullLogged is when a full inbox was last logged at warning level.
	// Within fullLogEvery of it, the full and room again lines go to
	// debug, so a consumer that keeps the backlog at the limit does not
	// log a pair every second. A hold that outlasts fullLogEvery is
	// logged as a warning then.
	fullLogged time.Time
}

// fullLogEvery is the least time between two warnings of a full inbox.
const fullLogEvery = time.Minute

// Open creates the inbox's directories, locks the inbox directory, removes
// what a crash left in tmp/ and counts the backlog in new/. A directory
// that cannot be created is not an error: the inbox logs it, shows it in
// its stats and tries again before each write, so that one bad inbox does
// not stop the rest of the daemon. Open fails only with [ErrInUse], when
// another process holds the directory's lock.
func Open(opts Options) (*Inbox, error) {
	if opts.QueueSize <= 0 {
		opts.QueueSize = 256
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	in := &Inbox{
		opts:      opts,
		log:       opts.Logger.With("inbox", opts.Dir, "filter", opts.Filter),
		queued:    make(chan struct{}, 1),
		stopWaits: make(chan struct{}),
		now:       time.Now,
		syncDir:   format.SyncDir,
	}
	if in.makeDirs() == nil {
		if err := in.lockDir(); errors.Is(err, ErrInUse) {
			return nil, err
		}
	}
	in.recount()
	return in, nil
}

// makeDirs creates tmp/ and new/ when they are missing, for example after
// a consumer removed the inbox, and locks the inbox directory again when
// it is a new one, also when another program created it.
func (in *Inbox) makeDirs() error {
	for _, sub := range []string{"tmp", "new"} {
		dir := filepath.Join(in.opts.Dir, sub)
		if _, err := os.Stat(dir); err == nil {
			continue
		}
		if err := format.MkdirAllSync(dir); err != nil {
			return fmt.Errorf("create inbox directory %s: %w: check the subscription's dir, its "+
				"permissions and free space", dir, err)
		}
		if in.ready {
			// Files a consumer moved away with the directory are not counted.
			in.log.Warn("inbox directory was missing and is created again", "dir", dir)
		}
	}
	return in.relockDir()
}

// failed records err as the reason the inbox cannot be used, logging it
// when it is the first or a new kind of error: each retry names another
// temporary file. byWrite is true for a failed write and false for a
// failed count of new/.
func (in *Inbox) failed(err error, byWrite bool) {
	in.mu.Lock()
	in.stats.WriteError = err.Error()
	in.mu.Unlock()
	in.errByWrite = byWrite
	if kind := innermost(err); kind != in.errKind {
		in.errKind = kind
		in.log.Error("inbox unusable, holding acknowledgements and retrying", "err", err)
	}
}

// innermost returns the text of the error at the end of err's chain,
// such as "read-only file system".
func innermost(err error) string {
	for next := errors.Unwrap(err); next != nil; next = errors.Unwrap(err) {
		err = next
	}
	return err.Error()
}

// recovered clears the error after a write, or after a count of new/
// when a count had failed.
func (in *Inbox) recovered(byWrite bool) {
	if !byWrite && in.errByWrite {
		return // a good count does not show that writes work
	}
	in.mu.Lock()
	was := in.stats.WriteError
	in.stats.WriteError = ""
	in.mu.Unlock()
	in.errKind = ""
	if was != "" {
		in.log.Info("inbox usable again")
	}
}

// Dir returns the inbox directory.
func (in *Inbox) Dir() string { return in.opts.Dir }

// Stats returns a snapshot of the counters.
func (in *Inbox) Stats() Stats {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.stats
}

// Enqueue hands a message to the worker and never waits. A QoS 0
// message is dropped and counted when the inbox is full or QueueSize
// messages wait. QoS 1 and 2 messages are queued even past QueueSize,
// because dropping them unacknowledged would stall the broker's flow
// until the next connection. The event loop bounds them: it holds a
// limited number of messages waiting for their release
// (eventloop.Options.MaxIncoming), and skipped copies are released.
func (in *Inbox) Enqueue(d Delivery) {
	if d.Message.QoS == 0 && in.full.Load() {
		in.drop(d, "inbox full")
		return
	}

	in.queueMu.Lock()
	n := len(in.queue)
	if d.Message.QoS == 0 && in.queued0 >= in.opts.QueueSize {
		in.queueMu.Unlock()
		in.drop(d, "inbox queue full")
		return
	}
	if d.Message.QoS == 0 {
		in.queued0++
	}
	in.queue = append(in.queue, d)
	logOverflow := n >= in.opts.QueueSize && !in.overflow
	if logOverflow {
		in.overflow = true
	}
	in.queueMu.Unlock()

	if logOverflow {
		in.log.Warn("inbox queue longer than its size, holding qos 1 and 2 messages in memory", "queue_size", in.opts.QueueSize)
	}
	select {
	case in.queued <- struct{}{}:
	default:
	}
}

// dequeue takes the oldest queued message.
func (in *Inbox) dequeue() (Delivery, bool) {
	in.queueMu.Lock()
	defer in.queueMu.Unlock()
	if len(in.queue) == 0 {
		in.overflow = false
		return Delivery{}, false
	}
	d := in.queue[0]
	in.queue[0] = Delivery{}
	in.queue = in.queue[1:]
	if d.Message.QoS == 0 {
		in.queued0--
	}
	return d, true
}

func (in *Inbox) drop(d Delivery, reason string) {
	in.mu.Lock()
	in.stats.Dropped++
	n := in.stats.Dropped
	in.mu.Unlock()
	if n == 1 || n%1000 == 0 {
		in.log.Error("qos 0 message dropped", "reason", reason, "topic", d.Message.Topic, "dropped_total", n)
	}
}

// StopWaiting ends the wait for room in a full inbox or for a usable
// directory, now and later. The message held then is declined, and so is
// each queued message that would have to wait, so that a drain does not
// wait for a consumer. The broker sends them again after the restart.
// Messages that can be written still are, unless they are QoS 1 or 2 and
// an earlier message on their topic was declined. It is safe to call from
// any goroutine.
func (in *Inbox) StopWaiting() {
	in.stopWaitsOnce.Do(func() { close(in.stopWaits) })
}

// Run writes queued messages until ctx ends. Messages still queued then
// are not acknowledged, so the broker sends them again.
func (in *Inbox) Run(ctx context.Context) {
	tick := time.NewTicker(in.opts.PollInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			in.logDeclined()
			return
		case <-in.queued:
			in.drain(ctx)
		case <-tick.C:
			in.recount()
		}
	}
}

// drain delivers queued messages until the queue is empty or ctx ends.
func (in *Inbox) drain(ctx context.Context) {
	for ctx.Err() == nil {
		d, ok := in.dequeue()
		if !ok {
			return
		}
		in.deliver(ctx, d)
	}
}

// deliver stores one message and then releases its acknowledgement. A
// full inbox or a failing disk holds it, and with it the broker's flow,
// until there is room, or until ctx ends or StopWaiting is called, which
// decline it. A QoS 1 message that the broker has sent again since its
// connection ended is skipped, also when that happens while it is held.
func (in *Inbox) deliver(ctx context.Context, d Delivery) {
	if in.topicDeclined(d) || declinedElsewhere(d) || !in.store(ctx, d) {
		in.decline(d)
	}
}

// topicDeclined reports whether d can be declined and an earlier message
// on its topic was. The broker never sends a QoS 0 message again, so it
// is still written, although the event loop gives it a Decline too.
func (in *Inbox) topicDeclined(d Delivery) bool {
	if d.Message.QoS == 0 || d.Decline == nil {
		return false
	}
	_, ok := in.declinedTopics[d.Message.Topic]
	return ok
}

// declinedElsewhere reports whether d can be declined and another inbox
// declined the same PUBLISH. A QoS 0 message is still written, as in
// topicDeclined.
func declinedElsewhere(d Delivery) bool {
	return d.Message.QoS > 0 && d.Decline != nil && d.DeclinedElsewhere != nil && d.DeclinedElsewhere()
}

// store writes d and releases it, or skips it when the broker sent it
// again. It returns false when it gave up waiting before either.
func (in *Inbox) store(ctx context.Context, d Delivery) bool {
	if skip, ok := in.redelivered(ctx, d); skip || !ok {
		return ok
	}
	if !in.ready || in.atLimit() {
		in.recount() // a consumer may have taken files since the last count
	}
	if in.atLimit() && !in.replacesFile(d) {
		if d.Message.QoS == 0 {
			in.drop(d, "inbox full")
			return true
		}
		if !in.waitForRoom(ctx) {
			return false
		}
		if skip, ok := in.redelivered(ctx, d); skip || !ok {
			return ok // resent while the inbox was full
		}
	}
	var moved movedFile
	for {
		if !in.ready {
			in.recount() // the first count failed: count before writing
		}
		err := in.makeDirs()
		if err == nil && in.ready {
			err = in.write(d, &moved)
		}
		if err == nil && in.ready {
			break
		}
		if err != nil {
			in.failed(err, true)
		}
		in.pruneRedelivered()
		if !in.pause(ctx) {
			return false
		}
		if skip, ok := in.redelivered(ctx, d); skip || !ok {
			return ok // resent while the inbox could not be written
		}
	}
	in.recovered(true)
	if d.Release != nil {
		d.Release()
	}
	return true
}

// replacesFile reports whether d is a QoS 2 redelivery whose file an
// earlier process left in new/. Writing it replaces that file, so it adds
// nothing to the backlog and needs no room.
func (in *Inbox) replacesFile(d Delivery) bool {
	if d.Message.QoS != 2 || !d.Dup {
		return false
	}
	return in.findFlow(FlowKey(d.PacketID, d.Message.Topic, d.Message.Payload)) != ""
}

// decline gives d up without an acknowledgement.
func (in *Inbox) decline(d Delivery) {
	if d.Decline == nil {
		return
	}
	d.Decline()
	in.declined++
	if in.declinedTopics == nil {
		in.declinedTopics = make(map[string]struct{})
	}
	in.declinedTopics[d.Message.Topic] = struct{}{}
	in.log.Debug("message declined while stopping, the broker sends it again",
		"topic", d.Message.Topic, "packet_id", d.PacketID, "qos", d.Message.QoS)
}

// logDeclined logs how many messages the worker gave up while stopping.
func (in *Inbox) logDeclined() {
	if in.declined > 0 {
		in.log.Info("messages not stored while stopping, the broker sends them again after the restart",
			"declined", in.declined)
	}
}

// redelivered reports whether d is a QoS 1 message that the broker has
// sent again on a later connection, and counts it. While its connection
// has ended and no new one is up, it waits: whether the broker kept the
// session is known only from the next connection. ok is false when
// ctx ended first.
func (in *Inbox) redelivered(ctx context.Context, d Delivery) (skip, ok bool) {
	for {
		again, known := redeliveredNow(d)
		if known && !again {
			return false, true
		}
		if known {
			in.skip(d)
			return true, true
		}
		if !in.pause(ctx) {
			return false, false
		}
	}
}

// pruneRedelivered releases and drops the queued QoS 1 messages that the
// broker has sent again on a later connection, while the worker waits on
// an earlier message. Otherwise every reconnect with a full inbox would
// add the broker's resent copies to those already queued.
func (in *Inbox) pruneRedelivered() {
	var dropped []Delivery
	in.queueMu.Lock()
	kept := in.queue[:0]
	for _, d := range in.queue {
		if again, known := redeliveredNow(d); known && again {
			dropped = append(dropped, d)
			continue
		}
		kept = append(kept, d)
	}
	clear(in.queue[len(kept):])
	in.queue = kept
	in.queueMu.Unlock()

	for _, d := range dropped {
		in.skip(d)
	}
}

// redeliveredNow is d.Redelivered for a QoS 1 message, and false, true
// for anything else.
func redeliveredNow(d Delivery) (again, known bool) {
	if d.Message.QoS != 1 || d.Redelivered == nil {
		return false, true
	}
	return d.Redelivered()
}

// skip counts and releases a QoS 1 message that the broker sent again,
// without storing it. The release sends no acknowledgement, but the loop
// stops counting the message as held.
func (in *Inbox) skip(d Delivery) {
	in.mu.Lock()
	in.stats.Skipped++
	in.mu.Unlock()
	in.log.Debug("qos 1 message not stored: the broker sent it again on a later connection",
		"topic", d.Message.Topic, "packet_id", d.PacketID)
	if d.Release != nil {
		d.Release()
	}
}

// waitForRoom checks new/ every roomPoll until the backlog is below the
// limits. It reports false when ctx ended first.
func (in *Inbox) waitForRoom(ctx context.Context) bool {
	if in.stoppedWaiting() {
		return false
	}
	level := in.fullLogLevel()
	in.logFull(ctx, level)
	for in.atLimit() {
		in.pruneRedelivered()
		if !in.pauseFor(ctx, in.roomPoll()) {
			return false
		}
		in.recount()

		// A hold logged at debug level warns once it outlasts
		// fullLogEvery, so a long hold shows above debug level.
		if level == slog.LevelDebug && in.atLimit() && in.fullLogLevel() == slog.LevelWarn {
			level = slog.LevelWarn
			in.logFull(ctx, level)
		}
	}
	if level == slog.LevelWarn {
		level = slog.LevelInfo
	}
	in.log.Log(ctx, level, "inbox has room again, acknowledging", "files", in.files, "bytes", in.bytes)
	return true
}

// fullLogLevel returns the level of the next full inbox line: warning
// when the last warning is fullLogEvery old, which it then renews, and
// debug within fullLogEvery of it.
func (in *Inbox) fullLogLevel() slog.Level {
	now := in.now()
	if now.Sub(in.fullLogged) < fullLogEvery {
		return slog.LevelDebug
	}
	in.fullLogged = now
	return slog.LevelWarn
}

func (in *Inbox) logFull(ctx context.Context, level slog.Level) {
	in.log.Log(ctx, level, "inbox full, holding acknowledgements until a consumer removes files",
		"files", in.files, "bytes", in.bytes, "max_files", in.opts.MaxFiles, "max_bytes", in.opts.MaxBytes)
}

// atLimit reports whether the backlog reached MaxFiles or MaxBytes.
func (in *Inbox) atLimit() bool {
	return (in.opts.MaxFiles > 0 && in.files >= in.opts.MaxFiles) ||
		(in.opts.MaxBytes > 0 && in.bytes >= in.opts.MaxBytes)
}

// recount creates the directories again if they went missing, counts
// new/ when it changed and publishes the backlog. The first time it
// succeeds it also locks the inbox directory and removes what a crash
// left in tmp/.
func (in *Inbox) recount() {
	err := in.makeDirs()
	if err == nil && !in.ready {
		err = in.lockDir()
		if err == nil {
			in.cleanTmp()
		}
	}
	if err == nil {
		err = in.count()
	}
	if err == nil {
		in.ready = true
	}
	if err != nil {
		in.countedDir = nil
		in.countFailed = true
		in.publishBacklog()
		in.failed(err, false)
		return
	}
	in.recovered(false)
}

// mtimeSlack is the age below which a modification time of new/ makes the
// next recount read new/ in full anyway, because a change right after
// a count can get the same timestamp as the one before it. ext4 and
// tmpfs take timestamps from the kernel's coarse clock, which advances
// once per timer tick (1 to 10 ms). ext3 with 128-byte inodes stores
// whole seconds, and FAT even seconds.
const mtimeSlack = 2 * time.Second

// maxCountAge is the longest time the backlog goes without a full count,
// in case new/ changed without its modification time changing.
const maxCountAge = time.Minute

// count sets the backlog from the regular files in new/. Names starting
// with a dot are not messages. Reading new/ costs a stat per file, so it
// is skipped while new/ is the same directory with the same modification
// time as at the last full count: adding, removing or renaming a file
// changes it. A file changed in place is measured again at the next
// full count.
func (in *Inbox) count() error {
	dir := filepath.Join(in.opts.Dir, "new")
	started := time.Now()
	info, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("read inbox %s: %w", in.opts.Dir, err)
	}
	if in.unchanged(info, started) {
		return nil
	}
	if err := in.countAll(dir); err != nil {
		return err
	}

	// Trust the timestamp only once it is older than any change that
	// could still share it.
	in.countedDir = nil
	if info.ModTime().Before(started.Add(-mtimeSlack)) {
		in.countedDir, in.countedAt = info, started
	}
	return nil
}

// unchanged reports whether new/ has the directory and modification time
// of the last full count, and that count is recent enough to keep.
func (in *Inbox) unchanged(info os.FileInfo, now time.Time) bool {
	last := in.countedDir
	return last != nil && os.SameFile(last, info) && last.ModTime().Equal(info.ModTime()) &&
		now.Sub(in.countedAt) < maxCountAge
}

// countAll reads every entry of dir, the inbox's new/, and sets the
// backlog from them.
func (in *Inbox) countAll(dir string) error {
	in.fullCounts++
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("read inbox %s: %w", in.opts.Dir, err)
	}
	files, size := 0, int64(0)
	var flows map[string]string
	if !in.ready {
		flows = make(map[string]string) // only the first count precedes our writes
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") || !e.Type().IsRegular() {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue // removed by a consumer meanwhile
		}
		files++
		size += info.Size()
		if key := flowKeyOf(e.Name()); key != "" && flows != nil {
			flows[key] = e.Name()
		}
	}
	in.files, in.bytes = files, size
	if flows != nil {
		in.flows = flows
	}
	in.countFailed = false
	in.publishBacklog()
	return nil
}

// publishBacklog copies the backlog into the stats and the full flag.
func (in *Inbox) publishBacklog() {
	full := in.atLimit()
	in.full.Store(full)
	in.mu.Lock()
	in.stats.BacklogFiles, in.stats.BacklogBytes, in.stats.Full = in.files, in.bytes, full
	in.stats.BacklogStale = in.countFailed
	in.mu.Unlock()
}

// cleanTmp removes files a crash left in tmp/. Their messages were never
// acknowledged, so the broker sends them again.
func (in *Inbox) cleanTmp() {
	dir := filepath.Join(in.opts.Dir, "tmp")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if e.Type().IsRegular() {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
				in.log.Warn("remove leftover temporary file", "file", e.Name(), "err", err)
			}
		}
	}
}

// fullPollInterval is the shortest wait between checks of a full inbox,
// so that a consumer that keeps up with a small max_files does not see
// messages trickle in at max_files a second.
const fullPollInterval = 100 * time.Millisecond

// roomPoll returns the wait between checks of a full inbox: the poll
// interval scaled by the backlog, from fullPollInterval for a few files
// up to the whole interval from 1000 files on. A check after a change
// stats every file in new/, so this bounds the cost to about 1000 stats
// per poll interval.
func (in *Inbox) roomPoll() time.Duration {
	d := in.opts.PollInterval * time.Duration(min(in.files, 1000)) / 1000
	return min(max(d, fullPollInterval), in.opts.PollInterval)
}

// pause waits one poll interval. It returns false at once when ctx ends
// or StopWaiting was called.
func (in *Inbox) pause(ctx context.Context) bool {
	return in.pauseFor(ctx, in.opts.PollInterval)
}

// pauseFor waits d, as pause does.
func (in *Inbox) pauseFor(ctx context.Context, d time.Duration) bool {
	if in.stoppedWaiting() {
		return false
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-in.stopWaits:
		return false
	case <-t.C:
		return true
	}
}

// stoppedWaiting reports whether StopWaiting was called.
func (in *Inbox) stoppedWaiting() bool {
	select {
	case <-in.stopWaits:
		return true
	default:
		return false
	}
}
