package dispatcher

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/kafkachannel/kafkachannel/api/v1beta1"
	"github.com/kafkachannel/kafkachannel/environments/kafkatest"
	"github.com/kafkachannel/kafkachannel/environments/poll"
)

// With the default timeouts, a member with slow deliveries in flight when a replica joins
// drains, commits and rejoins within the rebalance timeout: one rebalance. Were the drain
// allowed as long as the rebalance timeout, the coordinator would evict the draining member
// and its late join would start another rebalance (a cascade).
//
// Deliveries of 8 s each finish within the drain, so the member rejoins after about 9 s; a
// delivery that outlives the drain is abandoned only when DrainTimeout ends, which is the case
// that overran a rebalance timeout as long as the drain.
func TestSlowSubscriberDuringRebalanceCausesOneRebalance(t *testing.T) {
	if testing.Short() {
		t.Skip("deliveries take 8 s and more")
	}
	cases := []struct {
		name string
		// first is how long the first delivery of each of the first two events takes; every
		// other delivery is instant.
		first time.Duration
	}{
		{"each delivery 8 s", 8 * time.Second},
		{"deliveries outlive the drain", 2 * time.Minute},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			k := kafkatest.Start(t)
			e := newEnv(t, k, 2)
			var mu sync.Mutex
			seen := map[string]bool{}
			release := make(chan struct{})
			s := newSink(t, func(ev *event.Event, w http.ResponseWriter) bool {
				mu.Lock()
				slowOne := len(seen) < 2 && !seen[ev.ID()]
				seen[ev.ID()] = true
				mu.Unlock()
				if slowOne {
					select {
					case <-time.After(tc.first):
					case <-release:
					}
				}
				w.WriteHeader(http.StatusAccepted)
				return true
			})
			t.Cleanup(func() { close(release) }) // before the sink's Close waits for handlers
			sp := sub("uid", 1, s.URL)
			ch := Channel{Subscribers: []v1beta1.SubscriberSpec{sp}}
			// The production defaults for everything that decides the rebalance's timing.
			defaults := func(c *Config) {
				c.DrainTimeout, c.RebalanceTimeout, c.HeartbeatInterval, c.SessionTimeout, c.MaxWait = 0, 0, 0, 0, 0
			}
			d1 := e.start(defaults)
			d1.Update(ch)
			d1.waitReady(t, sp)
			first := append(e.produce(0, 1), e.produce(1, 1)...)
			poll.Eventually(t, 30*time.Second, "both slow deliveries started", func() error {
				if n := s.attemptCount(); n < 2 {
					return fmt.Errorf("%d deliveries started", n)
				}
				return nil
			})
			d2 := e.start(defaults)
			d2.Update(ch)
			d2.waitReady(t, sp)
			s.waitIDs(t, first, 90*time.Second)
			// The group settles when each replica consumes its own partition; a replica evicted
			// for rejoining late gets its partition only in a further generation.
			c1, _ := metricValue(t, d1, MetricConsumed, nil)
			poll.Eventually(t, 90*time.Second, "both replicas consuming after the rebalance", func() error {
				e.produce(0, 1)
				e.produce(1, 1)
				n1, _ := metricValue(t, d1, MetricConsumed, nil)
				n2, _ := metricValue(t, d2, MetricConsumed, nil)
				if n1 <= c1 || n2 == 0 {
					return fmt.Errorf("consumed since the rebalance: first replica %v, second %v", n1-c1, n2)
				}
				return nil
			})
			group := d1.groupID("uid")
			g1, _ := metricValue(t, d1, MetricGenerations, map[string]string{"consumer": group})
			g2, _ := metricValue(t, d2, MetricGenerations, map[string]string{"consumer": group})
			if g1 != 2 || g2 != 1 {
				t.Errorf("generations joined: first replica %v, second %v; want 2 and 1 (one rebalance)", g1, g2)
			}
		})
	}
}

// A drain that would overrun the rebalance timeout is refused with a message saying what to
// change, rather than discovered as cascading rebalances.
func TestConfigDrainMustFitTheRebalanceTimeout(t *testing.T) {
	base := Config{Brokers: []string{"127.0.0.1:9092"}, ChannelNamespace: "ns", ChannelName: "c"}
	cases := []struct {
		name string
		mod  func(*Config)
		ok   bool
	}{
		{"defaults", func(*Config) {}, true},
		{"drain as long as the rebalance timeout", func(c *Config) { c.DrainTimeout, c.RebalanceTimeout = 10*time.Second, 10*time.Second }, false},
		{"no room for the final commit", func(c *Config) {
			c.DrainTimeout, c.RebalanceTimeout, c.HeartbeatInterval, c.MaxWait = 8*time.Second, 10*time.Second, time.Second, 500*time.Millisecond
		}, false},
		{"room left", func(c *Config) {
			c.DrainTimeout, c.RebalanceTimeout, c.HeartbeatInterval, c.MaxWait = 6*time.Second, 10*time.Second, time.Second, 500*time.Millisecond
		}, true},
		{"drain as long as the session timeout", func(c *Config) { c.DrainTimeout, c.SessionTimeout = 10*time.Second, 10*time.Second }, false},
		{"long drain with long group timeouts", func(c *Config) {
			c.DrainTimeout, c.RebalanceTimeout, c.SessionTimeout = time.Minute, 90*time.Second, 90*time.Second
		}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := base
			tc.mod(&cfg)
			_, err := New(cfg)
			if tc.ok && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !tc.ok && (err == nil || !strings.Contains(err.Error(), "drain timeout")) {
				t.Fatalf("err = %v, want the drain refused", err)
			}
		})
	}
	if need := DefaultHeartbeatInterval + DefaultDrainTimeout + DefaultMaxWait + FinalCommitRoom; need > min(DefaultRebalanceTimeout, DefaultSessionTimeout) {
		t.Errorf("the defaults do not fit: need %s, rebalance timeout %s, session timeout %s", need, DefaultRebalanceTimeout, DefaultSessionTimeout)
	}
}
