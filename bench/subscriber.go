package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// dataTopic is where every measured message is published; probeTopic
// only checks that the subscription is in place.
const (
	dataTopic  = "bench/data"
	probeTopic = "bench/probe"
)

// subscriber runs mosquitto_sub with a QoS 1 subscription to bench/# and
// counts the messages on dataTopic and their payload bytes. It prints
// "topic length" per message, so nothing of the payload is parsed.
type subscriber struct {
	cmd   *exec.Cmd
	exit  chan error
	count atomic.Int64
	bytes atomic.Int64
	// first is the arrival time of the first data message since the last
	// reset, in Unix nanoseconds; 0 until then.
	first  atomic.Int64
	probed atomic.Bool
}

func subscribe(port int, id string) (*subscriber, error) {
	s := &subscriber{exit: make(chan error, 1)}
	s.cmd = exec.Command("mosquitto_sub", "-h", "127.0.0.1", "-p", strconv.Itoa(port),
		"-V", "5", "-q", "1", "-i", id, "-t", "bench/#", "-F", "%t %l")
	out, err := s.cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("pipe mosquitto_sub output: %w", err)
	}
	s.cmd.Stderr = os.Stderr
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start mosquitto_sub: %w", err)
	}
	go s.read(bufio.NewScanner(out))
	if err := s.probe(port); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

func (s *subscriber) read(sc *bufio.Scanner) {
	for sc.Scan() {
		topic, length, _ := strings.Cut(sc.Text(), " ")
		switch topic {
		case dataTopic:
			if s.count.Add(1) == 1 {
				s.first.Store(time.Now().UnixNano())
			}
			n, _ := strconv.Atoi(length)
			s.bytes.Add(int64(n))
		case probeTopic:
			s.probed.Store(true)
		}
	}
	s.exit <- s.cmd.Wait()
}

// probe publishes to probeTopic every 200 ms until the subscriber
// receives it, for at most 10 s.
func (s *subscriber) probe(port int) error {
	deadline := time.Now().Add(10 * time.Second)
	for !s.probed.Load() {
		if time.Now().After(deadline) {
			return fmt.Errorf("mosquitto_sub on port %d did not receive a probe within 10s", port)
		}
		exec.Command("mosquitto_pub", "-h", "127.0.0.1", "-p", strconv.Itoa(port),
			"-t", probeTopic, "-m", "probe").Run()
		time.Sleep(200 * time.Millisecond)
	}
	return nil
}

// reset clears the counters before a run. Call it only when no publisher
// is running.
func (s *subscriber) reset() {
	s.count.Store(0)
	s.bytes.Store(0)
	s.first.Store(0)
}

// wait polls every 2 ms until n data messages arrived or timeout passed,
// and returns when the last one was seen.
func (s *subscriber) wait(n int64, timeout time.Duration) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	for s.count.Load() < n {
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("subscriber has %d of %d messages after %s", s.count.Load(), n, timeout)
		}
		time.Sleep(2 * time.Millisecond)
	}
	return time.Now(), nil
}

// waitFirst polls every 1 ms for the first data message.
func (s *subscriber) waitFirst(timeout time.Duration) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	for s.first.Load() == 0 {
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("no message arrived within %s", timeout)
		}
		time.Sleep(time.Millisecond)
	}
	return time.Unix(0, s.first.Load()), nil
}

func (s *subscriber) close() { stopProcess(s.cmd.Process, s.exit, 5*time.Second) }
