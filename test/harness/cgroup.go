package harness

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// MemoryCgroup is a memory cgroup that the test created, with a limit.
type MemoryCgroup struct {
	Dir string
	// v2 is set for the unified hierarchy (memory.max), unset for v1
	// (memory.limit_in_bytes).
	v2 bool
}

// NewMemoryCgroup creates a memory cgroup limited to limit bytes, or skips
// the test when this machine does not let the test create one (it needs
// root and a writable cgroup file system). The cgroup is removed when the
// test ends, after the processes in it have exited.
func NewMemoryCgroup(t testing.TB, limit int64) *MemoryCgroup {
	t.Helper()
	name := fmt.Sprintf("mqspool-test-%d", os.Getpid())
	var cg *MemoryCgroup
	var err error
	if _, statErr := os.Stat("/sys/fs/cgroup/memory/memory.limit_in_bytes"); statErr == nil {
		cg = &MemoryCgroup{Dir: filepath.Join("/sys/fs/cgroup/memory", name)}
		err = cg.create("memory.limit_in_bytes", limit)
	} else {
		cg = &MemoryCgroup{Dir: filepath.Join("/sys/fs/cgroup", name), v2: true}
		err = cg.create("memory.max", limit)
	}
	if err != nil {
		t.Skipf("cannot create a memory cgroup with a %d-byte limit: %v", limit, err)
	}
	t.Cleanup(func() {
		// The kernel refuses to remove a cgroup until its last process has
		// been reaped, which can take a moment after the daemon exits.
		deadline := time.Now().Add(5 * time.Second)
		for os.Remove(cg.Dir) != nil && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
	})
	return cg
}

func (cg *MemoryCgroup) create(limitFile string, limit int64) error {
	if err := os.Mkdir(cg.Dir, 0o755); err != nil {
		return err
	}
	err := os.WriteFile(filepath.Join(cg.Dir, limitFile), []byte(strconv.FormatInt(limit, 10)), 0o644)
	if err == nil && !cg.v2 {
		// Without this, v1 lets the cgroup swap instead of reclaiming.
		swap := filepath.Join(cg.Dir, "memory.memsw.limit_in_bytes")
		if _, statErr := os.Stat(swap); statErr == nil {
			err = os.WriteFile(swap, []byte(strconv.FormatInt(limit, 10)), 0o644)
		}
	}
	if err != nil {
		os.Remove(cg.Dir)
		return fmt.Errorf("set %s: %w", limitFile, err)
	}
	return nil
}

// Wrap returns a Daemon.Wrap command that moves the daemon into the cgroup
// before it starts, so that the limit applies from its first allocation.
func (cg *MemoryCgroup) Wrap() []string {
	script := fmt.Sprintf(`echo $$ > %s/cgroup.procs && exec "$@"`, cg.Dir)
	return []string{"sh", "-c", script, "sh"}
}

// OOMKills returns how many processes the kernel killed in the cgroup for
// want of memory, or an error when the kernel does not count them.
func (cg *MemoryCgroup) OOMKills() (int, error) {
	name := "memory.events"
	if !cg.v2 {
		name = "memory.oom_control"
	}
	data, err := os.ReadFile(filepath.Join(cg.Dir, name))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "oom_kill "); ok {
			return strconv.Atoi(strings.TrimSpace(rest))
		}
	}
	return 0, errors.New("no oom_kill count in " + name)
}
