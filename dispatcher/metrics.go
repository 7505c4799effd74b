package dispatcher

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metric names. eventing_kafka_consumed_msg_count keeps the name and labels of the seed
// (eventing-kafka's distributed channel) so existing dashboards keep working.
const (
	MetricConsumed     = "eventing_kafka_consumed_msg_count"
	MetricDeliveries   = "kafkachannel_dispatcher_deliveries_total"
	MetricRetries      = "kafkachannel_dispatcher_retries_total"
	MetricDeadLettered = "kafkachannel_dispatcher_dead_lettered_total"
	MetricDiscarded    = "kafkachannel_dispatcher_discarded_total"
	MetricLost         = "kafkachannel_dispatcher_lost_total"
	MetricLatency      = "kafkachannel_dispatcher_dispatch_latency_seconds"
	MetricEventLatency = "kafkachannel_dispatcher_event_latency_seconds"
	MetricLag          = "kafkachannel_dispatcher_consumer_lag"
	MetricReady        = "kafkachannel_dispatcher_subscriber_ready"
	MetricGenerations  = "kafkachannel_dispatcher_group_generations_total"
	MetricCarries      = "kafkachannel_dispatcher_coordinator_carries_total"
)

type metrics struct {
	consumed     *prometheus.CounterVec   // consumer, partition, topic
	deliveries   *prometheus.CounterVec   // consumer, destination, code_class
	retries      *prometheus.CounterVec   // consumer, destination
	deadLettered *prometheus.CounterVec   // consumer, reason
	discarded    *prometheus.CounterVec   // consumer, reason
	lost         *prometheus.CounterVec   // consumer
	latency      *prometheus.HistogramVec // consumer
	eventLatency *prometheus.HistogramVec // consumer
	lag          *prometheus.GaugeVec     // consumer, partition, topic
	ready        *prometheus.GaugeVec     // consumer
	generations  *prometheus.CounterVec   // consumer
	carries      *prometheus.CounterVec   // consumer
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		consumed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricConsumed,
			Help: "Records consumed from the channel's topic, per consumer group and partition.",
		}, []string{"consumer", "partition", "topic"}),
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricDeliveries,
			Help: "HTTP delivery attempts by destination kind (subscriber, reply, deadletter) and response code class (2xx..5xx, or error, timeout, tls, reply_too_large).",
		}, []string{"consumer", "destination", "code_class"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricRetries,
			Help: "Delivery attempts that were retries of an earlier failed attempt.",
		}, []string{"consumer", "destination"}),
		deadLettered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricDeadLettered,
			Help: "Events acknowledged by the dead-letter sink, by why they went there.",
		}, []string{"consumer", "reason"}),
		discarded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricDiscarded,
			Help: "Records skipped, by reason (not_cloudevent, reply_dropped).",
		}, []string{"consumer", "reason"}),
		lost: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricLost,
			Help: "Events lost for good: delivery and dead-lettering both failed, or no dead-letter sink was configured.",
		}, []string{"consumer"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    MetricLatency,
			Help:    "Time from fetching a record to finishing it (delivered, replied, dead-lettered or lost), retries included.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"consumer"}),
		eventLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    MetricEventLatency,
			Help:    "End-to-end latency: time from the record's Kafka timestamp (when the receiver wrote it) to finishing it, time waiting in the topic included.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}, []string{"consumer"}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: MetricLag,
			Help: "Records between the group's committed offset and the partition's high watermark, as last seen, reported by the partition's current owner.",
		}, []string{"consumer", "partition", "topic"}),
		ready: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: MetricReady,
			Help: "1 once the subscriber's group joined and its start offsets are committed, else 0.",
		}, []string{"consumer"}),
		generations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricGenerations,
			Help: "Consumer group generations this replica joined: one per rebalance it took part in; a steady climb means rebalances cascade.",
		}, []string{"consumer"}),
		carries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricCarries,
			Help: "Generations whose partitions this replica went on delivering after they ended because no group coordinator answered.",
		}, []string{"consumer"}),
	}
	for _, c := range []prometheus.Collector{m.consumed, m.deliveries, m.retries, m.deadLettered, m.discarded, m.lost, m.latency, m.eventLatency, m.lag, m.ready, m.generations, m.carries} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// forget drops the series of a removed subscriber so /metrics does not grow forever.
func (m *metrics) forget(consumer string) {
	l := prometheus.Labels{"consumer": consumer}
	m.consumed.DeletePartialMatch(l)
	m.deliveries.DeletePartialMatch(l)
	m.retries.DeletePartialMatch(l)
	m.deadLettered.DeletePartialMatch(l)
	m.discarded.DeletePartialMatch(l)
	m.lost.DeletePartialMatch(l)
	m.latency.DeletePartialMatch(l)
	m.eventLatency.DeletePartialMatch(l)
	m.lag.DeletePartialMatch(l)
	m.ready.DeletePartialMatch(l)
	m.generations.DeletePartialMatch(l)
	m.carries.DeletePartialMatch(l)
}
