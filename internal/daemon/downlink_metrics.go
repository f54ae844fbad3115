package daemon

import (
	"github.com/prometheus/client_golang/prometheus"
)

// downlinkCollector exports the inboxes' counters, labelled by the
// subscription's filter, read when Prometheus scrapes.
type downlinkCollector struct {
	dl                                         *downlink
	received, duplicates, dropped, failed      *prometheus.Desc
	skipped                                    *prometheus.Desc
	backlogFiles, backlogBytes, full, unusable *prometheus.Desc
}

func newDownlinkCollector(dl *downlink) *downlinkCollector {
	desc := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("mqspool_downlink_"+name, help, []string{"filter"}, nil)
	}
	return &downlinkCollector{
		dl:       dl,
		received: desc("received_total", "Received messages written into the subscription's inbox."),
		duplicates: desc("duplicates_total", "Received messages written with the DUP flag set, which the broker sets "+
			"on a PUBLISH it sent before. Not a count of messages stored twice."),
		dropped:      desc("dropped_total", "QoS 0 messages dropped because the inbox was full."),
		failed:       desc("failed_total", "Messages a .msg file cannot hold, moved to the inbox's failed/."),
		backlogFiles: desc("backlog_files", "Files waiting in the inbox's new/ at the last count."),
		backlogBytes: desc("backlog_bytes", "Bytes of the files waiting in the inbox's new/."),
		full:         desc("inbox_full", "1 while the inbox is at max_files or max_bytes and acknowledgements are held."),
		skipped:      desc("skipped_total", "QoS 1 messages not stored because the broker sent them again on a later connection."),
		unusable:     desc("inbox_unusable", "1 while the inbox cannot be written (missing, read-only or full file system) and acknowledgements are held."),
	}
}

// Describe implements prometheus.Collector.
func (c *downlinkCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.received, c.duplicates, c.dropped, c.failed, c.skipped, c.backlogFiles, c.backlogBytes, c.full, c.unusable} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *downlinkCollector) Collect(ch chan<- prometheus.Metric) {
	for i, in := range c.dl.inboxes {
		st := in.Stats()
		filter := c.dl.subs[i].Filter
		counter := func(d *prometheus.Desc, v uint64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), filter)
		}
		gauge := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, filter)
		}
		counter(c.received, st.Received)
		counter(c.duplicates, st.Duplicates)
		counter(c.dropped, st.Dropped)
		counter(c.failed, st.Failed)
		gauge(c.backlogFiles, float64(st.BacklogFiles))
		gauge(c.backlogBytes, float64(st.BacklogBytes))
		full := 0.0
		if st.Full {
			full = 1
		}
		gauge(c.full, full)
		counter(c.skipped, st.Skipped)
		unusable := 0.0
		if st.WriteError != "" {
			unusable = 1
		}
		gauge(c.unusable, unusable)
	}
}
