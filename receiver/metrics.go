package receiver

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Metric label values for requests that name no known channel: the label must not take values
// from the request, or any client could grow the series without bound.
const unknownChannel = "unknown"

type metrics struct {
	events         *prometheus.CounterVec
	requestLatency *prometheus.HistogramVec
	produceLatency *prometheus.HistogramVec
	// bodiesReading counts requests between their headers and the end of their body: a high
	// value with little traffic is senders holding connections open without sending.
	bodiesReading prometheus.Gauge
}

// Buckets from 0.25 ms: a produce on loopback with a 1 ms batch timeout takes about 1-3 ms.
var latencyBuckets = []float64{.00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

func newMetrics(reg prometheus.Registerer, budget *byteBudget) (*metrics, error) {
	m := &metrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "kafkachannel",
			Subsystem: "receiver",
			Name:      "events_total",
			Help:      "Events received, by channel (namespace/name) and HTTP response code: 202 accepted, anything else rejected.",
		}, []string{"channel", "code"}),
		requestLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "kafkachannel",
			Subsystem: "receiver",
			Name:      "request_duration_seconds",
			Help:      "Time from receiving a request to answering it, by channel and HTTP response code.",
			Buckets:   latencyBuckets,
		}, []string{"channel", "code"}),
		produceLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "kafkachannel",
			Subsystem: "receiver",
			Name:      "produce_duration_seconds",
			Help:      "Time Kafka took to acknowledge (with acks=all) or fail one event's record, by channel and result.",
			Buckets:   latencyBuckets,
		}, []string{"channel", "result"}),
		bodiesReading: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "kafkachannel",
			Subsystem: "receiver",
			Name:      "bodies_reading",
			Help:      "Requests whose headers are in and whose body is being read.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	bodyBytes := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "kafkachannel",
		Subsystem: "receiver",
		Name:      "body_bytes",
		Help:      "Bytes of request bodies held, taken from the body budget (kafkachannel_receiver_body_budget_bytes); at the budget, new bodies get 503.",
	}, func() float64 { return float64(budget.used.Load()) })
	budgetBytes := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "kafkachannel",
		Subsystem: "receiver",
		Name:      "body_budget_bytes",
		Help:      "The most bytes of request bodies held at once (--body-budget-bytes).",
	}, func() float64 { return float64(budget.limit) })
	for _, c := range []prometheus.Collector{m.events, m.requestLatency, m.produceLatency, m.bodiesReading, bodyBytes, budgetBytes} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering receiver metrics (one receiver per registry): %w", err)
		}
	}
	return m, nil
}

// forget deletes every series of a channel, once it is deleted: channels come and go, and
// their series must not stay behind, in the receiver's memory and in every scrape.
func (m *metrics) forget(channel string) {
	l := prometheus.Labels{"channel": channel}
	m.events.DeletePartialMatch(l)
	m.requestLatency.DeletePartialMatch(l)
	m.produceLatency.DeletePartialMatch(l)
}
