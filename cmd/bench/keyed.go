package main

import (
	"fmt"
	"time"

	"github.com/kafkachannel/kafkachannel/bench"
	"github.com/kafkachannel/kafkachannel/dispatcher"
)

// p2kKeys is P2k's number of distinct record keys.
const p2kKeys = 1000

// p2kRow is P2k: ordered-by-key delivery to the 5 ms sink of P2. Its limit is the smaller of
// what the in-flight cap allows (partitions x MaxInFlight deliveries of 5 ms each) and as many
// serial POST loops as the cap, the same records to the same sink with no Kafka.
func (r *runner) p2kRow() []bench.Row {
	what := fmt.Sprintf("dispatcher throughput, ordered-by-key, %d keys, sink answering after 5 ms, %d partitions", p2kKeys, partitions)
	const target = ">= 0.8 x min(in-flight cap / latency, POST loops)"
	inflight := partitions * dispatcher.DefaultMaxInFlight
	capRate := float64(inflight) / sinkLatency.Seconds()
	n := r.events
	ch, err := r.env.NewChannel("p2k", partitions)
	if err == nil {
		err = r.env.FillKeyed(ch, "p2k", min(n, 10000), p2kKeys)
	}
	sink, serr := bench.StartSink(sinkLatency)
	if err == nil {
		err = serr
	}
	if err != nil {
		return []bench.Row{bench.ErrorRow("P2k", what, target, err)}
	}
	defer sink.Close()
	progress("P2k practical bound: %d serial POST loops to a %s sink", inflight, sinkLatency)
	loops, err := r.env.SerialPostRate(ch, sink, min(n, 10000), inflight)
	if err != nil {
		return []bench.Row{bench.ErrorRow("P2k", what, target, err)}
	}
	progress("P2k: dispatcher, ordered-by-key, %d keys, %d partitions, %s sink", p2kKeys, partitions, sinkLatency)
	v, err := r.env.KeyedDispatcherRate(ch, sink, n, p2kKeys, r.env.Within(2*time.Minute))
	if err != nil {
		return []bench.Row{bench.ErrorRow("P2k", what, target, err)}
	}
	limit := min(capRate, loops)
	return []bench.Row{{
		ID: "P2k", What: what, Value: bench.Rate(v),
		Baseline: fmt.Sprintf("in-flight cap %d / latency %s; %d serial POST loops %s", inflight, bench.Rate(capRate), inflight, bench.Rate(loops)),
		Ratio:    fmt.Sprintf("%.2f of the smaller", v/limit), Target: target, Pass: bench.Verdict(v/limit >= 0.8),
	}}
}
