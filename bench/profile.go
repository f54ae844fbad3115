package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// keepProfiles is the directory the profiles are copied into, or empty.
var keepProfiles string

// profileQoS is the QoS of the messages in the drain profile.
var profileQoS byte = 1

// profileTop is the top of one pprof profile.
type profileTop struct {
	Title string
	Text  string
}

// runProfile builds cmd/mqprofile, which runs the daemon in-process with
// pprof, and profiles a drain of 1 KiB messages and the ingest of
// each file layout.
func runProfile(e *env, r *report) error {
	bin := filepath.Join(e.work, "mqprofile")
	benchDir, err := filepath.Abs(".")
	if err != nil {
		return fmt.Errorf("resolve bench directory: %w", err)
	}
	if err := goBuild(benchDir, bin, "./cmd/mqprofile"); err != nil {
		return err
	}
	drain, err := profileDrain(e, bin)
	if err != nil {
		return err
	}
	r.profiles = append(r.profiles, drain...)
	for _, k := range ingestKinds(e.sizes) {
		ingest, err := profileIngest(e, bin, k)
		if err != nil {
			return err
		}
		r.profiles = append(r.profiles, ingest...)
	}
	return nil
}

func profileDrain(e *env, bin string) ([]profileTop, error) {
	root, err := e.dir("profile-drain")
	if err != nil {
		return nil, err
	}
	d, err := newDaemon(root, e.broker.url(), e.clientID("profile"))
	if err != nil {
		return nil, err
	}
	if err := prefill(d.db, e.sizes.Drain, 1024, profileQoS); err != nil {
		return nil, err
	}
	e.sub.reset()
	run := func() error {
		_, err := e.sub.wait(int64(e.sizes.Drain), e.sizes.Wait)
		return err
	}
	title := fmt.Sprintf("drain, QoS %d, %d messages of 1 KiB", profileQoS, e.sizes.Drain)
	return profileRun(bin, d, title, run)
}

func profileIngest(e *env, bin string, k ingestKind) ([]profileTop, error) {
	root, err := e.dir("profile-ingest")
	if err != nil {
		return nil, err
	}
	d, err := newDaemon(root, e.downURL, e.clientID("profile"))
	if err != nil {
		return nil, err
	}
	leaf := filepath.Join(d.newDir(), "bench", "data")
	if err := writeFiles(leaf, k, ingestPayload); err != nil {
		return nil, err
	}
	run := func() error {
		_, err := waitEmpty(leaf, e.sizes.Wait)
		return err
	}
	title := fmt.Sprintf("ingest, %d messages of %d B in %d %s", k.Files*k.PerFile, ingestPayload, k.Files, k.Name)
	return profileRun(bin, d, title, run)
}

// profileRun runs the wrapper on d's config until wait returns, stops it
// and returns the CPU and allocation tops.
func profileRun(bin string, d *daemon, title string, wait func() error) ([]profileTop, error) {
	cpu := filepath.Join(d.root, "cpu.pprof")
	allocs := filepath.Join(d.root, "allocs.pprof")
	block := filepath.Join(d.root, "block.pprof")
	if err := startWrapper(bin, d, cpu, allocs, block); err != nil {
		return nil, err
	}

	werr := wait()
	if err := d.stop(); err != nil {
		return nil, fmt.Errorf("stop %s: %w", bin, err)
	}
	if werr != nil {
		return nil, fmt.Errorf("profile %s: %w", title, werr)
	}
	if err := keep(d.root, bin, cpu, allocs, block); err != nil {
		return nil, err
	}
	return readTops(bin, title, cpu, allocs, block)
}

// startWrapper starts the profiling wrapper as d's process.
func startWrapper(bin string, d *daemon, cpu, allocs, block string) error {
	d.cmd = exec.Command(bin, "-config", d.config, "-cpu", cpu, "-allocs", allocs, "-block", block)
	d.exit = make(chan error, 1)
	d.started = time.Now()
	if err := d.cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", bin, err)
	}
	go func() { d.exit <- d.cmd.Wait() }()
	d.pid = d.cmd.Process.Pid
	return nil
}

// readTops returns the flat and cumulative CPU tops, the cumulative
// allocation top and the cumulative top of time spent blocked.
func readTops(bin, title, cpu, allocs, block string) ([]profileTop, error) {
	var tops []profileTop
	for _, v := range []struct{ title, file, index, order string }{
		{"CPU, flat", cpu, "", "-flat"},
		{"CPU, cumulative", cpu, "", "-cum"},
		{"Allocated bytes, cumulative", allocs, "alloc_space", "-cum"},
		{"Time blocked on channels, selects and locks, cumulative", block, "delay", "-cum"},
	} {
		text, err := pprofTop(bin, v.file, v.index, v.order)
		if err != nil {
			return nil, err
		}
		tops = append(tops, profileTop{Title: v.title + ", " + title, Text: text})
	}
	return tops, nil
}

// pprofTop returns the top 25 nodes of profile in order, "-flat" or
// "-cum". The cumulative order shows which of mqspool's functions the
// time or the bytes go through.
func pprofTop(bin, profile, index, order string) (string, error) {
	args := []string{"tool", "pprof", "-top", order, "-nodecount=25"}
	if index != "" {
		args = append(args, "-sample_index="+index)
	}
	out, err := exec.Command("go", append(args, bin, profile)...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go tool pprof %s: %w\n%s", profile, err, out)
	}
	return strings.TrimSpace(string(out)), nil
}

// keep copies files into keepProfiles under the name of their run
// directory, so they outlive the work directory.
func keep(root string, files ...string) error {
	if keepProfiles == "" {
		return nil
	}
	if err := os.MkdirAll(keepProfiles, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", keepProfiles, err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("read %s: %w", f, err)
		}
		dst := filepath.Join(keepProfiles, filepath.Base(root)+"-"+filepath.Base(f))
		if err := os.WriteFile(dst, b, 0o755); err != nil {
			return fmt.Errorf("write %s: %w", dst, err)
		}
	}
	return nil
}
