package metrics

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mqspool/mqspool/internal/eventloop"
	"github.com/mqspool/mqspool/internal/pickup"
	"github.com/mqspool/mqspool/internal/spool"
)

// writeCert writes a self-signed certificate that expires at notAfter.
func writeCert(t *testing.T, notAfter time.Time) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "gateway"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     notAfter,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "client.crt")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestMetrics_SnapshotValues(t *testing.T) {
	notAfter := time.Now().Add(30 * 24 * time.Hour).Truncate(time.Second)
	m := New(Sources{
		Loop: func() eventloop.Stats {
			return eventloop.Stats{Connected: true, Inflight: 3, Published: 12, Acked: 10, Failed: 1, Dropped: 2, Reconnects: 4, IncomingDeferred: 6}
		},
		Spool: func() spool.Stats {
			commits := spool.CommitTimes{Count: 11, Sum: 40 * time.Millisecond, Buckets: make([]uint64, len(spool.CommitBuckets))}
			for i := range commits.Buckets {
				commits.Buckets[i] = 11
			}
			return spool.Stats{Messages: 7, Bytes: 700, Dropped: 5, Commits: commits}
		},
		Pickup: func() pickup.Stats {
			return pickup.Stats{MessagesIngested: 20, FilesIngested: 8, FilesFailed: 2, SpoolFull: true, Waiting: 9}
		},
		FailedFiles: func() int { return 2 },
		CertFile:    writeCert(t, notAfter),
	})
	m.ObserveOutcome(eventloop.Outcome{Kind: eventloop.Delivered, Latency: 20 * time.Millisecond})
	m.ObserveOutcome(eventloop.Outcome{Kind: eventloop.Failed, ReasonCode: 0x95})

	values := gather(t, m)
	want := map[string]float64{
		"mqspool_client_certificate_expiry_timestamp_seconds":   float64(notAfter.Unix()),
		"mqspool_inflight_messages":                             3,
		"mqspool_queue_messages":                                7,
		"mqspool_queue_bytes":                                   700,
		"mqspool_connected":                                     1,
		"mqspool_published_packets_total":                       12,
		"mqspool_acknowledged_messages_total":                   10,
		"mqspool_broker_failed_messages_total":                  1,
		"mqspool_moved_to_failed_total":                         2,
		"mqspool_ingested_messages_total":                       20,
		"mqspool_reconnects_total":                              4,
		"mqspool_incoming_deferred_messages_total":              6,
		"mqspool_failed_files":                                  2,
		"mqspool_spool_full":                                    1,
		"mqspool_pickup_waiting_files":                          9,
		`mqspool_dropped_messages_total{reason="qos0_offline"}`: 2,
		`mqspool_dropped_messages_total{reason="overflow"}`:     5,
		`mqspool_broker_rejections_total{reason_code="0x95"}`:   1,
		"mqspool_ack_latency_seconds_count":                     1,
		"mqspool_spool_commit_seconds_count":                    11,
	}
	for name, v := range want {
		if got, ok := values[name]; !ok || got != v {
			t.Errorf("%s = %v (present %t), want %v", name, got, ok, v)
		}
	}
}

// The documented metrics that TestMetrics_SnapshotValues leaves out each
// take their value from their own source field.
func TestMetrics_SnapshotStateValues(t *testing.T) {
	oldest := time.Now().Add(-time.Hour)
	m := New(Sources{
		Loop: func() eventloop.Stats {
			return eventloop.Stats{Paused: true, Expired: 3, Downgraded: 5}
		},
		Spool: func() spool.Stats {
			return spool.Stats{Messages: 1, Oldest: oldest}
		},
		Pickup: func() pickup.Stats {
			return pickup.Stats{MessagesIngested: 40, FilesIngested: 7, DiskPressure: true}
		},
	})

	values := gather(t, m)
	want := map[string]float64{
		"mqspool_paused":                    1,
		"mqspool_connected":                 0,
		"mqspool_disk_pressure":             1,
		"mqspool_spool_full":                0,
		"mqspool_ingested_files_total":      7,
		"mqspool_expired_messages_total":    3,
		"mqspool_downgraded_messages_total": 5,
	}
	for name, v := range want {
		if got, ok := values[name]; !ok || got != v {
			t.Errorf("%s = %v (present %t), want %v", name, got, ok, v)
		}
	}

	// The age grows during the test, so only a lower bound is exact.
	age, ok := values["mqspool_queue_oldest_age_seconds"]
	if !ok {
		t.Fatal("mqspool_queue_oldest_age_seconds missing")
	}
	if age < time.Hour.Seconds() {
		t.Errorf("mqspool_queue_oldest_age_seconds = %v, want at least %v", age, time.Hour.Seconds())
	}
}

// gather returns every sample by name and labels, histograms by their
// _count.
func gather(t *testing.T, m *Metrics) map[string]float64 {
	t.Helper()
	families, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	values := make(map[string]float64)
	for _, f := range families {
		for _, s := range f.GetMetric() {
			name := f.GetName()
			if lp := s.GetLabel(); len(lp) > 0 {
				name += "{" + lp[0].GetName() + "=\"" + lp[0].GetValue() + "\"}"
			}
			switch {
			case s.GetGauge() != nil:
				values[name] = s.GetGauge().GetValue()
			case s.GetCounter() != nil:
				values[name] = s.GetCounter().GetValue()
			case s.GetHistogram() != nil:
				values[name+"_count"] = float64(s.GetHistogram().GetSampleCount())
			}
		}
	}
	return values
}

func TestMetrics_NoCertFile(t *testing.T) {
	if _, ok := certExpiry(""); ok {
		t.Error("certExpiry of an empty path returned a value")
	}
	if _, ok := certExpiry(filepath.Join(t.TempDir(), "missing.crt")); ok {
		t.Error("certExpiry of a missing file returned a value")
	}
}
