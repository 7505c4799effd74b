package bench

import "testing"

// The anchors read the perf tools' own summaries; the samples are the tools' output (Kafka
// 4.4.0) from a run of this bench, interim reports included.
func TestParseKafkaPerfToolOutput(t *testing.T) {
	for _, tc := range []struct {
		name     string
		parse    func(string) (PerfResult, error)
		out      string
		want     float64
		wantsErr bool
	}{
		{name: "producer summary after interim reports", parse: parseProducerPerf, want: 2577.319588, out: "" +
			"1200 records sent, 239.9 records/sec (0.06 MB/sec), 150.3 ms avg latency, 600.0 ms max latency.\n" +
			"2000 records sent, 2577.319588 records/sec (0.61 MB/sec), 200.22 ms avg latency, 638.00 ms max latency, 207 ms 50th, 252 ms 95th, 282 ms 99th, 283 ms 99.9th.\n"},
		{name: "producer with interim reports only", parse: parseProducerPerf, wantsErr: true,
			out: "1200 records sent, 239.9 records/sec (0.06 MB/sec), 150.3 ms avg latency, 600.0 ms max latency.\n"},
		{name: "consumer CSV: fetch rate, not the one with the group join", parse: parseConsumerPerf, want: 16129.0323, out: "" +
			"start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec\n" +
			"2026-12-04 18:46:47:433, 2026-12-04 18:46:47:824, 0.4768, 1.2195, 2000, 5115.0895, 267, 124, 3.8455, 16129.0323\n"},
		{name: "consumer without a header", parse: parseConsumerPerf, wantsErr: true,
			out: "2026-12-04 18:46:47:433, 2026-12-04 18:46:47:824, 0.4768, 1.2195, 2000, 5115.0895, 267, 124, 3.8455, 16129.0323\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.parse(tc.out)
			if tc.wantsErr {
				if err == nil {
					t.Fatalf("want an error, got %+v", got)
				}
				return
			}
			if err != nil || got.Rate != tc.want {
				t.Fatalf("got %+v, %v; want rate %g", got, err, tc.want)
			}
		})
	}
}
