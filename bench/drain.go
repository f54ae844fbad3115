package main

import (
	"bytes"
	"cmp"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"time"
)

// payloadSizes are the message sizes every drain is measured with.
var payloadSizes = []int{100, 1024}

// drainQoS are the QoS levels of the drain rows; -drain-qos picks one.
var drainQoS = []byte{1, 2}

// maxInflight is the window of every contender: mqspool's default
// publish.max_inflight and mosquitto_pub -M.
const maxInflight = 1000

// runDrain measures mqspool draining a prefilled spool against
// mosquitto_pub at QoS 1 and 2, for each payload size. The two take turns
// for DrainRounds rounds and each is represented by its median round, so
// a burst of load from other jobs on the machine moves one round, not
// the ratio.
func runDrain(e *env, r *report) error {
	for _, qos := range drainQoS {
		for _, size := range payloadSizes {
			var own, ref []rate
			for range e.sizes.DrainRounds {
				o, err := drainMqspool(e, qos, size)
				if err != nil {
					return err
				}
				p, err := drainMosquittoPub(e, qos, size)
				if err != nil {
					return err
				}
				own, ref = append(own, o), append(ref, p)
			}
			r.addDrain(qos, size, own, ref)
		}
	}
	return nil
}

// median returns the round with the median rate.
func median(rounds []rate) rate {
	sorted := slices.Clone(rounds)
	slices.SortFunc(sorted, func(a, b rate) int { return cmp.Compare(a.perSecond(), b.perSecond()) })
	return sorted[len(sorted)/2]
}

// rate is a count of messages delivered in a time.
type rate struct {
	Messages int64
	Elapsed  time.Duration
	// Bounded is set when the run stopped at its time bound before
	// every message arrived.
	Bounded bool
	// CPU is the user and system time of the sending process, when it
	// is a process of its own.
	CPU time.Duration
	// Use is the machine's idle share and the broker's and the
	// subscriber's CPU time during the run, for the drains.
	Use cpuUse
}

// cpuPerMessage returns the sender's CPU time per message.
func (r rate) cpuPerMessage() time.Duration {
	if r.Messages == 0 {
		return 0
	}
	return r.CPU / time.Duration(r.Messages)
}

// cpuTime returns the user and system time of an exited process.
func cpuTime(st *os.ProcessState) time.Duration {
	if st == nil {
		return 0
	}
	return st.UserTime() + st.SystemTime()
}

func (r rate) perSecond() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Messages) / r.Elapsed.Seconds()
}

// drainMqspool prefills a spool with Drain messages and times the real
// daemon from its start until the subscriber has them all.
func drainMqspool(e *env, qos byte, size int) (rate, error) {
	root, err := e.dir(fmt.Sprintf("drain-q%d-%d", qos, size))
	if err != nil {
		return rate{}, err
	}
	d, err := newDaemon(root, e.broker.url(), e.clientID("mqspool"))
	if err != nil {
		return rate{}, err
	}
	n := e.sizes.Drain
	if err := prefill(d.db, n, size, qos); err != nil {
		return rate{}, err
	}
	e.sub.reset()
	before := e.sampleCPU()
	if err := d.start(e.bin, false); err != nil {
		return rate{}, err
	}
	last, werr := e.sub.wait(int64(n), e.sizes.Wait)
	use := before.until(e.sampleCPU())
	serr := d.stop()
	if werr != nil {
		return rate{}, fmt.Errorf("mqspool drain QoS %d, %d B: %w (daemon log in %s)", qos, size, werr, root)
	}
	if serr != nil {
		return rate{}, fmt.Errorf("stop mqspool after drain: %w", serr)
	}
	r := rate{Messages: int64(n), Elapsed: last.Sub(d.started), CPU: cpuTime(d.cmd.ProcessState), Use: use}
	logf("mqspool QoS %d %d B: %d in %s, CPU %s", qos, size, n, r.Elapsed, r.CPU)
	return r, nil
}

// drainMosquittoPub sends Drain messages through mosquitto_pub -l in runs
// of at most PubChunk lines and adds up the times until each run's lines
// arrived, because one run drops lines past 65535 outstanding ids.
func drainMosquittoPub(e *env, qos byte, size int) (rate, error) {
	dir, err := e.dir(fmt.Sprintf("pub-q%d-%d", qos, size))
	if err != nil {
		return rate{}, err
	}
	var total rate
	for left := e.sizes.Drain; left > 0; left -= e.sizes.PubChunk {
		lines := min(left, e.sizes.PubChunk)
		r, err := pubChunk(e, dir, qos, size, lines)
		if err != nil {
			return rate{}, err
		}
		total.Use = total.Use.add(r.Use, total.Elapsed, r.Elapsed)
		total.Messages += r.Messages
		total.Elapsed += r.Elapsed
		total.CPU += r.CPU
	}
	logf("mosquitto_pub QoS %d %d B: %d in %s, CPU %s", qos, size, total.Messages, total.Elapsed, total.CPU)
	return total, nil
}

func pubChunk(e *env, dir string, qos byte, size, lines int) (rate, error) {
	input := filepath.Join(dir, fmt.Sprintf("lines-%d.txt", lines))
	line := append(bytes.Repeat([]byte("p"), size), '\n')
	if err := os.WriteFile(input, bytes.Repeat(line, lines), 0o644); err != nil {
		return rate{}, fmt.Errorf("write %s: %w", input, err)
	}
	in, err := os.Open(input)
	if err != nil {
		return rate{}, fmt.Errorf("open %s: %w", input, err)
	}
	defer in.Close()

	cmd := exec.Command("mosquitto_pub", "-h", "127.0.0.1", "-p", strconv.Itoa(e.broker.port),
		"-V", "5", "-q", strconv.Itoa(int(qos)), "-M", strconv.Itoa(maxInflight),
		"-i", e.clientID("pub"), "-t", dataTopic, "-l")
	cmd.Stdin, cmd.Stderr = in, os.Stderr
	e.sub.reset()
	before := e.sampleCPU()
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return rate{}, fmt.Errorf("start mosquitto_pub: %w", err)
	}
	exit := make(chan error, 1)
	go func() { exit <- cmd.Wait() }()
	last, werr := e.sub.wait(int64(lines), e.sizes.Wait)
	use := before.until(e.sampleCPU())
	select {
	case <-exit:
	case <-time.After(30 * time.Second):
		stopProcess(cmd.Process, exit, 5*time.Second)
	}
	if werr != nil {
		return rate{}, fmt.Errorf("mosquitto_pub QoS %d, %d B: %w", qos, size, werr)
	}
	return rate{Messages: int64(lines), Elapsed: last.Sub(start), CPU: cpuTime(cmd.ProcessState), Use: use}, nil
}

// logf prints progress to stderr.
func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "  "+format+"\n", args...)
}
