package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// broker is a mosquitto on 127.0.0.1 with persistence off and no limit on
// inflight or queued messages, so the broker does not cap any client.
type broker struct {
	port int
	cmd  *exec.Cmd
	exit chan error
}

func startBroker(dir string) (*broker, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create broker directory %s: %w", dir, err)
	}
	conf := filepath.Join(dir, "mosquitto.conf")
	text := fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\npersistence false\n"+
		"max_inflight_messages 0\nmax_queued_messages 0\nlog_dest stderr\nlog_type error\nlog_type warning\n", port)
	if os.Geteuid() == 0 {
		// As root, mosquitto would switch to its own user otherwise.
		text = "user root\n" + text
	}
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		return nil, fmt.Errorf("write %s: %w", conf, err)
	}
	logFile, err := os.Create(filepath.Join(dir, "mosquitto.log"))
	if err != nil {
		return nil, fmt.Errorf("create broker log: %w", err)
	}
	defer logFile.Close()

	b := &broker{port: port, cmd: exec.Command("mosquitto", "-c", conf), exit: make(chan error, 1)}
	b.cmd.Stdout, b.cmd.Stderr = logFile, logFile
	if err := b.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start mosquitto with %s: %w", conf, err)
	}
	go func() { b.exit <- b.cmd.Wait() }()
	if err := waitListening(b.addr(), 10*time.Second); err != nil {
		b.stop()
		return nil, err
	}
	return b, nil
}

func (b *broker) addr() string { return fmt.Sprintf("127.0.0.1:%d", b.port) }

func (b *broker) url() string { return "mqtt://" + b.addr() }

// stop ends mosquitto by its PID and waits at most 5 s.
func (b *broker) stop() { stopProcess(b.cmd.Process, b.exit, 5*time.Second) }

// stopProcess sends SIGTERM, waits for exit for up to grace, then sends
// SIGKILL and waits again.
func stopProcess(p *os.Process, exit chan error, grace time.Duration) error {
	p.Signal(syscall.SIGTERM)
	select {
	case err := <-exit:
		return err
	case <-time.After(grace):
	}
	p.Kill()
	<-exit
	return fmt.Errorf("process %d did not exit within %s of SIGTERM and was killed", p.Pid, grace)
}

func waitListening(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("mosquitto not accepting on %s after %s", addr, timeout)
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	addr, ok := ln.Addr().(*net.TCPAddr)
	if !ok {
		return 0, errors.New("listener address is not TCP")
	}
	return addr.Port, nil
}
