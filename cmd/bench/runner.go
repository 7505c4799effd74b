package main

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/kafkachannel/kafkachannel/bench"
)

const (
	partitions  = 8
	sinkLatency = 5 * time.Millisecond
	httpSenders = 16
	ingressConc = 32
	latencyRate = 1000
	rssParts    = 4
	largeSize   = 20 << 10
	fanSubs     = 50
	idleParts   = 4
)

// sizes are the event counts and process sizes of one run: full for `make bench`, small for
// `make bench-short`, which only proves the tool still runs end to end.
type sizes struct {
	// events is the record count of the throughput runs (P1, P4).
	events int
	// seconds is how long each ordered run delivers at its bound (P2 and the plot).
	seconds float64
	// latencySeconds is how long each P3 run is measured, after latencyWarm of warm-up at the
	// same rate.
	latencySeconds, latencyWarm float64
	rssSubs                     int
	rssEvents                   int
	// manySubs is P5 1k's subscribers, all in one dispatcher process, idle.
	manySubs int
	// largeEvents is P4b's count of 20 KB events.
	largeEvents int
	// fanEvents is P8's records, each delivered to every one of fanSubs subscribers.
	fanEvents int
	// idleChannels dispatcher processes are measured for S2, idle for idleWindow.
	idleChannels int
	idleWindow   time.Duration
	// settle is how long dispatcher processes idle before they are measured (P5, S2).
	settle time.Duration
	// plotPartitions are the ordered runs the plot has besides P2's 8 and 32 partitions.
	plotPartitions []int
}

func fullSizes(events int) sizes {
	return sizes{events: events, seconds: 2.5, latencySeconds: 5, latencyWarm: 1, rssSubs: 100, rssEvents: 200, manySubs: 1000,
		largeEvents: events / 4, fanEvents: events / fanSubs, idleChannels: 8, idleWindow: 10 * time.Second,
		settle: 3 * time.Second, plotPartitions: []int{1, 2, 4}}
}

func shortSizes() sizes {
	return sizes{events: 2000, seconds: 0.3, latencySeconds: 0.3, latencyWarm: 0.1, rssSubs: 10, rssEvents: 20, manySubs: 50,
		largeEvents: 300, fanEvents: 20, idleChannels: 2, idleWindow: time.Second, settle: time.Second}
}

// runner runs every measurement in order and keeps what the plot and document need.
type runner struct {
	env *bench.Env
	sizes
	self string
	// only limits the run to some figures (P1..P6; P7 runs with P1 and P2); nil: all.
	only map[string]bool

	points []bench.Point
	p1     float64
	// consume is P1's raw consume baseline, rawWriter P4's raw Writer baseline: the Apache
	// Kafka anchors sit next to them.
	consume, rawWriter float64
	p2                 float64
	// anchors runs Kafka's own perf tools (only on Apache Kafka); nil: no anchor rows.
	anchors *bench.Anchors
	// p1Topic holds P1's records, which the consumer anchor reads again.
	p1Topic string
	// p4 is the receiver's measured capacity (P4), capacity the one P3 used.
	p4, capacity float64
	latency      []latencyRun
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05 ")+format+"\n", args...)
}

func (r *runner) all() []bench.Row {
	r.env.Settle = r.settle
	var rows []bench.Row
	for _, step := range []struct {
		id  string
		run func() []bench.Row
	}{
		{"P1", func() []bench.Row { return append(r.p1Row(), r.consumerAnchor()...) }},
		{"P2", r.p2Row}, {"P2K", r.p2kRow},
		// P4 first: P3 runs at half the receiver capacity P4 measures.
		{"P4", func() []bench.Row { return append([]bench.Row{r.p4Row()}, r.producerAnchor()...) }},
		{"P4B", func() []bench.Row { return []bench.Row{r.p4bRow()} }},
		{"P3", r.p3Rows},
		{"P5", r.p5Rows}, {"P5K", r.p5kRows}, {"P6", r.p6Rows},
		{"P8", func() []bench.Row { return []bench.Row{r.p8Row()} }},
		{"S2", r.s2Rows},
	} {
		if r.only != nil && !r.only[step.id] {
			continue
		}
		rows = append(rows, step.run()...)
	}
	return rows
}

// p1Row is P1 and the instant-sink half of P7, on one topic filled once.
func (r *runner) p1Row() []bench.Row {
	const what = "dispatcher throughput, unordered, instant sink, 8 partitions, 1 dispatcher"
	target := ">= 0.9 x H(consume, POST)"
	ch, err := r.env.NewChannel("p1", partitions)
	if err == nil {
		err = r.env.Fill(ch, "p1", r.events)
	}
	sink, serr := bench.StartSink(0)
	if err == nil {
		err = serr
	}
	if err != nil {
		return []bench.Row{bench.ErrorRow("P1", what, target, err)}
	}
	defer sink.Close()
	progress("P1 baseline: raw kafka-go group consume of %d records", r.events)
	consume, err := r.env.RawConsumeRate(ch, r.events, r.env.Within(time.Minute))
	if err != nil {
		return []bench.Row{bench.ErrorRow("P1", what, target, err)}
	}
	progress("P1 baseline: raw net/http POST, %d senders", httpSenders)
	post, err := r.env.RawPostRate(ch, sink, r.events, httpSenders)
	if err != nil {
		return []bench.Row{bench.ErrorRow("P1", what, target, err)}
	}
	progress("P1: dispatcher, unordered")
	d, err := r.env.DispatcherRate(ch, sink, r.events, true, r.env.Within(time.Minute))
	if err != nil {
		return []bench.Row{bench.ErrorRow("P1", what, target, err)}
	}
	r.p1, r.consume, r.p1Topic = d, consume, ch.Topic
	// The dispatcher consumes and POSTs on the same cores: its limit is the harmonic
	// combination of the two baselines, not the slower one.
	limit := bench.Harmonic(consume, post)
	ratio := d / limit
	rows := []bench.Row{{
		ID: "P1", What: what, Value: bench.Rate(d),
		Baseline: fmt.Sprintf("consume %s, POST %s; H %s", bench.Rate(consume), bench.Rate(post), bench.Rate(limit)),
		Ratio:    fmt.Sprintf("%.2f (%.2f of the slower)", ratio, d/min(consume, post)), Target: target, Pass: bench.Verdict(ratio >= 0.9),
	}}
	progress("P7: naive loop, instant sink")
	n := r.events / 4
	naive, err := r.env.NaiveRate(ch, sink, n, 20*time.Second)
	if err != nil {
		return append(rows, bench.ErrorRow("P7a", "naive loop, instant sink", ">> 1", err))
	}
	return append(rows, bench.Row{
		ID: "P7a", What: "naive loop (FetchMessage, POST, CommitMessages), instant sink",
		Value: bench.Rate(naive), Baseline: "P1 " + bench.Rate(d), Ratio: fmt.Sprintf("P1/naive %.1f", d/naive),
		Target: "P1/naive >> 1 (>= 3)", Pass: bench.Verdict(d/naive >= 3),
	})
}

// orderedRun is one ordered run against a sink answering after sinkLatency.
func (r *runner) orderedRun(parts, n int) (float64, error) {
	ch, err := r.env.NewChannel(fmt.Sprintf("ord%d", parts), parts)
	if err != nil {
		return 0, err
	}
	sink, err := bench.StartSink(sinkLatency)
	if err != nil {
		return 0, err
	}
	defer sink.Close()
	return r.env.DispatcherRate(ch, sink, n, false, r.env.Within(time.Minute))
}

// ordered32 is P2 at 32 partitions with its practical bound: 32 serial POST loops to a sink of
// the same latency, what one delivery in flight per partition reaches with no Kafka at all.
func (r *runner) ordered32() (v, serial float64, err error) {
	n := int(bound(32) * r.seconds)
	ch, err := r.env.NewChannel("p2s32", 32)
	if err == nil {
		err = r.env.Fill(ch, "p2s32", min(1600, n))
	}
	if err != nil {
		return 0, 0, err
	}
	sink, err := bench.StartSink(sinkLatency)
	if err != nil {
		return 0, 0, err
	}
	progress("P2 32p practical bound: 32 serial POST loops to the same sink")
	serial, err = r.env.SerialPostRate(ch, sink, min(1600, n), 32)
	sink.Close()
	if err != nil {
		return 0, 0, err
	}
	v, err = r.orderedRun(32, n)
	return v, serial, err
}

func bound(parts int) float64 { return float64(parts) / sinkLatency.Seconds() }

// p2Row is P2, the 5 ms half of P7 and the plot's points.
func (r *runner) p2Row() []bench.Row {
	const what = "dispatcher throughput, ordered, sink answering after 5 ms, 8 partitions"
	target := ">= 0.95 x serial POST loops"
	// About 2.5 s of delivery at the bound: long enough to average over, short for the budget.
	n := int(bound(partitions) * r.seconds)
	for _, p := range r.plotPartitions {
		progress("plot: ordered, %d partitions", p)
		v, err := r.orderedRun(p, int(bound(p)*r.seconds))
		if err != nil {
			progress("plot point %d partitions failed: %v", p, err)
			continue
		}
		r.points = append(r.points, bench.Point{Partitions: p, Rate: v, Bound: bound(p)})
	}
	progress("P2: dispatcher, ordered, %d partitions, %s sink", partitions, sinkLatency)
	ch, err := r.env.NewChannel("p2", partitions)
	if err == nil {
		// The naive loop (P7b) reads from the beginning; the dispatcher gets its own records.
		err = r.env.Fill(ch, "p2", 800)
	}
	sink, serr := bench.StartSink(sinkLatency)
	if err == nil {
		err = serr
	}
	if err != nil {
		return []bench.Row{bench.ErrorRow("P2", what, target, err)}
	}
	defer sink.Close()
	progress("P2 practical bound: %d serial POST loops to the same sink", partitions)
	// The serial loops and the naive loop below read the pre-filled records.
	serial, err := r.env.SerialPostRate(ch, sink, min(800, n), partitions)
	if err != nil {
		return []bench.Row{bench.ErrorRow("P2", what, target, err)}
	}
	v, err := r.env.DispatcherRate(ch, sink, n, false, r.env.Within(time.Minute))
	if err != nil {
		return []bench.Row{bench.ErrorRow("P2", what, target, err)}
	}
	r.p2 = v
	r.points = append(r.points, bench.Point{Partitions: partitions, Rate: v, Bound: bound(partitions)})
	// One delivery in flight per partition is what serial POST loops do with no Kafka at all:
	// they are the practical limit; partitions / latency ignores the HTTP round trip.
	ratio := v / serial
	rows := []bench.Row{{
		ID: "P2", What: what, Value: bench.Rate(v),
		Baseline: fmt.Sprintf("8 serial POST loops %s; bound partitions/latency %s", bench.Rate(serial), bench.Rate(bound(partitions))),
		Ratio:    fmt.Sprintf("%.2f (%.2f of bound)", ratio, v/bound(partitions)), Target: target, Pass: bench.Verdict(ratio >= 0.95),
	}}
	progress("P2: dispatcher, ordered, 32 partitions, %s sink", sinkLatency)
	const what32 = "dispatcher throughput, ordered, sink answering after 5 ms, 32 partitions"
	if v32, serial32, err := r.ordered32(); err != nil {
		rows = append(rows, bench.ErrorRow("P2 32p", what32, target, err))
	} else {
		r.points = append(r.points, bench.Point{Partitions: 32, Rate: v32, Bound: bound(32)})
		rows = append(rows, bench.Row{
			ID: "P2 32p", What: what32, Value: bench.Rate(v32),
			Baseline: fmt.Sprintf("32 serial POST loops %s; bound partitions/latency %s", bench.Rate(serial32), bench.Rate(bound(32))),
			Ratio:    fmt.Sprintf("%.2f (%.2f of bound)", v32/serial32, v32/bound(32)), Target: target, Pass: bench.Verdict(v32/serial32 >= 0.95),
		})
	}
	progress("P7: naive loop, %s sink", sinkLatency)
	naive, err := r.env.NaiveRate(ch, sink, min(300, n/4), 20*time.Second)
	if err != nil {
		return append(rows, bench.ErrorRow("P7b", "naive loop, 5 ms sink", ">> 1", err))
	}
	return append(rows, bench.Row{
		ID: "P7b", What: "naive loop (FetchMessage, POST, CommitMessages), sink answering after 5 ms",
		Value: bench.Rate(naive), Baseline: "P2 " + bench.Rate(v), Ratio: fmt.Sprintf("P2/naive %.1f", v/naive),
		Target: "P2/naive >> 1 (>= 3)", Pass: bench.Verdict(v/naive >= 3),
	})
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d.Microseconds())/1000) }

// latencyRun is one P3 rate's two runs, kept for the latency plot.
type latencyRun struct {
	rate             int
	system, direct   bench.LoopResult
	sysStats, dStats bench.WriterStats
}

// p3Rows is P3 at latencyRate and at half the receiver's capacity (P4's figure when P4 ran
// first, else measured here the same way).
func (r *runner) p3Rows() []bench.Row {
	rows := []bench.Row{r.p3Row("P3", latencyRate, fmt.Sprintf("p99 <= %s ms and <= 2 x direct", ms(p3Target)))}
	capacity := r.p4
	if capacity == 0 {
		progress("P3: receiver capacity (as P4: %d senders, closed loop)", ingressConc)
		ch, err := r.env.NewChannel("p3cap", partitions)
		if err == nil {
			capacity, err = r.env.ReceiverRate(ch, min(r.events, 10000), ingressConc)
		}
		if err != nil {
			return append(rows, bench.ErrorRow("P3 half", "end-to-end latency at half the receiver's capacity", "(reported)", err))
		}
	}
	r.capacity = capacity
	half := max(int(capacity/2), 1)
	return append(rows, r.p3Row("P3 half", half, "(reported)"))
}

// p3Target is P3's bound on Apache Kafka at latencyRate (issue 26).
const p3Target = 20 * time.Millisecond

func (r *runner) p3Row(id string, rate int, target string) bench.Row {
	what := fmt.Sprintf("end-to-end latency receiver -> Kafka -> dispatcher -> subscriber, open loop at %d events/s", rate)
	if id != "P3" {
		what += fmt.Sprintf(" (half the receiver's capacity %s)", bench.Rate(r.capacity))
	}
	s := bench.Schedule{Rate: rate, N: int(float64(rate) * r.latencySeconds), Warm: int(float64(rate) * r.latencyWarm)}
	progress("%s baseline: direct kafka-go Writer -> partition readers, open loop at %d/s for %.1fs", id, rate, r.latencySeconds)
	chd, err := r.env.NewChannel("p3direct", partitions)
	if err != nil {
		return bench.ErrorRow(id, what, target, err)
	}
	direct, err := r.env.DirectLatency(chd, s, bench.ReceiverProducer)
	if err != nil {
		return bench.ErrorRow(id, what, target, err)
	}
	progress("%s second baseline: bare kafka-go Writer (1 ms batches) -> partition readers, open loop at %d/s", id, rate)
	chk, err := r.env.NewChannel("p3kgo", partitions)
	if err != nil {
		return bench.ErrorRow(id, what, target, err)
	}
	kgo, err := r.env.DirectLatency(chk, s, bench.KafkaGoWriter)
	if err != nil {
		return bench.ErrorRow(id, what, target, err)
	}
	progress("%s: receiver -> dispatcher -> subscriber, open loop at %d/s", id, rate)
	ch, err := r.env.NewChannel("p3", partitions)
	if err != nil {
		return bench.ErrorRow(id, what, target, err)
	}
	sink, err := bench.StartSink(0)
	if err != nil {
		return bench.ErrorRow(id, what, target, err)
	}
	defer sink.Close()
	l, err := r.env.EndToEndLatency(ch, sink, s)
	if err != nil {
		return bench.ErrorRow(id, what, target, err)
	}
	r.latency = append(r.latency, latencyRun{rate: rate, system: l.LoopResult, direct: direct.LoopResult, sysStats: l.Writer, dStats: direct.Writer})
	ratio := float64(l.P99) / float64(max(direct.P99, time.Microsecond))
	pass := "-"
	if id == "P3" {
		pass = bench.Verdict(l.P99 <= p3Target && ratio <= 2)
	}
	return bench.Row{
		ID: id, What: what, Value: l.Describe(), Baseline: "direct " + direct.Describe(),
		Ratio: fmt.Sprintf("p99 %.1f x", ratio), Target: target, Pass: pass,
		Detail: fmt.Sprintf("receiver's writer: %s; direct writer: %s; bare kafka-go Writer (BatchTimeout 1 ms) -> readers: %s, its writer: %s; load average %s",
			l.Writer, direct.Writer, kgo.Describe(), kgo.Writer, loadAvg()),
	}
}

func (r *runner) p4Row() bench.Row {
	what := fmt.Sprintf("receiver ingress throughput, acks=all, %d concurrent HTTP senders", ingressConc)
	target := ">= 0.9 x H(raw Writer, HTTP 202)"
	progress("P4 baseline: raw kafka-go Writer, %d goroutines", ingressConc)
	chw, err := r.env.NewChannel("p4raw", partitions)
	if err != nil {
		return bench.ErrorRow("P4", what, target, err)
	}
	raw, err := r.env.WriterRate(chw, r.events, ingressConc)
	if err != nil {
		return bench.ErrorRow("P4", what, target, err)
	}
	progress("P4 baseline: bare HTTP server answering 202, %d senders", ingressConc)
	httpOnly, err := r.env.HTTPOnlyRate(r.events, ingressConc, bench.Payload(250))
	if err != nil {
		return bench.ErrorRow("P4", what, target, err)
	}
	progress("P4: receiver, %d senders", ingressConc)
	ch, err := r.env.NewChannel("p4", partitions)
	if err != nil {
		return bench.ErrorRow("P4", what, target, err)
	}
	v, err := r.env.ReceiverRate(ch, r.events, ingressConc)
	if err != nil {
		return bench.ErrorRow("P4", what, target, err)
	}
	r.p4, r.rawWriter = v, raw
	// The receiver serves HTTP and produces to Kafka on the same cores.
	limit := bench.Harmonic(raw, httpOnly)
	ratio := v / limit
	return bench.Row{
		ID: "P4", What: what, Value: bench.Rate(v),
		Baseline: fmt.Sprintf("raw Writer %s, HTTP 202 %s; H %s", bench.Rate(raw), bench.Rate(httpOnly), bench.Rate(limit)),
		Ratio:    fmt.Sprintf("%.2f (%.2f of raw Writer)", ratio, v/raw), Target: target, Pass: bench.Verdict(ratio >= 0.9),
	}
}

// p4bRow is P4 with 20 KB events, in MB/s of event data.
func (r *runner) p4bRow() bench.Row {
	what := fmt.Sprintf("receiver ingress, 20 KB events, acks=all, %d concurrent HTTP senders", ingressConc)
	target := ">= 0.9 x H(raw Writer, HTTP 202) (MB/s)"
	data := bench.Payload(largeSize)
	mb := func(perSec float64) float64 { return perSec * float64(len(data)) / 1e6 }
	progress("P4b baseline: raw kafka-go Writer, %d goroutines, 20 KB records", ingressConc)
	chw, err := r.env.NewChannel("p4braw", partitions)
	if err != nil {
		return bench.ErrorRow("P4b", what, target, err)
	}
	raw, err := r.env.WriterRateData(chw, r.largeEvents, ingressConc, data)
	if err != nil {
		return bench.ErrorRow("P4b", what, target, err)
	}
	progress("P4b baseline: bare HTTP server answering 202, %d senders, 20 KB events", ingressConc)
	httpOnly, err := r.env.HTTPOnlyRate(r.largeEvents, ingressConc, data)
	if err != nil {
		return bench.ErrorRow("P4b", what, target, err)
	}
	progress("P4b: receiver, %d senders, 20 KB events", ingressConc)
	ch, err := r.env.NewChannel("p4b", partitions)
	if err != nil {
		return bench.ErrorRow("P4b", what, target, err)
	}
	v, err := r.env.ReceiverRateData(ch, r.largeEvents, ingressConc, data)
	if err != nil {
		return bench.ErrorRow("P4b", what, target, err)
	}
	limit := bench.Harmonic(raw, httpOnly)
	ratio := v / limit
	return bench.Row{
		ID: "P4b", What: what, Value: fmt.Sprintf("%.1f MB/s (%s)", mb(v), bench.Rate(v)),
		Baseline: fmt.Sprintf("raw Writer %.1f MB/s, HTTP 202 %.1f MB/s; H %.1f MB/s", mb(raw), mb(httpOnly), mb(limit)),
		Ratio:    fmt.Sprintf("%.2f (%.2f of raw Writer)", ratio, v/raw), Target: target, Pass: bench.Verdict(ratio >= 0.9),
	}
}

// p8Row is P8: one dispatcher delivering one channel to 50 subscribers, against P1.
func (r *runner) p8Row() bench.Row {
	what := fmt.Sprintf("dispatcher fan-out, 1 channel, %d subscribers, instant sink, %d partitions, total deliveries", fanSubs, partitions)
	target := ">= 0.8 x P1"
	progress("P8: dispatcher, %d subscribers x %d records", fanSubs, r.fanEvents)
	ch, err := r.env.NewChannel("p8", partitions)
	if err != nil {
		return bench.ErrorRow("P8", what, target, err)
	}
	v, err := r.env.FanOutRate(ch, fanSubs, r.fanEvents, r.env.Within(2*time.Minute))
	if err != nil {
		return bench.ErrorRow("P8", what, target, err)
	}
	if r.p1 == 0 {
		return bench.Row{ID: "P8", What: what, Value: bench.Rate(v), Baseline: "(P1 not run)", Ratio: "-", Target: target, Pass: "-"}
	}
	ratio := v / r.p1
	return bench.Row{
		ID: "P8", What: what, Value: bench.Rate(v), Baseline: "P1 " + bench.Rate(r.p1),
		Ratio: fmt.Sprintf("%.2f", ratio), Target: target, Pass: bench.Verdict(ratio >= 0.8),
	}
}

// s2Rows is S2: what an idle channel costs, on real dispatcher processes.
func (r *runner) s2Rows() []bench.Row {
	what := fmt.Sprintf("idle dispatcher process per channel (1 subscriber, %d partitions), %d processes", idleParts, r.idleChannels)
	progress("S2: %d idle dispatcher processes, requests counted for %s", r.idleChannels, r.idleWindow)
	res, err := r.env.IdleCost(r.self, r.idleChannels, idleParts, r.idleWindow)
	if err != nil {
		return []bench.Row{bench.ErrorRow("S2", what, "anonymous <= 10 MB per process; <= 1 fetch/s per partition", err)}
	}
	// What a further channel costs is its process's anonymous memory; the file-backed rest of
	// the RSS is the binary, one copy in the page cache for every process mapping it.
	rows := []bench.Row{
		{ID: "S2 anon", What: what + ", anonymous memory per process (smaps_rollup)", Value: fmt.Sprintf("%.1f MB (max %.1f)", res.AnonMB, res.MaxAnonMB),
			Baseline: fmt.Sprintf("(absolute; RSS %.1f MB, max %.1f, of it file-backed %.1f MB)", res.RSSMB, res.MaxRSSMB, res.FileMB), Ratio: "-", Target: "<= 10 MB", Pass: bench.Verdict(res.MaxAnonMB <= 10)},
		{ID: "S2 PSS", What: fmt.Sprintf("%s, PSS of all %d processes", what, r.idleChannels), Value: fmt.Sprintf("%.1f MB (%.1f MB per process)", res.TotalPSSMB, res.PSSMB),
			Baseline: fmt.Sprintf("(absolute; %d x RSS would be %.1f MB)", r.idleChannels, res.RSSMB*float64(r.idleChannels)), Ratio: "-", Target: "(reported)", Pass: "-"},
		{ID: "S2 proc", What: what + ", goroutines and Kafka connections", Value: fmt.Sprintf("%.0f goroutines, %.0f Kafka connections (max %.0f, %.0f)", res.Goroutines, res.KafkaConns, res.MaxGorout, res.MaxConns),
			Baseline: "(absolute)", Ratio: "-", Target: "(reported)", Pass: "-"},
	}
	if !res.Counted {
		return append(rows, bench.Row{ID: "S2 fetch", What: what + ", idle requests to the broker", Value: "-",
			Baseline: "(needs the embedded Kafka)", Ratio: "-", Target: "<= 1 fetch/s per partition", Pass: "-"})
	}
	fetch := res.FetchPerPartitionSec()
	return append(rows, bench.Row{
		ID: "S2 fetch", What: what + ", idle requests to the broker",
		Value:    fmt.Sprintf("%.2f fetch/s per partition; %.1f requests/s per channel", fetch, res.PerChannelSec()),
		Baseline: "(absolute; " + requestMix(res) + ")", Ratio: "-", Target: "<= 1 fetch/s per partition", Pass: bench.Verdict(fetch <= 1),
	})
}

// requestMix lists the idle requests per second and channel by API, most frequent first.
func requestMix(res bench.IdleResult) string {
	type kv struct {
		k string
		v int
	}
	var all []kv
	for k, v := range res.Requests {
		all = append(all, kv{k, v})
	}
	sort.Slice(all, func(i, j int) bool { return all[i].v > all[j].v || (all[i].v == all[j].v && all[i].k < all[j].k) })
	var parts []string
	for _, e := range all {
		parts = append(parts, fmt.Sprintf("%s %.2f/s", e.k, float64(e.v)/res.Window.Seconds()/float64(res.Channels)))
	}
	if len(parts) == 0 {
		return "no requests"
	}
	return "per channel: " + strings.Join(parts, ", ")
}

func (r *runner) p5Rows() []bench.Row {
	what := fmt.Sprintf("dispatcher process RSS, %d subscribers x %d partitions", r.rssSubs, rssParts)
	progress("P5: dispatcher process with %d subscribers", r.rssSubs)
	res, err := r.env.DispatcherRSS(r.self, r.rssSubs, rssParts, r.rssEvents)
	if err != nil {
		return []bench.Row{bench.ErrorRow("P5", what, "<= 150 MB idle", err)}
	}
	return []bench.Row{
		{ID: "P5 idle", What: what + ", idle (all Ready)", Value: fmt.Sprintf("%.0f MB", res.IdleMB),
			Baseline: fmt.Sprintf("(absolute; all Ready after %s; %s)", res.ReadyAfter.Round(100*time.Millisecond), res.Idle),
			Ratio:    "-", Target: "<= 150 MB", Pass: bench.Verdict(res.IdleMB <= 150)},
		{ID: "P5 load", What: what + ", peak under load", Value: fmt.Sprintf("%.0f MB", res.LoadMB),
			Baseline: fmt.Sprintf("(absolute; %d deliveries in %s, the process at %.0f%% of a core, load average %s)", res.Deliveries, res.LoadTook.Round(100*time.Millisecond), 100*res.LoadCores, loadAvg()),
			Ratio:    "-", Target: "(reported)", Pass: "-"},
	}
}

func (r *runner) p6Rows() []bench.Row {
	progress("P6: subscriber added -> Ready, replica added -> rebalanced")
	t, err := r.env.ReadyAndRebalance(partitions)
	if err != nil {
		return []bench.Row{bench.ErrorRow("P6", "subscriber Ready / replica rebalance", "<= 5 s / <= 10 s", err)}
	}
	return []bench.Row{
		{ID: "P6a", What: "subscriber added -> Ready (dispatcher)", Value: t.SubscriberReady.Round(time.Millisecond).String(),
			Baseline: "(absolute)", Ratio: "-", Target: "<= 5 s", Pass: bench.Verdict(t.SubscriberReady <= 5*time.Second)},
		{ID: "P6b", What: "replica added -> partitions rebalanced over 2 members", Value: t.Rebalanced.Round(time.Millisecond).String(),
			Baseline: "(absolute)", Ratio: "-", Target: "<= 10 s", Pass: bench.Verdict(t.Rebalanced <= 10*time.Second)},
	}
}

// P5 1k's targets: every subscriber Ready within manyReady, and the idle process within manyMB.
const (
	manyReady = 60 * time.Second
	manyMB    = 400
)

// p5kRows is P5 1k: manySubs subscribers (one consumer group each) on one channel in one
// dispatcher process, idle; it waits up to three times the target for Ready, so a slow start
// is a MISS with its time, not an error.
func (r *runner) p5kRows() []bench.Row {
	what := fmt.Sprintf("dispatcher process, %d subscribers x %d partitions", r.manySubs, rssParts)
	progress("P5 1k: dispatcher process with %d subscribers", r.manySubs)
	res, err := r.env.DispatcherIdleRSS(r.self, r.manySubs, rssParts, 3*manyReady)
	if err != nil {
		return []bench.Row{bench.ErrorRow("P5 1k", what, fmt.Sprintf("all Ready <= %s; RSS <= %d MB idle", manyReady, manyMB), err)}
	}
	ready, idle := res.ReadyAfter.Round(100*time.Millisecond).String(), "RSS idle (all Ready)"
	if res.NotReady {
		ready, idle = "not all Ready after "+ready, "RSS when the wait for Ready ended"
	}
	return []bench.Row{
		{ID: "P5 1k ready", What: what + ", start -> all Ready", Value: ready,
			Baseline: "(absolute; load average " + loadAvg() + ")", Ratio: "-", Target: "<= " + manyReady.String(), Pass: bench.Verdict(!res.NotReady && res.ReadyAfter <= manyReady)},
		{ID: "P5 1k idle", What: what + ", " + idle, Value: fmt.Sprintf("%.0f MB", res.IdleMB),
			Baseline: "(absolute; " + res.Idle.String() + ")", Ratio: "-", Target: fmt.Sprintf("<= %d MB", manyMB), Pass: bench.Verdict(!res.NotReady && res.IdleMB <= manyMB)},
	}
}

// anchorSize is the value size of P4's events (bench.Payload(250)), which the producer anchor
// writes too.
const anchorSize = 250

// consumerAnchor is kafka-consumer-perf-test reading P1's records from the same broker, next to
// P1's consume baseline (a kafka-go group reader).
func (r *runner) consumerAnchor() []bench.Row {
	if r.anchors == nil || r.p1Topic == "" {
		return nil
	}
	const what = "anchor: Kafka's kafka-consumer-perf-test, P1's records, fresh group, same broker"
	progress("anchor: kafka-consumer-perf-test, %d records of %s", r.events, r.p1Topic)
	res, err := r.anchors.ConsumerPerf(r.p1Topic, "anchor-"+r.p1Topic, r.events, r.env.Within(3*time.Minute))
	if err != nil {
		return []bench.Row{bench.ErrorRow("K cons", what, "(reported)", err)}
	}
	return []bench.Row{{
		ID: "K cons", What: what, Value: bench.Rate(res.Rate),
		Baseline: "P1's consume baseline (kafka-go) " + bench.Rate(r.consume), Ratio: fmt.Sprintf("kafka-go/Kafka %.2f", r.consume/res.Rate),
		Target: "(reported)", Pass: "-", Detail: "kafka-consumer-perf-test: " + res.Line + "; load average " + loadAvg(),
	}}
}

// producerAnchor is kafka-producer-perf-test (acks=all, P4's value size, as fast as it goes) on
// a topic like P4's on the same broker, next to P4 and its raw Writer baseline.
func (r *runner) producerAnchor() []bench.Row {
	if r.anchors == nil || r.p4 == 0 {
		return nil
	}
	const what = "anchor: Kafka's kafka-producer-perf-test, acks=all, 250-byte records, 8 partitions, same broker"
	ch, err := r.env.NewChannel("anchorprod", partitions)
	if err != nil {
		return []bench.Row{bench.ErrorRow("K prod", what, "(reported)", err)}
	}
	progress("anchor: kafka-producer-perf-test, %d records to %s", r.events, ch.Topic)
	res, err := r.anchors.ProducerPerf(ch.Topic, r.events, anchorSize, r.env.Within(3*time.Minute))
	if err != nil {
		return []bench.Row{bench.ErrorRow("K prod", what, "(reported)", err)}
	}
	return []bench.Row{{
		ID: "K prod", What: what, Value: bench.Rate(res.Rate),
		Baseline: fmt.Sprintf("P4 receiver %s; raw Writer %s", bench.Rate(r.p4), bench.Rate(r.rawWriter)), Ratio: fmt.Sprintf("P4/Kafka %.2f; raw Writer/Kafka %.2f", r.p4/res.Rate, r.rawWriter/res.Rate),
		Target: "(reported)", Pass: "-", Detail: "kafka-producer-perf-test: " + res.Line + "; load average " + loadAvg(),
	}}
}
