// Command mqbench measures mqspool's drain, ingest, memory and disk use
// side by side with mosquitto_pub and the durable modes of two Go MQTT
// clients, on one mosquitto that it starts on 127.0.0.1, and writes the
// results to docs/benchmarks.md. "make bench" runs it; BENCH_SCALE=small
// runs a tenth of the sizes for a quick check.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

func main() {
	scale := flag.String("scale", envOr("BENCH_SCALE", "full"), "full or small (a tenth of the messages)")
	out := flag.String("out", filepath.Join("..", "docs", "benchmarks.md"), "markdown file to write the results to")
	repo := flag.String("repo", "..", "root of the mqspool repository, where ./cmd/mqspool is built")
	only := flag.String("only", "", "comma-separated sections to run (drain,clients,ingest,memory,disk,profile); empty runs all")
	keep := flag.String("keep-profiles", "", "directory to copy the pprof files and the profiling binary into; empty keeps none")
	pqos := flag.Int("profile-qos", 1, "QoS of the messages in the drain profile, 1 or 2")
	dqos := flag.Int("drain-qos", 0, "run the drain rows of this QoS only, 1 or 2; 0 runs both")
	flag.Parse()

	if *pqos != 1 && *pqos != 2 {
		fmt.Fprintf(os.Stderr, "mqbench: -profile-qos %d: use 1 or 2\n", *pqos)
		os.Exit(2)
	}
	switch *dqos {
	case 0:
	case 1, 2:
		drainQoS = []byte{byte(*dqos)}
	default:
		fmt.Fprintf(os.Stderr, "mqbench: -drain-qos %d: use 1, 2, or 0 for both\n", *dqos)
		os.Exit(2)
	}
	keepProfiles = *keep
	profileQoS = byte(*pqos)
	if err := run(*scale, *out, *repo, *only); err != nil {
		fmt.Fprintln(os.Stderr, "mqbench:", err)
		os.Exit(1)
	}
}

func envOr(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}

// run prepares the environment, runs the selected sections in a fixed
// order and writes the report, also when a section failed, so that the
// numbers measured before the failure are kept.
func run(scale, out, repo, only string) error {
	sz, err := sizesFor(scale)
	if err != nil {
		return err
	}
	env, err := newEnv(repo, sz)
	if err != nil {
		return err
	}
	defer env.close()

	rep := &report{scale: scale, sizes: sz, command: commandLine(scale)}
	var failed []string
	for _, sec := range sections() {
		if only != "" && !strings.Contains(","+only+",", ","+sec.name+",") {
			continue
		}
		fmt.Fprintf(os.Stderr, "== %s\n", sec.name)
		if err := sec.run(env, rep); err != nil {
			fmt.Fprintf(os.Stderr, "section %s failed: %v\n", sec.name, err)
			rep.notes = append(rep.notes, fmt.Sprintf("Section %s failed: %v", sec.name, err))
			failed = append(failed, sec.name)
		}
	}

	text := rep.markdown(machineInfo(env))
	fmt.Print(rep.table())
	if err := writeKeepingAnalysis(out, text); err != nil {
		return err
	}
	if len(failed) > 0 {
		return fmt.Errorf("sections failed: %s", strings.Join(failed, ", "))
	}
	return nil
}

func commandLine(scale string) string {
	if scale == "full" {
		return "make bench"
	}
	return "make bench BENCH_SCALE=" + scale
}

// section is one group of measurements.
type section struct {
	name string
	run  func(*env, *report) error
}

func sections() []section {
	return []section{
		{"drain", runDrain},
		{"clients", runClients},
		{"ingest", runIngest},
		{"memory", runMemory},
		{"disk", runDisk},
		{"profile", runProfile},
	}
}
