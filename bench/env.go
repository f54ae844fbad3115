package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// env is the state every section shares: a work directory, the mqspool
// binary, one broker and one subscriber.
type env struct {
	repo string
	work string
	bin  string
	// commit is the repository's commit when bin was built.
	commit string
	sizes  sizes

	broker *broker
	sub    *subscriber
	// downURL is a loopback port nothing listens on, for runs with the
	// broker down.
	downURL string
	runs    int
}

func newEnv(repo string, sz sizes) (*env, error) {
	abs, err := filepath.Abs(repo)
	if err != nil {
		return nil, fmt.Errorf("resolve repository path %s: %w", repo, err)
	}
	work, err := os.MkdirTemp("", "mqbench-")
	if err != nil {
		return nil, fmt.Errorf("create work directory: %w", err)
	}
	e := &env{repo: abs, work: work, sizes: sz}
	if err := e.start(); err != nil {
		e.close()
		return nil, err
	}
	return e, nil
}

func (e *env) start() error {
	e.bin = filepath.Join(e.work, "mqspool")
	e.commit = commitOf(e.repo)
	if err := goBuild(e.repo, e.bin, "./cmd/mqspool"); err != nil {
		return err
	}
	b, err := startBroker(filepath.Join(e.work, "broker"))
	if err != nil {
		return err
	}
	e.broker = b
	if e.sub, err = subscribe(b.port, "mqbench-sub"); err != nil {
		return err
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	e.downURL = fmt.Sprintf("mqtt://127.0.0.1:%d", port)
	return nil
}

// close stops what env started and removes the work directory.
func (e *env) close() {
	if e.sub != nil {
		e.sub.close()
	}
	if e.broker != nil {
		e.broker.stop()
	}
	os.RemoveAll(e.work)
}

// dir returns a new empty directory under the work directory.
func (e *env) dir(name string) (string, error) {
	e.runs++
	d := filepath.Join(e.work, fmt.Sprintf("%02d-%s", e.runs, name))
	if err := os.MkdirAll(d, 0o755); err != nil {
		return "", fmt.Errorf("create %s: %w", d, err)
	}
	return d, nil
}

// clientID returns an MQTT client id not used before in this run.
func (e *env) clientID(prefix string) string {
	e.runs++
	return fmt.Sprintf("%s-%d", prefix, e.runs)
}

// goBuild builds pkg in dir into out.
func goBuild(dir, out, pkg string) error {
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = dir
	if msg, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s in %s: %w\n%s", pkg, dir, err, msg)
	}
	return nil
}

// machine describes the hardware and the software versions of a run.
type machine struct {
	CPUs      int
	CPU       string
	Kernel    string
	Go        string
	Mosquitto string
	Commit    string
}

func machineInfo(e *env) machine {
	m := machine{CPUs: cpuCount(), CPU: cpuModel(), Kernel: output("uname", "-r")}
	m.Go = output("go", "version")
	m.Mosquitto = strings.TrimSpace(strings.SplitN(output("mosquitto", "-h"), "\n", 2)[0])
	m.Commit = e.commit
	return m
}

// commitOf returns the commit of repo, with "-dirty" when tracked files
// other than docs/benchmarks.md, which each run rewrites, have changes.
func commitOf(repo string) string {
	git := func(args ...string) (string, error) {
		cmd := exec.Command("git", args...)
		cmd.Dir = repo
		b, err := cmd.Output()
		return strings.TrimSpace(string(b)), err
	}
	commit, err := git("rev-parse", "--short", "HEAD")
	if err != nil {
		return ""
	}
	changed, err := git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)docs/benchmarks.md")
	if err != nil || changed != "" {
		commit += "-dirty"
	}
	return commit
}

func output(name string, args ...string) string {
	b, _ := exec.Command(name, args...).CombinedOutput()
	return strings.TrimSpace(string(b))
}

func cpuCount() int {
	var n int
	fmt.Sscan(output("nproc"), &n)
	return n
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}
