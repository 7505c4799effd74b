package receiver

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kafkachannel/kafkachannel/api/v1beta1"
	"github.com/kafkachannel/kafkachannel/environments/kafkatest"
	"github.com/kafkachannel/kafkachannel/internal/naming"
)

// channelSeries counts, per metric family, the series whose channel label starts with prefix.
func channelSeries(t *testing.T, reg *prometheus.Registry, prefix string) map[string]int {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "channel" && strings.HasPrefix(l.GetValue(), prefix) {
					out[mf.GetName()]++
				}
			}
		}
	}
	return out
}

// TestMetricsOfDeletedChannelsAreForgotten is issue 22's defect 9 (receiver): the per-channel
// series of a deleted KafkaChannel go away with it, so channels that come and go do not grow
// the receiver's metrics (and memory) without bound.
func TestMetricsOfDeletedChannelsAreForgotten(t *testing.T) {
	k := kafkatest.Start(t)
	r := startReceiver(t, k, nil)
	families := []string{"kafkachannel_receiver_events_total", "kafkachannel_receiver_request_duration_seconds", "kafkachannel_receiver_produce_duration_seconds"}
	for i := range 4 {
		name := fmt.Sprintf("c%d", i)
		key := "churn/" + name
		createChannel(t, k, "churn", name, 1, true)
		url := r.url + naming.ChannelPath("churn", name)
		if code, body := post(t, rawRequest(t, "POST", url, binaryHeaders, "hi")); code != http.StatusAccepted {
			t.Fatalf("%s: %d %q", key, code, body)
		}
		if code, _ := post(t, rawRequest(t, "POST", url, with(binaryHeaders, "ce-id", ""), "hi")); code != http.StatusBadRequest {
			t.Fatalf("%s without ce-id: %d, want 400", key, code)
		}
		series := channelSeries(t, r.registry, key)
		for _, f := range families {
			if series[f] == 0 {
				t.Fatalf("%s has no %s series while it exists: %v", key, f, series)
			}
		}

		kc := &v1beta1.KafkaChannel{}
		kc.Namespace, kc.Name = "churn", name
		if err := k8s.Delete(context.Background(), kc); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, "the series of the deleted "+key+" gone", func() error {
			if s := channelSeries(t, r.registry, key); len(s) > 0 {
				return fmt.Errorf("still %v", s)
			}
			return nil
		})
		// What came before is gone too: the count does not grow with each channel.
		if s := channelSeries(t, r.registry, "churn/"); len(s) > 0 {
			t.Fatalf("after %d channels came and went: series left %v", i+1, s)
		}
	}
}
