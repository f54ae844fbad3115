package main

import (
	"fmt"
	"strings"
	"time"
)

// row is one line of the results table.
type row struct {
	Metric    string
	Mqspool   string
	Reference string
	Ratio     string
	Target    string
	// Result is PASS, FAIL, or empty for a row without a target.
	Result string
}

// report collects the results of every section.
type report struct {
	scale   string
	sizes   sizes
	command string
	rows    []row
	// own holds mqspool's drain rates by QoS and payload size, for the
	// client comparisons.
	own      map[string]rate
	memory   []memoryResult
	backlog  []backlogResult
	profiles []profileTop
	details  []string
	notes    []string
}

func drainKey(qos byte, size int) string { return fmt.Sprintf("q%d-%d", qos, size) }

func sizeName(size int) string {
	if size%1024 == 0 {
		return fmt.Sprintf("%d KiB", size/1024)
	}
	return fmt.Sprintf("%d B", size)
}

func passFail(ok bool) string {
	if ok {
		return "PASS"
	}
	return "FAIL"
}

// drainResult grades a drain ratio against the target of at least the
// reference's rate, with 0.8× as the line below which a ratio is a defect.
func drainResult(ratio float64) string {
	switch {
	case ratio >= 1:
		return "PASS"
	case ratio >= 0.8:
		return "SHORT"
	default:
		return "FAIL"
	}
}

func msgRate(r rate) string {
	s := fmt.Sprintf("%.0f msg/s", r.perSecond())
	if r.Bounded {
		s += " (time-bounded)"
	}
	return s
}

func (r *report) addDrain(qos byte, size int, ownRounds, refRounds []rate) {
	own, ref := median(ownRounds), median(refRounds)
	if r.own == nil {
		r.own = map[string]rate{}
	}
	r.own[drainKey(qos, size)] = own
	ratio := own.perSecond() / ref.perSecond()
	r.rows = append(r.rows, row{
		Metric:  fmt.Sprintf("Drain QoS %d, %s", qos, sizeName(size)),
		Mqspool: msgRate(own), Reference: "mosquitto_pub -M 1000: " + msgRate(ref),
		Ratio: fmt.Sprintf("%.2f×", ratio), Target: "≥ 1×, defect below 0.8×", Result: drainResult(ratio),
	})
	r.details = append(r.details, fmt.Sprintf("Drain QoS %d, %s, median of %d rounds: mqspool %d messages in %s, %s CPU per message (the whole process, start and stop included)%s. "+
		"mosquitto_pub %d messages in %s (runs of at most %d lines), %s CPU per message%s. Rounds, mqspool / mosquitto_pub: %s.",
		qos, sizeName(size), len(ownRounds), own.Messages, round(own.Elapsed), own.cpuPerMessage(), own.useText(),
		ref.Messages, round(ref.Elapsed), r.sizes.PubChunk, ref.cpuPerMessage(), ref.useText(),
		roundRatios(ownRounds, refRounds)))
}

// useText describes what the rest of the machine did during the run, or
// nothing when /proc could not be read.
func (r rate) useText() string {
	if r.Use.Broker == 0 || r.Messages == 0 {
		return ""
	}
	n := time.Duration(r.Messages)
	return fmt.Sprintf("; broker %s and subscriber %s CPU per message, machine %.0f %% idle",
		r.Use.Broker/n, r.Use.Subscriber/n, 100*r.Use.IdleShare)
}

// roundRatios lists each round's two rates and their ratio.
func roundRatios(own, ref []rate) string {
	parts := make([]string, len(own))
	for i := range own {
		parts[i] = fmt.Sprintf("%.0f / %.0f msg/s (%.2f×)", own[i].perSecond(), ref[i].perSecond(),
			own[i].perSecond()/ref[i].perSecond())
	}
	return strings.Join(parts, ", ")
}

func (r *report) addClients(size int, store, queue rate) {
	own, ok := r.own[drainKey(1, size)]
	if !ok {
		r.notes = append(r.notes, "Client ratios need the drain section; run it too.")
		return
	}
	for _, c := range []struct {
		name   string
		rate   rate
		target float64
	}{{"paho.mqtt.golang FileStore", store, 10}, {"autopaho file queue", queue, 20}} {
		ratio := own.perSecond() / c.rate.perSecond()
		r.rows = append(r.rows, row{
			Metric:  fmt.Sprintf("Drain QoS 1, %s vs %s", sizeName(size), c.name),
			Mqspool: msgRate(own), Reference: c.name + ": " + msgRate(c.rate),
			Ratio: fmt.Sprintf("%.1f×", ratio), Target: fmt.Sprintf("≥ %.0f×", c.target),
			Result: passFail(ratio >= c.target),
		})
		r.details = append(r.details, fmt.Sprintf("%s, %s: %d messages in %s.", c.name, sizeName(size), c.rate.Messages, round(c.rate.Elapsed)))
	}
}

func (r *report) addIngest(k ingestKind, ownRounds, bareRounds []rate) {
	own, bare := median(ownRounds), median(bareRounds)
	ratio := own.perSecond() / bare.perSecond()
	r.rows = append(r.rows, row{
		Metric:  fmt.Sprintf("Ingest, %s", k.Name),
		Mqspool: msgRate(own), Reference: "readdir + read + unlink: " + msgRate(bare),
		Ratio: fmt.Sprintf("%.2f×", ratio), Target: "≥ 0.5×", Result: passFail(ratio >= 0.5),
	})
	r.details = append(r.details, fmt.Sprintf("Ingest of %d %s (payloads of %d B, %d per file), median of %d rounds: "+
		"mqspool %s from start until new/ was empty; bare loop %s. Rounds, mqspool / bare loop: %s.",
		k.Files, k.Name, ingestPayload, k.PerFile, len(ownRounds), round(own.Elapsed), round(bare.Elapsed),
		roundRatios(ownRounds, bareRounds)))
}

// addIngestDecoded compares the .jsonl ingest with a loop that also
// decodes each line. Against the plain loop, no reader that parses JSON
// can reach 0.5 (docs/benchmarks.md, Analysis).
func (r *report) addIngestDecoded(k ingestKind, ownRounds, decodedRounds []rate) {
	own, decoded := median(ownRounds), median(decodedRounds)
	ratio := own.perSecond() / decoded.perSecond()
	r.rows = append(r.rows, row{
		Metric:    fmt.Sprintf("Ingest, %s, against a loop that decodes the lines", k.Name),
		Mqspool:   msgRate(own),
		Reference: "readdir + read + encoding/json per line + unlink: " + msgRate(decoded),
		Ratio:     fmt.Sprintf("%.2f×", ratio), Target: "≥ 0.5×", Result: passFail(ratio >= 0.5),
	})
	r.details = append(r.details, fmt.Sprintf("Ingest of %d %s with encoding/json decoding each line, median of %d rounds: loop %s. "+
		"Rounds, mqspool / decoding loop: %s.", k.Files, k.Name, len(decodedRounds), round(decoded.Elapsed),
		roundRatios(ownRounds, decodedRounds)))
}

func (r *report) addMemory(first time.Duration, drainPeak int64, long longJSONLResult) {
	if len(r.memory) == 0 {
		return
	}
	low, high := r.memory[0], r.memory[len(r.memory)-1]
	var peak int64
	var parts []string
	for _, m := range r.memory {
		peak = max(peak, m.RssAnon)
		parts = append(parts, fmt.Sprintf("%d queued: %s (database %s)", m.Queued, mib(m.RssAnon), mib(m.DBBytes)))
	}
	growth := float64(high.RssAnon)/float64(low.RssAnon) - 1
	r.rows = append(r.rows,
		row{Metric: "Peak RssAnon, broker down", Mqspool: mib(peak), Target: "< 32 MiB", Result: passFail(peak < 32<<20)},
		row{Metric: fmt.Sprintf("RssAnon growth %d → %d queued", low.Queued, high.Queued),
			Mqspool: fmt.Sprintf("%+.1f %%", 100*growth), Target: "within 10 %", Result: passFail(growth <= 0.10 && growth >= -0.10)},
		row{Metric: fmt.Sprintf("Start to first publish, %d queued", high.Queued),
			Mqspool: round(first).String(), Target: "≤ 1 s", Result: passFail(first <= time.Second)},
		row{Metric: fmt.Sprintf("Peak RssAnon, ingest of one %s .jsonl (%d lines)", mib(longJSONLBytes), long.Lines),
			Mqspool: mib(long.RssAnon)},
	)
	r.details = append(r.details, "RssAnon with the broker down, peak of samples every 100 ms over 5 s: "+strings.Join(parts, "; ")+".",
		fmt.Sprintf("RssAnon while draining the %d queued messages for 5 s after the first publish: %s.", high.Queued, mib(drainPeak)),
		fmt.Sprintf("One .jsonl file of %s with %d short lines, broker down: RssAnon peaked at %s, sampled every 50 ms, "+
			"and new/ was empty %s after the start.", mib(longJSONLBytes), long.Lines, mib(long.RssAnon), round(long.Elapsed)))
}

func (r *report) addBacklog() {
	if len(r.backlog) == 0 {
		return
	}
	low, high := r.backlog[0], r.backlog[len(r.backlog)-1]
	var parts []string
	for _, b := range r.backlog {
		parts = append(parts, fmt.Sprintf("%d files: %s", b.Files, mib(b.RssAnon)))
	}
	r.rows = append(r.rows, row{
		Metric:  fmt.Sprintf("Peak RssAnon, %d → %d files waiting in new/, spool full", low.Files, high.Files),
		Mqspool: fmt.Sprintf("%s → %s", mib(low.RssAnon), mib(high.RssAnon)),
		Target:  "< 32 MiB", Result: passFail(high.RssAnon < 32<<20),
	})
	r.details = append(r.details, fmt.Sprintf("RssAnon with single-message files of 100 B waiting in new/ behind "+
		"spool.max_messages %d, broker down, peak of samples every 100 ms over 5 s from the start: %s.",
		backlogLimit, strings.Join(parts, "; ")))
}

func (r *report) addDisk(ingest, drain diskPhase, payload int64) {
	perK := func(p diskPhase) float64 { return 1000 * p.commits() / float64(p.Messages) }
	peak := max(ingest.PeakDB, drain.PeakDB)
	dbRatio := float64(peak) / float64(payload)
	written := float64(ingest.WriteBytes+drain.WriteBytes) / float64(payload)
	r.rows = append(r.rows,
		row{Metric: "bbolt commits per 1000 messages, ingest (1 KiB files)", Mqspool: fmt.Sprintf("%.1f", perK(ingest)),
			Target: "≤ 20", Result: passFail(perK(ingest) <= 20)},
		row{Metric: "bbolt commits per 1000 messages, QoS 1 drain (1 KiB)", Mqspool: fmt.Sprintf("%.1f", perK(drain)),
			Target: "≤ 20", Result: passFail(perK(drain) <= 20)},
		row{Metric: "Database file at its peak / queued payload (1 KiB)", Mqspool: fmt.Sprintf("%s / %s", mib(peak), mib(payload)),
			Ratio: fmt.Sprintf("%.2f×", dbRatio), Target: "≤ 1.5×", Result: passFail(dbRatio <= 1.5)},
		row{Metric: "Bytes written per payload byte, ingest + drain (1 KiB)", Mqspool: fmt.Sprintf("%.1f", written),
			Ratio: fmt.Sprintf("ingest %.1f, drain %.1f", float64(ingest.WriteBytes)/float64(payload), float64(drain.WriteBytes)/float64(payload))},
	)
	for _, p := range []struct {
		name  string
		phase diskPhase
	}{{"ingest", ingest}, {"drain", drain}} {
		r.details = append(r.details, fmt.Sprintf("Disk, %s of %d messages of 1 KiB in %s: %d fdatasync, %d fsync, %d write and %d read calls, write_bytes %s, database peak %s.",
			p.name, p.phase.Messages, round(p.phase.Elapsed), p.phase.Fdatasync, p.phase.Fsync,
			p.phase.Writes, p.phase.Reads, mib(p.phase.WriteBytes), mib(p.phase.PeakDB)))
	}
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

func round(d time.Duration) time.Duration { return d.Round(time.Millisecond) }

// table renders the results as a markdown table.
func (r *report) table() string {
	var b strings.Builder
	b.WriteString("| Measurement | mqspool | Compared with | Ratio | Target | Result |\n")
	b.WriteString("| --- | --- | --- | --- | --- | --- |\n")
	for _, x := range r.rows {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", x.Metric, x.Mqspool, x.Reference, x.Ratio, x.Target, x.Result)
	}
	return b.String()
}
