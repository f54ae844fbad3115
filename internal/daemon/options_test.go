package daemon

import (
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/mqspool/mqspool/internal/config"
)

// A negative spool.min_free_bytes, which validation rejects, is an error
// here too, not a huge unsigned number that would pause ingest for good.
func TestPickupOptions_MinFreeBytes(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := &config.Config{}

	cfg.Spool.MinFreeBytes = 64 << 20
	opts, err := pickupOptions(cfg, log)
	if err != nil {
		t.Fatalf("64MiB: %v", err)
	}
	if opts.MinFreeBytes != 64<<20 {
		t.Errorf("64MiB: MinFreeBytes = %d, want %d", opts.MinFreeBytes, 64<<20)
	}

	cfg.Spool.MinFreeBytes = -1
	opts, err = pickupOptions(cfg, log)
	if err == nil {
		t.Fatalf("-1: no error, MinFreeBytes = %d", opts.MinFreeBytes)
	}
	if want := "spool.min_free_bytes: -1B is negative"; !strings.Contains(err.Error(), want) {
		t.Errorf("-1: error %q does not contain %q", err, want)
	}
}
