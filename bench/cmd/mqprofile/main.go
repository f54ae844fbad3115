// Command mqprofile runs the mqspool daemon in-process with a CPU, an
// allocation and a block profile, because the daemon has no pprof
// endpoint. It takes the same config file as "mqspool run", stops on
// SIGTERM or SIGINT and writes the profiles then. mqbench uses it for the drain and
// ingest profiles.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"reflect"
	"runtime"
	"runtime/pprof"
	"syscall"

	"github.com/mqspool/mqspool/internal/config"
	"github.com/mqspool/mqspool/internal/daemon"
	"github.com/mqspool/mqspool/internal/spool"
)

// blockRate samples goroutines that block for about 10 µs or longer on
// channels, selects and locks. Recording every event would slow the
// drain it measures.
const blockRate = 10_000

func main() {
	spool.ServeCheck()
	cfgPath := flag.String("config", "", "mqspool config file")
	cpuPath := flag.String("cpu", "cpu.pprof", "CPU profile output")
	allocPath := flag.String("allocs", "allocs.pprof", "allocation profile output")
	blockPath := flag.String("block", "block.pprof", "block profile output")
	flag.Parse()
	if err := run(*cfgPath, *cpuPath, *allocPath, *blockPath); err != nil {
		fmt.Fprintln(os.Stderr, "mqprofile:", err)
		os.Exit(1)
	}
}

func run(cfgPath, cpuPath, allocPath, blockPath string) error {
	loaded, err := config.Load(config.LoadOptions{File: cfgPath})
	if err != nil {
		return fmt.Errorf("load config %s: %w", cfgPath, err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	d, err := newDaemon(loaded.Config, log)
	if err != nil {
		return err
	}

	cpu, err := os.Create(cpuPath)
	if err != nil {
		return fmt.Errorf("create CPU profile %s: %w", cpuPath, err)
	}
	defer cpu.Close()
	if err := pprof.StartCPUProfile(cpu); err != nil {
		return fmt.Errorf("start CPU profile: %w", err)
	}
	runtime.SetBlockProfileRate(blockRate)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	runErr := d.Run(ctx, context.Background())
	pprof.StopCPUProfile()
	return errors.Join(runErr, writeProfile("allocs", allocPath), writeProfile("block", blockPath))
}

// writeProfile writes the named runtime profile to path.
func writeProfile(name, path string) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("create %s profile %s: %w", name, path, err)
	}
	defer f.Close()
	if err := pprof.Lookup(name).WriteTo(f, 0); err != nil {
		return fmt.Errorf("write %s profile %s: %w", name, path, err)
	}
	return nil
}

// newDaemon calls daemon.New with the config and the logger, and zero
// values for any further parameters (a later daemon.New also takes the
// logger's level, which nil leaves fixed), so this wrapper builds against
// either form.
func newDaemon(cfg *config.Config, log *slog.Logger) (*daemon.Daemon, error) {
	fn := reflect.ValueOf(daemon.New)
	args := []reflect.Value{reflect.ValueOf(cfg), reflect.ValueOf(log)}
	for i := len(args); i < fn.Type().NumIn(); i++ {
		args = append(args, reflect.Zero(fn.Type().In(i)))
	}
	out := fn.Call(args)
	if err, _ := out[1].Interface().(error); err != nil {
		return nil, fmt.Errorf("start daemon: %w", err)
	}
	return out[0].Interface().(*daemon.Daemon), nil
}
