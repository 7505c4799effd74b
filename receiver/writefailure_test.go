package receiver

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

// With two of three brokers gone, the survivor answers UnknownTopicOrPartition for a topic
// that exists; the 503's text must say whose view that is, not that the topic is gone.
func TestWriteFailureUnknownTopicDoesNotClaimTheTopicIsGone(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"plain", kafka.UnknownTopicOrPartition},
		{"wrapped", fmt.Errorf("writing: %w", kafka.UnknownTopicOrPartition)},
		{"in the writer's per-message errors", kafka.WriteErrors{nil, kafka.UnknownTopicOrPartition}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, reason := writeFailure(tc.err, 10*time.Second, nil)
			if code != http.StatusServiceUnavailable {
				t.Errorf("code %d, want 503 (the sender retries)", code)
			}
			if strings.Contains(reason, "does not exist in Kafka") {
				t.Errorf("reason %q claims the topic does not exist", reason)
			}
			if !strings.Contains(reason, "broker that answered") {
				t.Errorf("reason %q does not say it is the answering broker's view", reason)
			}
		})
	}
}
