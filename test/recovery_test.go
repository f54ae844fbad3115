package test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/mqspool/mqspool/internal/message"
	"github.com/mqspool/mqspool/internal/spool"
	"github.com/mqspool/mqspool/test/harness"
)

// TestRecovery_DamagedDatabase damages the stopped daemon's database in
// two ways. Each time the daemon must start within 5 s, keep the damaged
// file (renamed aside, never deleted) and forward new files.
func TestRecovery_DamagedDatabase(t *testing.T) {
	damage := map[string]func(t *testing.T, path string){
		"truncated": func(t *testing.T, path string) {
			// Cut into the pages in use, not only the preallocated tail.
			if err := os.Truncate(path, inUseSize(t, path)*6/10); err != nil {
				t.Fatal(err)
			}
		},
		"zeroed page": func(t *testing.T, path string) {
			// The root page of the messages is in use; a page picked by
			// its offset alone may be a free one, which harms nothing.
			off, size := rootPage(t, path, "messages")
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.WriteAt(make([]byte, size), off); err != nil {
				t.Fatal(err)
			}
		},
	}
	for name, hurt := range damage {
		t.Run(name, func(t *testing.T) {
			broker := harness.StartBroker(t, "")
			broker.Stop()
			d := harness.NewDaemon(t, broker.URL(), "")
			d.DumpOnFailure()
			d.Start()
			for i := range 300 {
				d.Drop(fmt.Sprintf("old-%03d.msg", i), []byte(fmt.Sprintf("Topic: old/t\n\n%s-%03d", strings.Repeat("p", 500), i)))
			}
			harness.WaitFor(t, 30*time.Second, "new/ empty", d.NewEmpty)
			if code := d.Stop(10 * time.Second); code != 0 {
				t.Fatalf("exit code %d", code)
			}
			hurt(t, d.DB)

			broker.Start()
			sub := harness.Subscribe(t, broker.Addr(), "fresh/#", 1)
			start := time.Now()
			d.Start()
			harness.WaitFor(t, 5*time.Second, "control socket after start", func() bool {
				_, err := os.Stat(d.Socket)
				return err == nil
			})
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("start took %s with a damaged database, want under 5 s", took)
			}
			d.Drop("fresh.msg", []byte("Topic: fresh/t\n\nafter the damage"))
			sub.WaitCount(1, 20*time.Second)

			aside, _ := filepath.Glob(d.DB + ".corrupt-*")
			if len(aside) != 1 {
				t.Fatalf("renamed-aside files %v, want exactly one", aside)
			}
			if !strings.Contains(d.Log(), "level=ERROR") {
				t.Errorf("no error logged for the damaged database")
			}

			// Salvage copies what is still readable back into new/.
			old := harness.Subscribe(t, broker.Addr(), "old/#", 1)
			out, err := exec.Command(d.Bin, "spool", "salvage", "--config", d.Config, aside[0]).Output()
			if err != nil {
				t.Fatalf("salvage: %v\n%s", err, out)
			}
			var copied, skipped int
			if i := strings.Index(string(out), "salvaged "); i >= 0 {
				fmt.Sscanf(string(out)[i:], "salvaged %d messages", &copied)
			}
			if i := strings.Index(string(out), "skipped "); i >= 0 {
				fmt.Sscanf(string(out)[i:], "skipped %d", &skipped)
			}
			if copied == 0 {
				t.Fatalf("salvage copied nothing: %s", out)
			}
			old.WaitCount(copied, 30*time.Second)
			t.Logf("salvaged %d of 300 messages, %d unreadable", copied, skipped)
		})
	}
}

// TestRecovery_DamageFoundWhileRunning damages a database too large for
// the check at a clean start. The daemon finds the damage while it drains
// and must exit 1, so that systemd starts it again, and the next start
// renames the file aside and forwards new files.
func TestRecovery_DamageFoundWhileRunning(t *testing.T) {
	if testing.Short() {
		t.Skip("writes a 70 MiB database")
	}
	broker := harness.StartBroker(t, "")
	d := harness.NewDaemon(t, broker.URL(), "")
	d.DumpOnFailure()
	fillLarge(t, d.DB, 70_000, 1024)
	// A page picked by its offset alone may be a free one, which the
	// drain never reads. A leaf of 1 KiB messages is read on the way.
	off, size := messageLeaf(t, d.DB)
	f, err := os.OpenFile(d.DB, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(make([]byte, size), off); err != nil {
		t.Fatal(err)
	}
	f.Close()

	d.Start()
	if code := d.ExitCode(60 * time.Second); code != 1 {
		t.Fatalf("exit code %d after the damage was found, want 1", code)
	}
	if !strings.Contains(d.Log(), "stopping because the spool database is damaged") {
		t.Error("the reason for stopping was not logged")
	}

	sub := harness.Subscribe(t, broker.Addr(), "fresh/#", 1)
	d.Start()
	d.Drop("fresh.msg", []byte("Topic: fresh/t\n\nafter the damage"))
	sub.WaitCount(1, 20*time.Second)
	if aside, _ := filepath.Glob(d.DB + ".corrupt-*"); len(aside) != 1 {
		t.Errorf("renamed-aside files %v, want exactly one", aside)
	}
}

// fillLarge stores n messages of size bytes in a new database at path
// through the spool package, in batches, and closes it cleanly.
func fillLarge(t *testing.T, path string, n, size int) {
	t.Helper()
	s, err := spool.Open(spool.Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	payload := []byte(strings.Repeat("x", size))
	for first := 0; first < n; first += 5000 {
		var files []spool.FileBatch
		for i := first; i < min(first+5000, n); i++ {
			files = append(files, spool.FileBatch{
				ID:       spool.FileID{Ino: uint64(i + 1), Name: fmt.Sprintf("large/%06d.msg", i)},
				Messages: []message.Message{{Topic: "large/t", Payload: payload, QoS: 1}},
			})
		}
		if _, err := s.Append(files); err != nil {
			t.Fatal(err)
		}
		if err := s.Forget(fileIDsOf(files)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

func fileIDsOf(files []spool.FileBatch) []spool.FileID {
	ids := make([]spool.FileID, len(files))
	for i, f := range files {
		ids[i] = f.ID
	}
	return ids
}

// TestRecovery_SigtermInAwkwardStates sends SIGTERM while the daemon waits
// on a stopped broker, a full send buffer, a backoff sleep, a second
// signal and a large ingest: it must exit 0 within 5 s every time and
// leave the database free for the next start.
func TestRecovery_SigtermInAwkwardStates(t *testing.T) {
	states := []struct {
		name  string
		setup func(t *testing.T, b *harness.Broker, p *harness.Proxy, d *harness.Daemon)
	}{
		{"broker stopped with SIGSTOP", func(t *testing.T, b *harness.Broker, p *harness.Proxy, d *harness.Daemon) {
			d.Drop("a.msg", []byte("Topic: t\nQoS: 1\n\na"))
			time.Sleep(300 * time.Millisecond)
			b.Pause()
			t.Cleanup(b.Resume)
			d.Drop("b.msg", []byte("Topic: t\nQoS: 1\n\nb"))
			time.Sleep(300 * time.Millisecond)
		}},
		{"send buffer full", func(t *testing.T, b *harness.Broker, p *harness.Proxy, d *harness.Daemon) {
			p.SetMode(harness.Stall)
			t.Cleanup(func() { p.SetMode(harness.Pass) })
			big := strings.Repeat("x", 900<<10)
			for i := range 20 {
				d.Drop(fmt.Sprintf("big-%d.msg", i), []byte("Topic: t\nQoS: 1\n\n"+big))
			}
			time.Sleep(time.Second)
		}},
		{"backoff sleep", func(t *testing.T, b *harness.Broker, p *harness.Proxy, d *harness.Daemon) {
			b.Stop()
			time.Sleep(1500 * time.Millisecond)
		}},
		{"two signals 100 ms apart", func(t *testing.T, b *harness.Broker, p *harness.Proxy, d *harness.Daemon) {
			d.Signal(syscall.SIGTERM)
			time.Sleep(100 * time.Millisecond)
		}},
		{"large ingest", func(t *testing.T, b *harness.Broker, p *harness.Proxy, d *harness.Daemon) {
			for i := range 3000 {
				d.Drop(fmt.Sprintf("n-%05d.msg", i), []byte(fmt.Sprintf("Topic: t\n\n%d", i)))
			}
		}},
	}
	for _, s := range states {
		t.Run(s.name, func(t *testing.T) {
			broker := harness.StartBroker(t, "")
			proxy := harness.StartProxy(t, broker.Addr())
			d := harness.NewDaemon(t, proxy.URL(), "publish:\n  max_message_bytes: 1MiB\n")
			d.DumpOnFailure()
			d.Start()
			harness.WaitFor(t, 10*time.Second, "first connection", func() bool { return proxy.Accepted() >= 1 })
			s.setup(t, broker, proxy, d)

			start := time.Now()
			if code := d.Stop(8 * time.Second); code != 0 {
				t.Errorf("exit code %d, want 0", code)
			}
			// The drain may use all of its 5 s. Closing the connection and
			// the database takes a few milliseconds more, and a loaded
			// machine may need longer.
			if took := time.Since(start); took > 6500*time.Millisecond {
				t.Errorf("SIGTERM took %s, want within the 5 s drain deadline plus 1.5 s", took)
			}

			// The next start must find the database unlocked.
			begin := time.Now()
			d.Start()
			harness.WaitFor(t, 3*time.Second, "spool opened after restart", func() bool {
				return strings.Count(d.Log(), "spool opened") >= 2
			})
			if took := time.Since(begin); took > 2*time.Second {
				t.Errorf("restart took %s to open the spool: the lock was not released", took)
			}
		})
	}
}

// inUseSize returns the bytes of the database's pages in use, which ends
// before the file's preallocated tail.
// rootPage returns the offset and size of the root page of a top-level
// bucket.
func rootPage(t *testing.T, path, bucket string) (off int64, size int) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()

	size = db.Info().PageSize
	err = db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(bucket))
		if b == nil || b.Root() == 0 {
			return fmt.Errorf("bucket %q has no page of its own", bucket)
		}
		off = int64(b.Root()) * int64(size)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return off, size
}

// messageLeaf returns the offset and size of a leaf page in the second
// half of the file with at most four values. After fillLarge only the
// leaves of the messages bucket, with values of 1 KiB, hold so few; the
// other buckets' leaves hold many small values.
func messageLeaf(t *testing.T, path string) (off int64, size int) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()

	size = db.Info().PageSize
	err = db.View(func(tx *bolt.Tx) error {
		pages := int(tx.Size() / int64(size))
		for id := pages / 2; id < pages; id++ {
			info, err := tx.Page(id)
			if err != nil {
				return err
			}
			if info != nil && info.Type == "leaf" && info.Count > 0 && info.Count <= 4 && info.OverflowCount == 0 {
				off = int64(id) * int64(size)
				return nil
			}
		}
		return errors.New("no leaf of messages in the second half of the file")
	})
	if err != nil {
		t.Fatal(err)
	}
	return off, size
}

func inUseSize(t *testing.T, path string) int64 {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()

	var size int64
	db.View(func(tx *bolt.Tx) error {
		size = tx.Size()
		return nil
	})
	return size
}
