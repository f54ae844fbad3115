package test

import (
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"

	"github.com/mqspool/mqspool/test/harness"
)

// The soak test's faults, one at a time at random intervals.
const (
	faultKill9         = "kill -9"
	faultSIGTERM       = "SIGTERM"
	faultBrokerRestart = "broker restart"
	faultBlackhole     = "blackhole"
	faultReset         = "reset"
	faultStall         = "stall"
	faultLostAcks      = "lost acknowledgements"
	faultSIGHUP        = "SIGHUP reload"
)

var soakFaults = []string{faultKill9, faultSIGTERM, faultBrokerRestart, faultBlackhole, faultReset, faultStall, faultLostAcks, faultSIGHUP}

// soakProducer drops files at a steady rate until stopped: .msg files
// alternating between QoS 1 and QoS 2 topics and, every tenth file, a
// .jsonl file of five lines. Each message carries its own sequence number
// as the payload "soak-NNNNNNN", and qos records the QoS it was sent with.
type soakProducer struct {
	d *harness.Daemon

	mu    sync.Mutex // guards qos, files and err
	qos   []int      // QoS by sequence number
	files int
	err   error

	stop chan struct{}
	done chan struct{}
}

func startSoakProducer(t *testing.T, d *harness.Daemon, every time.Duration) *soakProducer {
	if err := os.MkdirAll(filepath.Join(d.Dir, "tmp"), 0o755); err != nil {
		t.Fatal(err)
	}
	p := &soakProducer{d: d, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		ticker := time.NewTicker(every)
		defer ticker.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-ticker.C:
				p.dropFile()
			}
		}
	}()
	return p
}

// dropFile writes the next file into tmp/ and renames it into new/. It
// does not use Daemon.Drop, because that calls t.Fatal, which must not
// run outside the test's goroutine.
func (p *soakProducer) dropFile() {
	p.mu.Lock()
	file := p.files
	p.files++
	first := len(p.qos)
	var name string
	var body strings.Builder
	if file%10 == 9 {
		name = fmt.Sprintf("b-%07d.jsonl", file)
		for i := range 5 {
			qos := 1 + i%2
			p.qos = append(p.qos, qos)
			fmt.Fprintf(&body, "{\"topic\":\"soak/q%d/j\",\"payload\":\"soak-%07d\",\"qos\":%d}\n", qos, first+i, qos)
		}
	} else {
		qos := 1 + file%2
		p.qos = append(p.qos, qos)
		name = fmt.Sprintf("m-%07d.msg", file)
		fmt.Fprintf(&body, "Topic: soak/q%d/%d\nQoS: %d\n\nsoak-%07d", qos, file%3, qos, first)
	}
	p.mu.Unlock()

	if err := dropSpoolFile(p.d.Dir, name, body.String()); err != nil {
		p.mu.Lock()
		if p.err == nil {
			p.err = err
		}
		p.mu.Unlock()
	}
}

func dropSpoolFile(dir, name, body string) error {
	tmp := filepath.Join(dir, "tmp", name+".part")
	if err := os.WriteFile(tmp, []byte(body), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "new", name)); err != nil {
		return fmt.Errorf("rename %s into new/: %w", tmp, err)
	}
	return nil
}

// Stop stops dropping and returns the QoS of every message dropped, by
// sequence number, and the number of files.
func (p *soakProducer) Stop() (qos []int, files int, err error) {
	close(p.stop)
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.qos), p.files, p.err
}

// soakTally is what arrived at the subscriber, by sequence number.
type soakTally struct {
	counts     []int
	wrongQoS   []string
	unexpected []string
	// outOfOrder counts first arrivals on a topic that came after a later
	// sequence number on the same topic.
	outOfOrder int
}

func tallySoak(sub *harness.Subscriber, qos []int) soakTally {
	st := soakTally{counts: make([]int, len(qos))}
	last := map[string]int{}
	for _, m := range sub.Messages() {
		seq, err := strconv.Atoi(strings.TrimPrefix(string(m.Payload), "soak-"))
		if err != nil || seq < 0 || seq >= len(qos) {
			st.unexpected = append(st.unexpected, fmt.Sprintf("%q on %s", m.Payload, m.Topic))
			continue
		}
		if int(m.QoS) != qos[seq] {
			st.wrongQoS = append(st.wrongQoS, fmt.Sprintf("soak-%07d at QoS %d, sent at QoS %d", seq, m.QoS, qos[seq]))
		}
		if st.counts[seq] == 0 {
			if prev, ok := last[m.Topic]; ok && seq < prev {
				st.outOfOrder++
			}
			last[m.Topic] = seq
		}
		st.counts[seq]++
	}
	return st
}

// missing returns the sequence numbers that never arrived.
func (st soakTally) missing() []int {
	var seqs []int
	for seq, c := range st.counts {
		if c == 0 {
			seqs = append(seqs, seq)
		}
	}
	return seqs
}

// duplicated returns the sequence numbers sent at qos that arrived more
// than once, and the number of extra deliveries.
func (st soakTally) duplicated(sent []int, qos int) (seqs []int, extra int) {
	for seq, c := range st.counts {
		if sent[seq] == qos && c > 1 {
			seqs = append(seqs, seq)
			extra += c - 1
		}
	}
	return seqs, extra
}

// soakRun holds the components of one soak test and its fault log.
type soakRun struct {
	t      *testing.T
	rng    *rand.Rand
	start  time.Time
	broker *harness.Broker
	proxy  *harness.Proxy
	d      *harness.Daemon

	faults   []string
	counts   map[string]int
	throttle bool // whether the config from the last reload sets a throttle
}

// logFault records a fault with its wall-clock time, to match the
// daemon's log, and its offset from the start of the test.
func (s *soakRun) logFault(format string, args ...any) {
	line := fmt.Sprintf("%s +%s %s", time.Now().Format("15:04:05.000"), time.Since(s.start).Round(time.Millisecond), fmt.Sprintf(format, args...))
	s.faults = append(s.faults, line)
	s.t.Log(line)
}

// inject runs one fault. hold is how long a blackhole, a stall or the
// loss of acknowledgements lasts.
func (s *soakRun) inject(kind string, hold time.Duration) {
	s.counts[kind]++
	switch kind {
	case faultKill9:
		s.logFault("%s of the daemon", kind)
		s.d.Kill()
		s.d.Start()
	case faultSIGTERM:
		s.logFault("%s to the daemon", kind)
		if code := s.d.Stop(20 * time.Second); code != 0 {
			s.t.Errorf("exit code after SIGTERM = %d, want 0", code)
		}
		s.d.Start()
	case faultBrokerRestart:
		s.logFault("%s, sessions kept", kind)
		s.broker.Restart()
	case faultBlackhole, faultStall:
		mode := harness.Blackhole
		if kind == faultStall {
			mode = harness.Stall
		}
		s.logFault("%s for %s", kind, hold)
		s.proxy.SetMode(mode)
		time.Sleep(hold)
		s.proxy.SetMode(harness.Pass)
		s.logFault("%s ended", kind)
	case faultReset:
		s.logFault("%s of every proxy connection", kind)
		s.proxy.Reset()
	case faultLostAcks:
		s.loseAcks(hold)
	case faultSIGHUP:
		s.reload()
	}
}

// loseAcks drops every PUBACK, PUBREC and PUBCOMP from the broker for
// hold and then resets the connections, as a link that dies with the
// acknowledgements still on their way would. Every flow of that time is
// then resent on the next connection, and the broker must not forward a
// resent QoS 2 message again.
func (s *soakRun) loseAcks(hold time.Duration) {
	s.logFault("%s for %s, then a reset", faultLostAcks, hold)
	s.proxy.SetDrop(func(p harness.Packet) bool {
		return p.Dir == harness.ToClient && (p.Type == packets.PUBACK || p.Type == packets.PUBREC || p.Type == packets.PUBCOMP)
	})
	time.Sleep(hold)
	s.proxy.SetDrop(nil)
	s.proxy.Reset()
	s.logFault("%s ended", faultLostAcks)
}

// reload switches the config between no throttle and 500 messages per
// second, which is above the producer's rate, and sends SIGHUP.
func (s *soakRun) reload() {
	s.throttle = !s.throttle
	extra := ""
	if s.throttle {
		extra = "throttle:\n  messages_per_second: 500\n"
	}
	s.logFault("%s, throttle %t", faultSIGHUP, s.throttle)
	before := strings.Count(s.d.Log(), "configuration reloaded")
	s.d.WriteConfig(s.proxy.URL(), extra)
	s.d.Signal(syscall.SIGHUP)
	harness.WaitEvery(s.t, 10*time.Second, 100*time.Millisecond, "configuration reloaded", func() bool {
		return strings.Count(s.d.Log(), "configuration reloaded") > before
	})
}

// saveLogsOnFailure writes the daemon's and the broker's whole logs and
// the fault log to a directory that outlives the test, because
// DumpOnFailure prints only the daemon log's end.
func (s *soakRun) saveLogsOnFailure() {
	s.t.Cleanup(func() {
		if !s.t.Failed() {
			return
		}
		dir, err := os.MkdirTemp("", "mqspool-soak-")
		if err != nil {
			s.t.Logf("could not save the soak logs: %v", err)
			return
		}
		files := map[string]string{
			"mqspool.log":   s.d.Log(),
			"mosquitto.log": s.broker.Log(),
			"faults.log":    strings.Join(s.faults, "\n") + "\n",
		}
		for name, text := range files {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
				s.t.Logf("could not save %s: %v", name, err)
			}
		}
		s.t.Logf("whole logs saved in %s", dir)
	})
}

// soakSeed returns MQSPOOL_SOAK_SEED when set, or a new seed.
func soakSeed(t *testing.T) uint64 {
	text := os.Getenv("MQSPOOL_SOAK_SEED")
	if text == "" {
		return uint64(time.Now().UnixNano())
	}
	seed, err := strconv.ParseUint(text, 10, 64)
	if err != nil {
		t.Fatalf("MQSPOOL_SOAK_SEED=%q is not an unsigned integer: %v", text, err)
	}
	return seed
}

// failedFiles returns the regular files under the spool's failed/.
func failedFiles(dir string) []string {
	var names []string
	filepath.WalkDir(filepath.Join(dir, "failed"), func(path string, e fs.DirEntry, err error) error {
		if err == nil && e.Type().IsRegular() {
			names = append(names, path)
		}
		return nil
	})
	return names
}

// TestSoak_RandomFaults forwards a steady stream of QoS 1 and QoS 2
// messages for MQSPOOL_SOAK (a Go duration such as 10m). Meanwhile one
// fault at a time hits the daemon, the broker or the link to it. At the
// end every message must have arrived, and no QoS 2 message twice.
// MQSPOOL_SOAK_SEED replays the same sequence of faults and pauses.
func TestSoak_RandomFaults(t *testing.T) {
	setting := os.Getenv("MQSPOOL_SOAK")
	if setting == "" {
		t.Skip("soak test: set MQSPOOL_SOAK to a duration such as 10m, or run make soak")
	}
	duration, err := time.ParseDuration(setting)
	if err != nil || duration <= 0 {
		t.Fatalf("MQSPOOL_SOAK=%q is not a positive Go duration such as 10m: %v", setting, err)
	}
	seed := soakSeed(t)
	t.Logf("seed %d; replay the faults with: MQSPOOL_SOAK_SEED=%d SOAK_DURATION=%s make soak", seed, seed, setting)

	// No limit on the subscriber's queue: mosquitto drops QoS 1 and 2
	// messages past max_queued_messages (1000 by default in 2.0), which
	// would look like loss after a long outage.
	broker := harness.StartBroker(t, "max_queued_messages 0")
	proxy := harness.StartProxy(t, broker.Addr())
	sub := harness.Subscribe(t, broker.Addr(), "soak/#", 2)
	d := harness.NewDaemon(t, proxy.URL(), "")
	d.DumpOnFailure()
	s := &soakRun{t: t, rng: rand.New(rand.NewPCG(seed, seed)), start: time.Now(), broker: broker, proxy: proxy, d: d, counts: map[string]int{}}
	s.saveLogsOnFailure()
	d.Start()

	producing := time.Now()
	producer := startSoakProducer(t, d, 50*time.Millisecond)
	for end := s.start.Add(duration); ; {
		pause := time.Duration(5+s.rng.IntN(16)) * time.Second
		kind := soakFaults[s.rng.IntN(len(soakFaults))]
		hold := time.Duration(2+s.rng.IntN(11)) * time.Second
		if time.Now().Add(pause).After(end) {
			break
		}
		time.Sleep(pause)
		s.inject(kind, hold)
	}
	qos, files, err := producer.Stop()
	if err != nil {
		t.Errorf("producer: %v", err)
	}
	// A time.Ticker drops the ticks that a slow receiver misses, so on a
	// busy machine the producer can fall below 20 files a second.
	rate := float64(files) / time.Since(producing).Seconds()
	s.logFault("producer stopped after %d files (%.1f a second), %d messages", files, rate, len(qos))

	if !waitSoakDrain(t, d, sub, qos) {
		out, _ := d.Ctl("status")
		t.Errorf("spool not drained within three minutes after the producer stopped; status:\n%s", out)
	}
	s.logFault("drain ended")
	// A late duplicate would arrive within a moment.
	time.Sleep(2 * time.Second)
	checkSoak(t, s, sub, qos)
}

// waitSoakDrain waits up to three minutes until new/ is empty, the
// daemon has nothing queued or in flight and every message arrived, and
// reports whether that happened.
func waitSoakDrain(t *testing.T, d *harness.Daemon, sub *harness.Subscriber, qos []int) bool {
	deadline := time.Now().Add(3 * time.Minute)
	for time.Now().Before(deadline) {
		if d.NewEmpty() && len(tallySoak(sub, qos).missing()) == 0 {
			st, _, code := opsTryStatus(t, d)
			if code == 0 && st["queue_messages"] == 0.0 && st["inflight"] == 0.0 {
				return true
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	return false
}

// checkSoak reports loss, QoS 2 duplicates, wrong QoS and files in
// failed/, and logs the counts.
func checkSoak(t *testing.T, s *soakRun, sub *harness.Subscriber, qos []int) {
	st := tallySoak(sub, qos)
	if missing := st.missing(); len(missing) > 0 {
		t.Errorf("lost %d of %d messages, first ones: %v", len(missing), len(qos), head(missing))
	}
	dups2, extra2 := st.duplicated(qos, 2)
	if len(dups2) > 0 {
		t.Errorf("%d QoS 2 messages arrived more than once (%d extra deliveries), first ones: %v", len(dups2), extra2, head(dups2))
	}
	if len(st.wrongQoS) > 0 {
		t.Errorf("%d messages arrived at another QoS than sent, first: %s", len(st.wrongQoS), st.wrongQoS[0])
	}
	if len(st.unexpected) > 0 {
		t.Errorf("%d unexpected messages, first: %s", len(st.unexpected), st.unexpected[0])
	}
	if failed := failedFiles(s.d.Dir); len(failed) > 0 {
		t.Errorf("%d files in failed/: %v", len(failed), failed)
	}
	if !s.d.NewEmpty() {
		t.Errorf("new/ still contains files after the drain")
	}

	sent1 := 0
	for _, q := range qos {
		if q == 1 {
			sent1++
		}
	}
	dups1, extra1 := st.duplicated(qos, 1)
	t.Logf("%d messages: %d at QoS 1, %d at QoS 2; %d QoS 1 messages arrived more than once (%d extra deliveries); %d first arrivals out of order on their topic",
		len(qos), sent1, len(qos)-sent1, len(dups1), extra1, st.outOfOrder)
	var byKind []string
	for _, kind := range soakFaults {
		byKind = append(byKind, fmt.Sprintf("%s %d", kind, s.counts[kind]))
	}
	t.Logf("faults: %s", strings.Join(byKind, ", "))
}
