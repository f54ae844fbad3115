package metrics

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mqspool/mqspool/internal/spool"
)

// desc is one metric of the snapshot collector.
type desc struct {
	d    *prometheus.Desc
	kind prometheus.ValueType
}

func gauge(name, help string, labels ...string) desc {
	return desc{prometheus.NewDesc(name, help, labels, nil), prometheus.GaugeValue}
}

func counter(name, help string, labels ...string) desc {
	return desc{prometheus.NewDesc(name, help, labels, nil), prometheus.CounterValue}
}

// snapshotCollector reads the Stats snapshots at scrape time.
type snapshotCollector struct {
	src Sources

	queueMessages, queueBytes, oldestAge                  desc
	ingested, ingestedFiles, published, acked             desc
	movedFailed, failed, dropped, expired                 desc
	downgraded, deferred                                  desc
	inflight, reconnects, connected, paused               desc
	failedFiles, diskPressure, spoolFull, waiting, expiry desc
	commitSeconds                                         *prometheus.Desc
}

func newSnapshotCollector(src Sources) *snapshotCollector {
	return &snapshotCollector{
		src:           src,
		queueMessages: gauge("mqspool_queue_messages", "Messages stored in the spool database and not yet acknowledged."),
		queueBytes:    gauge("mqspool_queue_bytes", "Size of the queued messages in bytes."),
		oldestAge:     gauge("mqspool_queue_oldest_age_seconds", "Age of the oldest queued message; 0 when the queue is empty."),
		ingested:      counter("mqspool_ingested_messages_total", "Messages committed to the spool database from the spool directory."),
		ingestedFiles: counter("mqspool_ingested_files_total", "Files taken from the spool directory."),
		published:     counter("mqspool_published_packets_total", "PUBLISH packets written to the broker, resends included."),
		acked:         counter("mqspool_acknowledged_messages_total", "Messages the broker accepted (QoS 0: written)."),
		movedFailed:   counter("mqspool_moved_to_failed_total", "Files and messages moved to failed/ for any reason: bad input at ingest, rejected by the broker or too large for it."),
		failed:        counter("mqspool_broker_failed_messages_total", "Messages the broker rejected for good or that were too large for it; each was also moved to failed/."),
		dropped:       counter("mqspool_dropped_messages_total", "Messages dropped, by reason: qos0_offline, or overflow (spool.overflow drop-oldest, counted since the database was created).", "reason"),
		expired:       counter("mqspool_expired_messages_total", "Messages whose Message Expiry Interval passed before they were sent."),
		downgraded:    counter("mqspool_downgraded_messages_total", "Messages sent with a lower QoS or without retain to fit the broker's limits."),
		deferred:      counter("mqspool_incoming_deferred_messages_total", "Times an incoming QoS 1 or 2 message was left unacknowledged, because the daemon held as many as it takes or an earlier message on its topic was left so on the same connection. The broker sends it again after a reconnect."),
		inflight:      gauge("mqspool_inflight_messages", "QoS 1 and 2 messages sent and not yet acknowledged."),
		reconnects:    counter("mqspool_reconnects_total", "Connections accepted after the first one."),
		connected:     gauge("mqspool_connected", "1 while connected to a broker, else 0."),
		paused:        gauge("mqspool_paused", "1 while publishing is paused by mqspool ctl pause, else 0."),
		failedFiles:   gauge("mqspool_failed_files", "Files waiting in failed/, not counting the .reason files."),
		diskPressure:  gauge("mqspool_disk_pressure", "1 while ingest is paused for lack of free disk space, else 0."),
		spoolFull:     gauge("mqspool_spool_full", "1 while spool.max_bytes or spool.max_messages holds ingest back, else 0."),
		waiting:       gauge("mqspool_pickup_waiting_files", "Files held back in new/ by a full spool, disk pressure or a store error."),
		expiry:        gauge("mqspool_client_certificate_expiry_timestamp_seconds", "Expiry (NotAfter) of the client certificate in broker.tls.cert_file, as a Unix time."),
		commitSeconds: prometheus.NewDesc("mqspool_spool_commit_seconds",
			"Time each commit of the spool database since the start spent writing and syncing the file (fdatasync of the data pages, then of the meta page).", nil, nil),
	}
}

func (c *snapshotCollector) all() []desc {
	return []desc{
		c.queueMessages, c.queueBytes, c.oldestAge, c.ingested, c.ingestedFiles,
		c.published, c.acked, c.movedFailed, c.failed, c.dropped, c.expired, c.downgraded,
		c.deferred, c.inflight, c.reconnects, c.connected, c.paused, c.failedFiles,
		c.diskPressure, c.spoolFull, c.waiting, c.expiry,
	}
}

// Describe sends every metric's description.
func (c *snapshotCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.all() {
		ch <- d.d
	}
	ch <- c.commitSeconds
}

// Collect takes one snapshot of each source and sends the values.
func (c *snapshotCollector) Collect(ch chan<- prometheus.Metric) {
	emit := func(d desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d.d, d.kind, v, labels...)
	}
	ls, ss, ps := c.src.Loop(), c.src.Spool(), c.src.Pickup()

	// Queue.
	emit(c.queueMessages, float64(ss.Messages))
	emit(c.queueBytes, float64(ss.Bytes))
	age := 0.0
	if !ss.Oldest.IsZero() {
		age = time.Since(ss.Oldest).Seconds()
	}
	emit(c.oldestAge, age)

	// Message counters.
	emit(c.ingested, float64(ps.MessagesIngested))
	emit(c.ingestedFiles, float64(ps.FilesIngested))
	emit(c.published, float64(ls.Published))
	emit(c.acked, float64(ls.Acked))
	emit(c.movedFailed, float64(ps.FilesFailed))
	emit(c.failed, float64(ls.Failed))
	emit(c.dropped, float64(ls.Dropped), "qos0_offline")
	emit(c.dropped, float64(ss.Dropped), "overflow")
	emit(c.expired, float64(ls.Expired))
	emit(c.downgraded, float64(ls.Downgraded))
	emit(c.deferred, float64(ls.IncomingDeferred))

	// Connection and intake state.
	emit(c.inflight, float64(ls.Inflight))
	emit(c.reconnects, float64(ls.Reconnects))
	emit(c.connected, boolValue(ls.Connected))
	emit(c.paused, boolValue(ls.Paused))
	emit(c.diskPressure, boolValue(ps.DiskPressure))
	emit(c.spoolFull, boolValue(ps.SpoolFull))
	emit(c.waiting, float64(ps.Waiting))
	if c.src.FailedFiles != nil {
		emit(c.failedFiles, float64(c.src.FailedFiles()))
	}
	if notAfter, ok := certExpiry(c.src.CertFile); ok {
		emit(c.expiry, float64(notAfter.Unix()))
	}
	ch <- commitHistogram(c.commitSeconds, ss.Commits)
}

// commitHistogram converts the spool's commit times to a histogram.
func commitHistogram(d *prometheus.Desc, ct spool.CommitTimes) prometheus.Metric {
	buckets := make(map[float64]uint64, len(ct.Buckets))
	for i, n := range ct.Buckets {
		buckets[spool.CommitBuckets[i]] = n
	}
	return prometheus.MustNewConstHistogram(d, ct.Count, ct.Sum.Seconds(), buckets)
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// certExpiry reads the first certificate of a PEM file at every scrape, so
// a rotated certificate shows at once. A missing or unreadable file yields
// no sample; the connect attempt logs why.
func certExpiry(file string) (time.Time, bool) {
	if file == "" {
		return time.Time{}, false
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return time.Time{}, false
	}
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return time.Time{}, false
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return time.Time{}, false
		}
		return cert.NotAfter, true
	}
}
