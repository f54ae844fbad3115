package test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mqspool/mqspool/internal/format"
	"github.com/mqspool/mqspool/test/harness"
	"github.com/mqspool/mqspool/test/harness/lossfs"
)

// powerProducer drops fsynced .msg files into the spool directory as the
// producer protocol requires: write into tmp/, fsync, rename into new/,
// fsync new/. A file counts as produced once its rename returned. Topics
// power/0 and power/1 carry QoS 1, power/2 and power/3 QoS 2.
type powerProducer struct {
	dir     string
	mu      sync.Mutex // guards next
	next    int
	stopped atomic.Bool
	wg      sync.WaitGroup
}

func powerQoS(seq int) int { return 1 + seq%4/2 }

// start drops files from one goroutine until stop. One goroutine keeps
// the order of the renames that of the sequence numbers, which tally
// checks per topic.
func (p *powerProducer) start(t *testing.T) {
	p.stopped.Store(false)
	p.wg.Go(func() {
		for !p.stopped.Load() {
			if err := p.drop(p.take()); err != nil {
				t.Error(err)
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
	})
}

func (p *powerProducer) stop() {
	p.stopped.Store(true)
	p.wg.Wait()
}

func (p *powerProducer) take() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	seq := p.next
	p.next++
	return seq
}

// count returns how many files were produced. Call it only after stop,
// when every sequence number taken has been dropped.
func (p *powerProducer) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.next
}

func (p *powerProducer) drop(seq int) error {
	topic := fmt.Sprintf("power/%d", seq%4)
	body := fmt.Sprintf("Topic: %s\nQoS: %d\n\nseq-%06d", topic, powerQoS(seq), seq)
	tmp := filepath.Join(p.dir, "tmp", fmt.Sprintf("m-%06d.part", seq))
	if err := writeSynced(tmp, []byte(body)); err != nil {
		return err
	}
	newDir := filepath.Join(p.dir, "new")
	if err := os.Rename(tmp, filepath.Join(newDir, fmt.Sprintf("m-%06d.msg", seq))); err != nil {
		return fmt.Errorf("rename %s into new/: %w", tmp, err)
	}
	return syncDir(newDir)
}

func writeSynced(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", path, err)
	}
	return f.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}

// envInt returns the integer in the environment variable name, or def
// when it is unset.
func envInt(t *testing.T, name string, def int64) int64 {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatalf("%s=%q is not an integer: %v", name, s, err)
	}
	return v
}

// TestPowerLoss_UplinkNoLoss cuts the power under a running daemon whose
// spool directory and spool.db sit on lossfs, which loses every write
// not yet fsynced, and every directory entry change not yet synced in its
// directory. After each cut the daemon must start on what the
// disk kept, and in the end every QoS 1 message must have arrived and no
// QoS 2 message twice. POWERLOSS_CYCLES sets the number of cuts
// (default 8) and POWERLOSS_SEED replays the run lengths of an
// earlier run.
func TestPowerLoss_UplinkNoLoss(t *testing.T) {
	disk := startLossDisk(t)
	broker := harness.StartBroker(t, "")
	sub := harness.Subscribe(t, broker.Addr(), "power/#", 2)
	d := newDaemonOnDisk(t, disk, broker, "")
	cycles, rng := powerLossRun(t)

	p := &powerProducer{dir: d.Dir}
	for cycle := range cycles {
		startAfterCut(t, d, cycle)
		p.start(t)
		// The kill comes before the producer stops, so that it finds the
		// daemon busy.
		killForCut(t, d, disk, rng, cycle)
		p.stop()
		cutPower(t, disk, cycle)
	}
	startAfterCut(t, d, cycles)

	total := p.count()
	// A timeout falls through to the tally, which lists what is missing.
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if distinctPayloads(sub) >= total {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // let a late duplicate show up
	requirePowerLossTally(t, sub, total)
	harness.WaitFor(t, 10*time.Second, "new/ empty", d.NewEmpty)
	requireEmptyDir(t, filepath.Join(d.Dir, "failed"))
}

// TestPowerLoss_IngestedFilesStayRemoved cuts the power once the daemon
// has stored every file, removed it from new/ and forgotten its identity.
// An unlink made durable only by the sync of its directory would come
// back after the cut as a file that looks new, and its messages would be
// published twice.
func TestPowerLoss_IngestedFilesStayRemoved(t *testing.T) {
	disk := startLossDisk(t)
	broker := harness.StartBroker(t, "")
	d := newDaemonOnDisk(t, disk, broker, "")
	d.Start()
	for i := range 20 {
		if err := format.WriteFileAtomic(d.Dir, fmt.Sprintf("power/removed/f%02d", i), []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	harness.WaitFor(t, 10*time.Second, "new/ empty", d.NewEmpty)
	// The identities are forgotten with the next commit, within about
	// 100 ms of the removal.
	time.Sleep(time.Second)
	d.Kill()
	cutPower(t, disk, 0)

	if !d.NewEmpty() {
		t.Errorf("files ingested and forgotten before the cut are back in new/ after it: "+
			"their unlinks were not durable:\n%s", listFiles(t, filepath.Join(d.Dir, "new")))
	}
}

// listFiles returns the regular files below dir, one per line.
func listFiles(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
		if err == nil && e.Type().IsRegular() {
			b.WriteString(p + "\n")
		}
		return nil
	})
	return b.String()
}

// startLossDisk mounts lossfs with a sync delay of 5 ms. Most of a
// commit's time goes to its fsyncs then, as on a real disk, so a cut
// often finds written pages that are not yet durable. Directory entries
// are volatile too: a cut undoes those changed since their directory's
// last fsync.
func startLossDisk(t *testing.T) *lossfs.FS {
	disk := lossfs.Start(t)
	disk.SetSyncDelay(5 * time.Millisecond)
	if err := disk.SetVolatileEntries(true); err != nil {
		t.Fatal(err)
	}
	return disk
}

// newDaemonOnDisk configures a daemon with its spool directory and
// spool.db on disk, which must be mounted before, so that the daemon's
// cleanup (a kill) runs before the unmount. It creates the directories
// durably, as an installer would. extra is added to the config.
func newDaemonOnDisk(t *testing.T, disk *lossfs.FS, broker *harness.Broker, extra string) *harness.Daemon {
	d := harness.NewDaemon(t, broker.URL(), extra)
	d.Dir = filepath.Join(disk.Mountpoint, "spool")
	d.DB = filepath.Join(disk.Mountpoint, "state", "spool.db")
	for _, dir := range []string{filepath.Dir(d.DB), filepath.Join(d.Dir, "tmp"), filepath.Join(d.Dir, "new")} {
		if err := format.MkdirAllSync(dir); err != nil {
			t.Fatal(err)
		}
	}
	d.WriteConfig(broker.URL(), extra)
	d.DumpOnFailure()
	return d
}

// powerLossRun returns the number of cuts and a random source for the
// run lengths, from the environment when set, and logs both with the
// command that replays this test alone. Unless POWERLOSS_SEED is set,
// each test draws its own seed.
func powerLossRun(t *testing.T) (int, *rand.Rand) {
	cycles := int(envInt(t, "POWERLOSS_CYCLES", 8))
	seed := uint64(envInt(t, "POWERLOSS_SEED", time.Now().UnixNano()))
	t.Logf("replay the run lengths of this run with: POWERLOSS_SEED=%d POWERLOSS_CYCLES=%d go test -race -count=1 -run '^%s$' -v ./test/",
		seed, cycles, t.Name())
	return cycles, rand.New(rand.NewPCG(seed, seed))
}

// killForCut sleeps for a random run length and kills the daemon. Every
// other cycle it waits for the daemon to be inside an fsync, which the
// kill then cuts short.
func killForCut(t *testing.T, d *harness.Daemon, disk *lossfs.FS, rng *rand.Rand, cycle int) {
	t.Helper()
	time.Sleep(time.Duration(200+rng.IntN(2300)) * time.Millisecond)
	if cycle%2 == 1 && !disk.WaitSync(d.PID(), 2*time.Second) {
		t.Logf("cut %d: the daemon did not fsync within 2 s", cycle)
	}
	d.Kill()
}

// startAfterCut starts the daemon and fails the test when the start
// found spool.db damaged and renamed it aside.
func startAfterCut(t *testing.T, d *harness.Daemon, cycle int) {
	t.Helper()
	d.Start()
	requireNotRenamedAside(t, d, cycle)
}

func requireNotRenamedAside(t *testing.T, d *harness.Daemon, cycle int) {
	t.Helper()
	aside, _ := filepath.Glob(d.DB + ".corrupt-*")
	if len(aside) > 0 {
		t.Fatalf("start after cut %d renamed spool.db aside as damaged: %v", cycle, aside)
	}
}

// cutPower cuts the power and checks that the mount kept its device
// number, because the pickup's file identity contains it: a new number
// would make every file left in new/ look new.
func cutPower(t *testing.T, disk *lossfs.FS, cycle int) {
	t.Helper()
	before := mountDevice(t, disk)
	stats, err := disk.Cut()
	if err != nil {
		t.Fatalf("cut %d: %v", cycle, err)
	}
	if after := mountDevice(t, disk); after != before {
		t.Fatalf("cut %d: the mount's device number changed from %#x to %#x (another mount took the old number meanwhile; run the test again)", cycle, before, after)
	}
	t.Logf("cut %d: undid unsynced changes to %d files (%d bytes written back, %d bytes truncated) and %d directory entries",
		cycle, stats.Files, stats.Bytes, stats.Truncated, stats.Entries)
}

func mountDevice(t *testing.T, disk *lossfs.FS) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(disk.Mountpoint, &st); err != nil {
		t.Fatal(err)
	}
	return st.Dev
}

// distinctPayloads returns how many different payloads sub received.
// Unlike tally it reports nothing, so it can be polled.
func distinctPayloads(sub *harness.Subscriber) int {
	seen := map[string]bool{}
	for _, m := range sub.Messages() {
		seen[string(m.Payload)] = true
	}
	return len(seen)
}

// requirePowerLossTally fails on any lost message, and on any QoS 2
// message that arrived more than once. A repeated QoS 1 message is
// allowed, and logged.
func requirePowerLossTally(t *testing.T, sub *harness.Subscriber, total int) {
	t.Helper()
	missing, dups := tally(t, sub, total)
	if len(missing) > 0 {
		t.Errorf("lost %d of %d messages: %v", len(missing), total, head(missing))
	}
	var qos1, qos2 []int
	for _, seq := range dups {
		if powerQoS(seq) == 2 {
			qos2 = append(qos2, seq)
		} else {
			qos1 = append(qos1, seq)
		}
	}
	if len(qos2) > 0 {
		t.Errorf("%d QoS 2 messages arrived more than once: %v", len(qos2), head(qos2))
	}
	t.Logf("%d messages, %d QoS 1 messages arrived more than once", total, len(qos1))
}

func requireEmptyDir(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if len(names) > 0 {
		t.Errorf("%s contains %s, want it empty", dir, strings.Join(names, ", "))
	}
}

// TestPowerLoss_DownlinkNoLoss cuts the power while the daemon writes
// QoS 1 and QoS 2 messages from the broker into inboxes on lossfs. An
// inbox file must be durable before its PUBACK or PUBREC, so in the end
// every message must be in its inbox, parse, and a QoS 2 message must
// be there once.
func TestPowerLoss_DownlinkNoLoss(t *testing.T) {
	disk := startLossDisk(t)
	broker := harness.StartBroker(t, "max_queued_messages 100000")
	q1Dir := filepath.Join(disk.Mountpoint, "inbox-q1")
	q2Dir := filepath.Join(disk.Mountpoint, "inbox-q2")
	d := newDaemonOnDisk(t, disk, broker, fmt.Sprintf(`subscriptions:
  - filter: power/q1
    qos: 1
    dir: %s
  - filter: power/q2
    qos: 2
    dir: %s
`, q1Dir, q2Dir))
	cycles, rng := powerLossRun(t)
	d.Start()
	waitSubscribed(t, d, 2)

	q1 := startLinePublisher(t, broker, "power/q1", 1)
	q2 := startLinePublisher(t, broker, "power/q2", 2)
	total := 0
	for cycle := range cycles {
		if cycle > 0 {
			startConnected(t, d)
			requireNotRenamedAside(t, d, cycle)
		}
		// Each inbox file costs an fsync and each message a spool.db
		// commit, so the daemon stores fewer than 100 messages a second
		// with the sync delay. The rate below stays under that.
		var stopped atomic.Bool
		var wg sync.WaitGroup
		wg.Go(func() {
			for !stopped.Load() {
				q1.send(fmt.Sprintf("seq-%06d", total))
				q2.send(fmt.Sprintf("seq-%06d", total))
				total++
				time.Sleep(25 * time.Millisecond)
			}
		})
		killForCut(t, d, disk, rng, cycle)
		// The broker queues what is published while the power is off.
		cutPower(t, disk, cycle)
		stopped.Store(true)
		wg.Wait()
	}
	q1.close(t)
	q2.close(t)
	startConnected(t, d)
	requireNotRenamedAside(t, d, cycles)

	repeated := requireInboxesComplete(t, q1Dir, q2Dir, total)
	t.Logf("%d messages per QoS, %d QoS 1 messages repeated after %d power cuts", total, repeated, cycles)
	requireEmptyDir(t, filepath.Join(d.Dir, "failed"))
}
