// Package metrics exposes the daemon's state as Prometheus metrics.
//
// Gauges and counters are read from the Stats snapshots of the event loop,
// the spool and the pickup at scrape time, one snapshot of each per
// scrape, so no counter is kept twice. Only what the snapshots lack is
// counted here: the publish-to-acknowledgement latency and broker
// rejections by reason code, fed by [Metrics.ObserveOutcome] from the
// goroutine that drives the event loop.
package metrics

import (
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mqspool/mqspool/internal/eventloop"
	"github.com/mqspool/mqspool/internal/pickup"
	"github.com/mqspool/mqspool/internal/spool"
)

// Sources are the functions whose snapshots a scrape reads. Each must be
// safe to call from any goroutine.
type Sources struct {
	Loop   func() eventloop.Stats
	Spool  func() spool.Stats
	Pickup func() pickup.Stats
	// FailedFiles counts the files waiting in failed/.
	FailedFiles func() int
	// CertFile is the client certificate (broker.tls.cert_file) whose
	// expiry is exported; empty exports none.
	CertFile string
}

// Metrics is the registry with mqspool's collectors.
type Metrics struct {
	reg        *prometheus.Registry
	ackLatency prometheus.Histogram
	rejections *prometheus.CounterVec
}

// latencyBuckets span a loopback broker (milliseconds) to a congested
// cellular link (tens of seconds), in seconds.
var latencyBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

// New returns the metrics for src, with the Go runtime and process
// collectors included.
func New(src Sources) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		ackLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "mqspool_ack_latency_seconds",
			Help:    "Time from the first send of a QoS 1 or 2 message to the broker's acknowledgement.",
			Buckets: latencyBuckets,
		}),
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mqspool_broker_rejections_total",
			Help: "Messages the broker rejected for good, by reason code; they were moved to failed/.",
		}, []string{"reason_code"}),
	}
	m.reg.MustRegister(
		m.ackLatency,
		m.rejections,
		newSnapshotCollector(src),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// ObserveOutcome records the latency of a delivered message and the
// reason code of a rejected one.
func (m *Metrics) ObserveOutcome(o eventloop.Outcome) {
	switch o.Kind {
	case eventloop.Delivered:
		if o.Latency > 0 {
			m.ackLatency.Observe(o.Latency.Seconds())
		}
	case eventloop.Failed:
		code := "none"
		if o.ReasonCode != 0 {
			code = fmt.Sprintf("0x%02X", o.ReasonCode)
		}
		m.rejections.WithLabelValues(code).Inc()
	}
}

// Handler serves the metrics in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Timeout: 10 * time.Second})
}

// Registry returns the registry, for tests that gather directly.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }
