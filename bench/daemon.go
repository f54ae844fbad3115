package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// daemon is one "mqspool run" process with its own spool directory and
// database under root.
type daemon struct {
	root    string
	dir     string
	db      string
	config  string
	cmd     *exec.Cmd
	exit    chan error
	started time.Time
	// perfOut is the perf stat output file when the daemon runs under
	// perf; pid is then the daemon's own PID, not perf's.
	perfOut string
	pid     int
	// maxMessages is spool.max_messages; 0 leaves it unlimited.
	maxMessages int
}

// newDaemon lays out root and writes a config for brokerURL.
func newDaemon(root, brokerURL, clientID string) (*daemon, error) {
	d := &daemon{
		root:   root,
		dir:    filepath.Join(root, "spool"),
		db:     filepath.Join(root, "state", "spool.db"),
		config: filepath.Join(root, "mqspool.yaml"),
	}
	for _, sub := range []string{"state", "spool/new"} {
		if err := os.MkdirAll(filepath.Join(root, sub), 0o755); err != nil {
			return nil, fmt.Errorf("create %s: %w", sub, err)
		}
	}
	return d, d.writeConfig(brokerURL, clientID)
}

func (d *daemon) writeConfig(brokerURL, clientID string) error {
	text := fmt.Sprintf(`broker:
  urls: [%s]
  client_id: %s
reconnect:
  min_delay: 100ms
  max_delay: 1s
spool:
  dir: %s
  db: %s
  max_bytes: 4GiB
  max_messages: %d
control:
  socket: %s
log:
  level: warn
`, brokerURL, clientID, d.dir, d.db, d.maxMessages, filepath.Join(d.root, "mqspool.sock"))
	if err := os.WriteFile(d.config, []byte(text), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", d.config, err)
	}
	return nil
}

// newDir returns the spool's new/ directory.
func (d *daemon) newDir() string { return filepath.Join(d.dir, "new") }

// start runs bin with the config. With perf set it runs it under
// "perf stat", counting fdatasync, fsync, write and read calls.
func (d *daemon) start(bin string, perf bool) error {
	args := []string{bin, "run", "--config", d.config}
	if perf {
		d.perfOut = filepath.Join(d.root, "perf-stat.txt")
		args = append([]string{"perf", "stat", "-x", ",", "-o", d.perfOut,
			"-e", "syscalls:sys_enter_fdatasync,syscalls:sys_enter_fsync,syscalls:sys_enter_write,syscalls:sys_enter_read", "--"}, args...)
	}
	logFile, err := os.Create(filepath.Join(d.root, "mqspool.log"))
	if err != nil {
		return fmt.Errorf("create daemon log: %w", err)
	}
	defer logFile.Close()

	d.cmd = exec.Command(args[0], args[1:]...)
	d.cmd.Stdout, d.cmd.Stderr = logFile, logFile
	d.exit = make(chan error, 1)
	d.started = time.Now()
	if err := d.cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", strings.Join(args, " "), err)
	}
	go func() { d.exit <- d.cmd.Wait() }()
	d.pid = d.cmd.Process.Pid
	if perf {
		return d.findChild()
	}
	return nil
}

// findChild sets pid to perf's child, the daemon, waiting up to 5 s.
func (d *daemon) findChild() error {
	path := fmt.Sprintf("/proc/%d/task/%d/children", d.pid, d.pid)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(path)
		if f := strings.Fields(string(b)); len(f) > 0 {
			d.pid, _ = strconv.Atoi(f[0])
			return nil
		}
		time.Sleep(time.Millisecond)
	}
	return fmt.Errorf("perf (PID %d) started no child within 5s", d.pid)
}

// stop sends SIGTERM to the daemon and waits for it, and for perf when
// there is one. The daemon's own drain deadline is 5 s by default.
func (d *daemon) stop() error {
	p, err := os.FindProcess(d.pid)
	if err != nil {
		return fmt.Errorf("find daemon PID %d: %w", d.pid, err)
	}
	if d.pid == d.cmd.Process.Pid {
		return stopProcess(p, d.exit, 15*time.Second)
	}
	// Under perf: end the daemon, and perf exits after writing its counts.
	p.Signal(syscall.SIGTERM)
	select {
	case err := <-d.exit:
		return err
	case <-time.After(15 * time.Second):
		p.Kill()
		return stopProcess(d.cmd.Process, d.exit, 5*time.Second)
	}
}

// procStatus returns a field of /proc/PID/status in bytes (kB fields).
func procStatus(pid int, field string) (int64, error) {
	return procField(fmt.Sprintf("/proc/%d/status", pid), field+":", 1024)
}

// procIO returns a field of /proc/PID/io.
func procIO(pid int, field string) (int64, error) {
	return procField(fmt.Sprintf("/proc/%d/io", pid), field+":", 1)
}

func procField(path, prefix string, unit int64) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), prefix); ok {
			v, err := strconv.ParseInt(strings.Fields(rest)[0], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parse %s in %s: %w", prefix, path, err)
			}
			return v * unit, nil
		}
	}
	return 0, fmt.Errorf("%s has no field %s", path, prefix)
}

// perfCounts reads the system call counts perf stat wrote, by tracepoint
// name without the "syscalls:sys_enter_" prefix.
func perfCounts(path string) (map[string]int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read perf output: %w", err)
	}
	counts := map[string]int64{}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Split(line, ",")
		if len(f) < 3 {
			continue
		}
		if name, ok := strings.CutPrefix(f[2], "syscalls:sys_enter_"); ok {
			counts[name], _ = strconv.ParseInt(f[0], 10, 64)
		}
	}
	return counts, nil
}

// dirEmpty reports whether dir has no entries or does not exist.
func dirEmpty(dir string) bool {
	f, err := os.Open(dir)
	if err != nil {
		return os.IsNotExist(err)
	}
	defer f.Close()
	names, _ := f.Readdirnames(1)
	return len(names) == 0
}

// waitEmpty polls dir every 20 ms until it is empty, for at most timeout.
func waitEmpty(dir string, timeout time.Duration) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	for !dirEmpty(dir) {
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("%s still has files after %s", dir, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Now(), nil
}
