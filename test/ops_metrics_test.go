package test

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mqspool/mqspool/test/harness"
)

// opsScrape fetches /metrics and returns each sample line's value by its
// name and labels as written, for example
// `mqspool_dropped_messages_total{reason="overflow"}`.
func opsScrape(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape metrics: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("scrape metrics: status %s\n%s", resp.Status, body)
	}
	samples := make(map[string]float64)
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") || line == "" {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q has no number: %v", line, err)
		}
		samples[line[:i]] = v
	}
	return samples
}

// TestOpsMetrics_AfterWorkload forwards five messages, rejects one bad
// file at ingest and has the broker reject one large message, then checks
// the scraped values.
func TestOpsMetrics_AfterWorkload(t *testing.T) {
	b := harness.StartBroker(t, "message_size_limit 1024")
	addr := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	d := harness.NewDaemon(t, b.URL(), "metrics:\n  listen: "+addr+"\n")
	d.DumpOnFailure()
	d.Start()
	opsConnected(t, d)

	opsDropMsgs(d, "met/ok", 5)
	d.Drop("bad.msg", []byte("Topic: met/bad\nColour: blue\n\nx"))
	d.Drop("big.msg", []byte("Topic: met/big\nQoS: 1\n\n"+strings.Repeat("x", 4096)))

	var m map[string]float64
	harness.WaitEvery(t, 15*time.Second, 200*time.Millisecond, "all messages done in the metrics", func() bool {
		m = opsScrape(t, addr)
		return m["mqspool_acknowledged_messages_total"] >= 5 && m["mqspool_broker_failed_messages_total"] >= 1
	})

	want := map[string]float64{
		"mqspool_ingested_messages_total":                     6,
		"mqspool_ingested_files_total":                        6,
		"mqspool_acknowledged_messages_total":                 5,
		"mqspool_moved_to_failed_total":                       2,
		"mqspool_broker_failed_messages_total":                1,
		`mqspool_broker_rejections_total{reason_code="0x95"}`: 1,
		`mqspool_dropped_messages_total{reason="overflow"}`:   0,
		"mqspool_expired_messages_total":                      0,
		"mqspool_queue_messages":                              0,
		"mqspool_queue_bytes":                                 0,
		"mqspool_queue_oldest_age_seconds":                    0,
		"mqspool_inflight_messages":                           0,
		"mqspool_connected":                                   1,
		"mqspool_paused":                                      0,
		"mqspool_reconnects_total":                            0,
		"mqspool_failed_files":                                2,
		"mqspool_ack_latency_seconds_count":                   5,
	}
	for name, v := range want {
		got, ok := m[name]
		if !ok {
			t.Errorf("metric %s missing", name)
			continue
		}
		if got != v {
			t.Errorf("metric %s = %v, want %v", name, got, v)
		}
	}
	if m["mqspool_published_packets_total"] < 6 {
		t.Errorf("mqspool_published_packets_total = %v, want at least 6", m["mqspool_published_packets_total"])
	}
	// At least the commit of the ingested files and one of the
	// acknowledgements; the committer may group the rest.
	if m["mqspool_spool_commit_seconds_count"] < 2 || m["mqspool_spool_commit_seconds_sum"] <= 0 {
		t.Errorf("mqspool_spool_commit_seconds count %v and sum %v, want at least 2 commits taking some time",
			m["mqspool_spool_commit_seconds_count"], m["mqspool_spool_commit_seconds_sum"])
	}

	opsCtl(t, d, "pause")
	opsDropMsgs(d, "met/held", 3)
	harness.WaitEvery(t, 15*time.Second, 200*time.Millisecond, "3 queued messages in the metrics", func() bool {
		m = opsScrape(t, addr)
		return m["mqspool_queue_messages"] == 3
	})
	if m["mqspool_paused"] != 1 {
		t.Errorf("mqspool_paused = %v while paused, want 1", m["mqspool_paused"])
	}
	if m["mqspool_queue_bytes"] <= 0 {
		t.Errorf("mqspool_queue_bytes = %v with 3 queued, want > 0", m["mqspool_queue_bytes"])
	}
}

// TestOpsMetrics_SpoolFull fills a spool limited by spool.max_messages
// while publishing is paused: the metrics and status show it full with
// files waiting, and after a resume everything arrives and both clear.
func TestOpsMetrics_SpoolFull(t *testing.T) {
	b := harness.StartBroker(t, "")
	sub := harness.Subscribe(t, b.Addr(), "full/#", 1)
	addr := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	d := harness.NewDaemon(t, b.URL(), "metrics:\n  listen: "+addr+"\nspool:\n  max_messages: 3\n")
	d.DumpOnFailure()
	d.Start()
	opsConnected(t, d)
	opsCtl(t, d, "pause")

	opsDropMsgs(d, "full/a", 6)
	var m map[string]float64
	harness.WaitEvery(t, 15*time.Second, 200*time.Millisecond, "a full spool in the metrics", func() bool {
		m = opsScrape(t, addr)
		return m["mqspool_spool_full"] == 1 && m["mqspool_pickup_waiting_files"] == 3
	})
	if m["mqspool_queue_messages"] != 3 {
		t.Errorf("mqspool_queue_messages = %v with spool.max_messages 3, want 3", m["mqspool_queue_messages"])
	}
	st := opsStatus(t, d)
	if st["spool_full"] != true || st["waiting_files"] != float64(3) {
		t.Errorf("status spool_full = %v, waiting_files = %v, want true and 3", st["spool_full"], st["waiting_files"])
	}

	opsCtl(t, d, "resume")
	sub.WaitCount(6, 20*time.Second)
	harness.WaitEvery(t, 15*time.Second, 200*time.Millisecond, "the spool no longer full", func() bool {
		m = opsScrape(t, addr)
		return m["mqspool_spool_full"] == 0 && m["mqspool_pickup_waiting_files"] == 0
	})
}
