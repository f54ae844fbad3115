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
	// PollInterval is how often new/ is counted again, so that files a
	// consumer removed make room; default 1s.
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
}

// Stats is a snapshot of an inbox for status output and metrics.
type Stats struct {
	Received     uint64 // messages written into new/
	Duplicates   uint64 // of those, redeliveries (Dup set)
	Replaced     uint64 // QoS 2 redeliveries that replaced their own file
	Dropped      uint64 // QoS 0 messages dropped: the inbox or its queue was full
	Failed       uint64 // messages a .msg file cannot hold, moved to failed/
	BacklogFiles int    // files in new/ at the last count
	BacklogBytes int64
	Full         bool // at MaxFiles or MaxBytes: acknowledgements are held
}

// Inbox stores the messages of one subscription. Create it with [Open],
// run its worker with [Inbox.Run] and feed it with [Inbox.Enqueue].
type Inbox struct {
	opts Options
	log  *slog.Logger
	full atomic.Bool

	queueMu  sync.Mutex    // guards queue and overflow
	queue    []Delivery    // waiting for the worker, in arrival order
	overflow bool          // the queue passed QueueSize; logged once
	queued   chan struct{} // capacity 1: the queue may have grown

	mu    sync.Mutex // guards stats
	stats Stats

	// Owned by the goroutine that runs Run.
	now     func() time.Time // the clock for file names; tests replace it
	names   namer
	files   int
	bytes   int64
	failing bool // the last write failed; logged once until one succeeds
}

// Open creates the inbox's directories, removes what a crash left in
// tmp/ and counts the backlog in new/.
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
	for _, sub := range []string{"tmp", "new"} {
		if err := format.MkdirAllSync(filepath.Join(opts.Dir, sub)); err != nil {
			return nil, fmt.Errorf("create inbox directory %s: %w: check the subscription's dir and its permissions", filepath.Join(opts.Dir, sub), err)
		}
	}
	in := &Inbox{
		opts:   opts,
		log:    opts.Logger.With("inbox", opts.Dir, "filter", opts.Filter),
		queued: make(chan struct{}, 1),
		now:    time.Now,
	}
	in.cleanTmp()
	if err := in.count(); err != nil {
		return nil, err
	}
	return in, nil
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
// until the next connection. The broker's Receive Maximum bounds them:
// it counts every unacknowledged QoS 1 and 2 message of a connection, and
// only QoS 1 messages whose connection ended can add to that.
func (in *Inbox) Enqueue(d Delivery) {
	if d.Message.QoS == 0 && in.full.Load() {
		in.drop(d, "inbox full")
		return
	}

	in.queueMu.Lock()
	n := len(in.queue)
	if d.Message.QoS == 0 && n >= in.opts.QueueSize {
		in.queueMu.Unlock()
		in.drop(d, "inbox queue full")
		return
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

// Run writes queued messages until ctx ends. Messages still queued then
// are not acknowledged, so the broker sends them again.
func (in *Inbox) Run(ctx context.Context) {
	tick := time.NewTicker(in.opts.PollInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
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
// until there is room or ctx ends.
func (in *Inbox) deliver(ctx context.Context, d Delivery) {
	if in.atLimit() {
		in.recount() // a consumer may have taken files since the last count
	}
	if in.atLimit() {
		if d.Message.QoS == 0 {
			in.drop(d, "inbox full")
			return
		}
		if !in.waitForRoom(ctx) {
			return
		}
	}
	for {
		err := in.write(d)
		if err == nil {
			break
		}
		if !in.failing {
			in.log.Error("inbox write failed, holding the acknowledgement and retrying", "topic", d.Message.Topic, "err", err)
			in.failing = true
		}
		if !sleep(ctx, in.opts.PollInterval) {
			return
		}
	}
	if in.failing {
		in.log.Info("inbox write succeeded again")
		in.failing = false
	}
	if d.Release != nil {
		d.Release()
	}
}

// waitForRoom counts new/ every poll interval until the backlog is below
// the limits. It reports false when ctx ended first.
func (in *Inbox) waitForRoom(ctx context.Context) bool {
	in.log.Warn("inbox full, holding acknowledgements until a consumer removes files",
		"files", in.files, "bytes", in.bytes, "max_files", in.opts.MaxFiles, "max_bytes", in.opts.MaxBytes)
	for in.atLimit() {
		if !sleep(ctx, in.opts.PollInterval) {
			return false
		}
		in.recount()
	}
	in.log.Info("inbox has room again, acknowledging", "files", in.files, "bytes", in.bytes)
	return true
}

// atLimit reports whether the backlog reached MaxFiles or MaxBytes.
func (in *Inbox) atLimit() bool {
	return (in.opts.MaxFiles > 0 && in.files >= in.opts.MaxFiles) ||
		(in.opts.MaxBytes > 0 && in.bytes >= in.opts.MaxBytes)
}

// recount counts new/ again and publishes the backlog.
func (in *Inbox) recount() {
	if err := in.count(); err != nil {
		in.log.Warn("count inbox backlog", "err", err)
	}
}

// count sets the backlog from the regular files in new/. Names starting
// with a dot are not messages.
func (in *Inbox) count() error {
	entries, err := os.ReadDir(filepath.Join(in.opts.Dir, "new"))
	if err != nil {
		return fmt.Errorf("read inbox %s: %w", in.opts.Dir, err)
	}
	files, size := 0, int64(0)
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
	}
	in.files, in.bytes = files, size
	in.publishBacklog()
	return nil
}

// publishBacklog copies the backlog into the stats and the full flag.
func (in *Inbox) publishBacklog() {
	full := in.atLimit()
	in.full.Store(full)
	in.mu.Lock()
	in.stats.BacklogFiles, in.stats.BacklogBytes, in.stats.Full = in.files, in.bytes, full
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

// sleep waits d and reports false if ctx ended first.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
