package dispatcher

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	dto "github.com/prometheus/client_model/go"

	"github.com/kafkachannel/kafkachannel/api/v1beta1"
	"github.com/kafkachannel/kafkachannel/environments/kafkatest"
	"github.com/kafkachannel/kafkachannel/environments/poll"
)

func seqOf(t *testing.T, ev *event.Event) int {
	t.Helper()
	v, ok := ev.Extensions()["seq"]
	if !ok {
		t.Fatalf("event %s has no seq", ev.ID())
	}
	n, err := strconv.Atoi(fmt.Sprint(v))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// metricValue sums the samples of a metric whose labels include want.
func metricValue(t *testing.T, rd *runningDispatcher, name string, want map[string]string) (float64, bool) {
	t.Helper()
	mfs, err := rd.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum, found := 0.0, false
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if labels[k] != v {
					continue metric
				}
			}
			found = true
			sum += value(m)
		}
	}
	return sum, found
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	return 0
}

func TestOrderedDeliveryPerPartitionAndSeedMetric(t *testing.T) {
	k := kafkatest.Start(t)
	e := newEnv(t, k, 3)
	s := newSink(t, nil)
	rd := e.start(nil)
	sp := sub("uid-a", 1, s.URL)
	rd.Update(Channel{Subscribers: []v1beta1.SubscriberSpec{sp}})
	rd.waitReady(t, sp)

	var ids []string
	for round := 0; round < 3; round++ {
		for p := 0; p < e.parts; p++ {
			ids = append(ids, e.produce(p, 20)...)
		}
	}
	s.waitIDs(t, ids, 30*time.Second)

	// Per partition, events arrive in the order they were produced.
	last := map[string]int{}
	for _, ev := range s.received() {
		p := strings.SplitN(ev.ID(), "-", 2)[0]
		seq := seqOf(t, ev)
		if seq <= last[p] {
			t.Fatalf("partition %s: event seq %d after %d", p, seq, last[p])
		}
		last[p] = seq
	}
	if got := len(s.received()); got != len(ids) {
		t.Errorf("received %d events, want exactly %d (no failures, so no duplicates)", got, len(ids))
	}
	// The event arrives unaltered: data and extensions.
	ev := s.received()[0]
	if ev.Type() != "test.event" || ev.Source() != "/test" || ev.DataContentType() != "application/json" ||
		!strings.Contains(string(ev.Data()), `"seq"`) {
		t.Errorf("event altered: %s", ev)
	}

	group := rd.groupID("uid-a")
	for p := 0; p < e.parts; p++ {
		v, ok := metricValue(t, rd, MetricConsumed, map[string]string{"consumer": group, "partition": strconv.Itoa(p), "topic": e.topic})
		if !ok || v != 60 {
			t.Errorf("%s{partition=%d} = %v (found %v), want 60", MetricConsumed, p, v, ok)
		}
	}
	if v, _ := metricValue(t, rd, MetricDeliveries, map[string]string{"consumer": group, "code_class": "2xx"}); v != 180 {
		t.Errorf("2xx deliveries = %v, want 180", v)
	}
	if v, _ := metricValue(t, rd, MetricReady, map[string]string{"consumer": group}); v != 1 {
		t.Errorf("ready gauge = %v", v)
	}
	// Both latency histograms saw every event (sample counts; the values are not asserted).
	for _, name := range []string{MetricLatency, MetricEventLatency} {
		poll.Eventually(t, 10*time.Second, "condition", func() error {
			if v, _ := metricValue(t, rd, name, map[string]string{"consumer": group}); v != 180 {
				return fmt.Errorf("%s has %v samples, want 180", name, v)
			}
			return nil
		})
	}
	poll.Eventually(t, 10*time.Second, "condition", func() error {
		for p, o := range e.committed("uid-a") {
			if o != 60 {
				return fmt.Errorf("partition %d committed %d, want 60", p, o)
			}
		}
		return nil
	})
	if v, ok := metricValue(t, rd, MetricLag, map[string]string{"consumer": group, "partition": "0"}); !ok || v != 0 {
		t.Errorf("lag = %v (found %v), want 0 once caught up", v, ok)
	}
}
