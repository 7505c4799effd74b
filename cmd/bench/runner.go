package main

import (
	"fmt"
	"os"
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
)

// sizes are the event counts and process sizes of one run: full for `make bench`, small for
// `make bench-short`, which only proves the tool still runs end to end.
type sizes struct {
	// events is the record count of the throughput runs (P1, P4).
	events int
	// seconds is how long each ordered run delivers at its bound (P2 and the plot).
	seconds      float64
	latencyCount int
	rssSubs      int
	rssEvents    int
}

func fullSizes(events int) sizes {
	return sizes{events: events, seconds: 2.5, latencyCount: 3000, rssSubs: 100, rssEvents: 200}
}

func shortSizes() sizes {
	return sizes{events: 2000, seconds: 0.3, latencyCount: 300, rssSubs: 10, rssEvents: 20}
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
	p2     float64
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05 ")+format+"\n", args...)
}

func (r *runner) all() []bench.Row {
	var rows []bench.Row
	for _, step := range []struct {
		id  string
		run func() []bench.Row
	}{
		{"P1", r.p1Row}, {"P2", r.p2Row},
		{"P3", func() []bench.Row { return []bench.Row{r.p3Row()} }},
		{"P4", func() []bench.Row { return []bench.Row{r.p4Row()} }},
		{"P5", r.p5Rows}, {"P6", r.p6Rows},
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
	target := ">= 0.8 x slower baseline"
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
	consume, err := r.env.RawConsumeRate(ch, r.events, time.Minute)
	if err != nil {
		return []bench.Row{bench.ErrorRow("P1", what, target, err)}
	}
	progress("P1 baseline: raw net/http POST, %d senders", httpSenders)
	post, err := r.env.RawPostRate(ch, sink, r.events, httpSenders)
	if err != nil {
		return []bench.Row{bench.ErrorRow("P1", what, target, err)}
	}
	progress("P1: dispatcher, unordered")
	d, err := r.env.DispatcherRate(ch, sink, r.events, true, time.Minute)
	if err != nil {
		return []bench.Row{bench.ErrorRow("P1", what, target, err)}
	}
	r.p1 = d
	slower := min(consume, post)
	ratio := d / slower
	rows := []bench.Row{{
		ID: "P1", What: what, Value: bench.Rate(d),
		Baseline: fmt.Sprintf("consume %s, POST %s", bench.Rate(consume), bench.Rate(post)),
		Ratio:    fmt.Sprintf("%.2f", ratio), Target: target, Pass: bench.Verdict(ratio >= 0.8),
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
	return r.env.DispatcherRate(ch, sink, n, false, time.Minute)
}

func bound(parts int) float64 { return float64(parts) / sinkLatency.Seconds() }

// p2Row is P2, the 5 ms half of P7 and the plot's points.
func (r *runner) p2Row() []bench.Row {
	const what = "dispatcher throughput, ordered, sink answering after 5 ms, 8 partitions"
	target := ">= 0.9 x bound"
	// About 2.5 s of delivery at the bound: long enough to average over, short for the budget.
	n := int(bound(partitions) * r.seconds)
	for _, p := range []int{1, 2, 4} {
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
	v, err := r.env.DispatcherRate(ch, sink, n, false, time.Minute)
	if err != nil {
		return []bench.Row{bench.ErrorRow("P2", what, target, err)}
	}
	r.p2 = v
	r.points = append(r.points, bench.Point{Partitions: partitions, Rate: v, Bound: bound(partitions)})
	ratio := v / bound(partitions)
	rows := []bench.Row{{
		ID: "P2", What: what, Value: bench.Rate(v),
		Baseline: fmt.Sprintf("bound partitions/latency %s; 8 serial POST loops %s", bench.Rate(bound(partitions)), bench.Rate(serial)),
		Ratio:    fmt.Sprintf("%.2f (%.2f of serial)", ratio, v/serial), Target: target, Pass: bench.Verdict(ratio >= 0.9),
	}}
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

func (r *runner) p3Row() bench.Row {
	what := fmt.Sprintf("end-to-end latency receiver -> Kafka -> dispatcher -> subscriber, %d events/s", latencyRate)
	target := "p99 <= 10 ms"
	progress("P3 baseline: direct kafka-go produce -> consume at %d/s", latencyRate)
	chd, err := r.env.NewChannel("p3direct", partitions)
	if err != nil {
		return bench.ErrorRow("P3", what, target, err)
	}
	direct, err := r.env.DirectLatency(chd, r.latencyCount, latencyRate)
	if err != nil {
		return bench.ErrorRow("P3", what, target, err)
	}
	progress("P3: receiver -> dispatcher -> subscriber at %d/s", latencyRate)
	ch, err := r.env.NewChannel("p3", partitions)
	if err != nil {
		return bench.ErrorRow("P3", what, target, err)
	}
	sink, err := bench.StartSink(0)
	if err != nil {
		return bench.ErrorRow("P3", what, target, err)
	}
	defer sink.Close()
	l, err := r.env.EndToEndLatency(ch, sink, r.latencyCount, latencyRate)
	if err != nil {
		return bench.ErrorRow("P3", what, target, err)
	}
	return bench.Row{
		ID: "P3", What: what,
		Value:    fmt.Sprintf("p50 %s / p99 %s / max %s ms", ms(l.P50), ms(l.P99), ms(l.Max)),
		Baseline: fmt.Sprintf("direct p50 %s / p99 %s / max %s ms", ms(direct.P50), ms(direct.P99), ms(direct.Max)),
		Ratio:    fmt.Sprintf("p99 %.1f x", float64(l.P99)/float64(max(direct.P99, time.Microsecond))),
		Target:   target, Pass: bench.Verdict(l.P99 <= 10*time.Millisecond),
	}
}

func (r *runner) p4Row() bench.Row {
	what := fmt.Sprintf("receiver ingress throughput, acks=all, %d concurrent HTTP senders", ingressConc)
	target := ">= 0.7 x"
	progress("P4 baseline: raw kafka-go Writer, %d goroutines", ingressConc)
	chw, err := r.env.NewChannel("p4raw", partitions)
	if err != nil {
		return bench.ErrorRow("P4", what, target, err)
	}
	raw, err := r.env.WriterRate(chw, r.events, ingressConc)
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
	ratio := v / raw
	return bench.Row{
		ID: "P4", What: what, Value: bench.Rate(v),
		Baseline: fmt.Sprintf("raw Writer %s", bench.Rate(raw)),
		Ratio:    fmt.Sprintf("%.2f", ratio), Target: target, Pass: bench.Verdict(ratio >= 0.7),
	}
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
			Baseline: fmt.Sprintf("(absolute; all Ready after %s)", res.ReadyAfter.Round(100*time.Millisecond)),
			Ratio:    "-", Target: "<= 150 MB", Pass: bench.Verdict(res.IdleMB <= 150)},
		{ID: "P5 load", What: what + ", peak under load", Value: fmt.Sprintf("%.0f MB", res.LoadMB),
			Baseline: fmt.Sprintf("(absolute; %d deliveries)", res.Deliveries), Ratio: "-", Target: "(reported)", Pass: "-"},
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
