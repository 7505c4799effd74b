package dispatcher

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kafkachannel/kafkachannel/api/v1beta1"
	"github.com/kafkachannel/kafkachannel/environments/kafkatest"
	"github.com/kafkachannel/kafkachannel/environments/poll"
	"github.com/kafkachannel/kafkachannel/internal/replay"
)

// Subscribers that come and go leave nothing behind, whichever state they left from: no metric
// series in any family (the ready gauge included), no entry in the dispatcher's maps. A
// subscriber removed while paused by a ResetOffset, or after its configuration failed, runs no
// member when it goes, and its series used to stay for the life of the process.
func TestRemovedSubscribersLeaveNoStateOnAnyPath(t *testing.T) {
	k := kafkatest.Start(t)
	e := newEnv(t, k, 2)
	rd := e.start(nil)
	const badPEM = "not a certificate"
	keeper := sub("uid-keeper", 1, newSink(t, nil).URL)

	// Each subject reaches its state in two updates: how it starts, then what happens to it
	// before it is removed. ran says whether it consumed events (so has consumer series).
	type subject struct {
		name   string
		start  v1beta1.SubscriberSpec
		before v1beta1.SubscriberSpec
		pause  bool
		ran    bool
	}
	mk := func(uid string) v1beta1.SubscriberSpec { return sub(uid, 1, newSink(t, nil).URL) }
	withBadCA := func(s v1beta1.SubscriberSpec, gen int64) v1beta1.SubscriberSpec {
		s.Generation = gen
		s.SubscriberCACerts = ptr(badPEM)
		return s
	}
	running, paused, ranThenFailed := mk("uid-running"), mk("uid-paused"), mk("uid-ran-then-failed")
	failed := withBadCA(mk("uid-failed"), 1)
	subjects := []subject{
		{name: "removed while running", start: running, before: running, ran: true},
		{name: "removed while paused", start: paused, before: paused, pause: true, ran: true},
		{name: "removed after its configuration failed at start", start: failed, before: failed},
		{name: "removed after a running member's configuration failed", start: ranThenFailed, before: withBadCA(ranThenFailed, 2), ran: true},
	}

	ch := Channel{Subscribers: []v1beta1.SubscriberSpec{keeper}}
	for _, s := range subjects {
		ch.Subscribers = append(ch.Subscribers, s.start)
	}
	rd.Update(ch)
	for _, s := range subjects {
		if s.ran {
			rd.waitReady(t, s.start)
		}
	}
	rd.waitReady(t, keeper)
	e.produce(0, 3)
	e.produce(1, 3)

	ch = Channel{Subscribers: []v1beta1.SubscriberSpec{keeper}, Paused: map[string]string{}}
	for _, s := range subjects {
		ch.Subscribers = append(ch.Subscribers, s.before)
		if s.pause {
			ch.Paused[s.before.UID] = "reset.1"
		}
	}
	poll.Eventually(t, 30*time.Second, "every subject in its state before removal, with series", func() error {
		for _, s := range subjects {
			group := rd.groupID(s.before.UID)
			got := seriesOf(t, rd, "consumer", group)
			if len(got[MetricReady]) == 0 {
				return fmt.Errorf("%s: no %s series yet", s.name, MetricReady)
			}
			if v, _ := metricValue(t, rd, MetricConsumed, map[string]string{"consumer": group}); s.ran && v < 6 {
				return fmt.Errorf("%s: consumed %v of 6 events", s.name, v)
			}
		}
		return nil
	})
	rd.Update(ch)
	poll.Eventually(t, 30*time.Second, "subjects paused or failed", func() error {
		for _, s := range subjects {
			st, _ := rd.State(s.before.UID)
			switch {
			case s.pause:
				if err := replay.CheckGroupEmpty(context.Background(), e.client, rd.groupID(s.before.UID)); err != nil {
					return fmt.Errorf("%s: %w", s.name, err)
				}
			case s.before.SubscriberCACerts != nil:
				if st.Ready != ReadyFalse || st.Generation != s.before.Generation {
					return fmt.Errorf("%s: state %+v, want failed at generation %d", s.name, st, s.before.Generation)
				}
			}
		}
		return nil
	})

	// The subscribers go; the pause annotation of the removed one may outlive it (the manager
	// lifts it when its ResetOffset ends).
	rd.Update(Channel{Subscribers: []v1beta1.SubscriberSpec{keeper}, Paused: ch.Paused})
	poll.Eventually(t, 30*time.Second, "no state of removed subscribers", func() error {
		var left []string
		for _, s := range subjects {
			if got := seriesOf(t, rd, "consumer", rd.groupID(s.before.UID)); len(got) > 0 {
				families := slices.Sorted(maps.Keys(got))
				left = append(left, fmt.Sprintf("%s: %s", s.name, strings.Join(families, ",")))
			}
		}
		if len(left) > 0 {
			return fmt.Errorf("series left: %s", strings.Join(left, "; "))
		}
		rd.mu.Lock()
		states, clients := len(rd.states), len(rd.clients)
		rd.mu.Unlock()
		if states != 1 || clients != 1 {
			return fmt.Errorf("%d subscriber states and %d HTTP clients, want 1 and 1 (the keeper's)", states, clients)
		}
		return nil
	})
	// The remaining subscriber keeps its series and keeps delivering.
	if got := seriesOf(t, rd, "consumer", rd.groupID(keeper.UID)); len(got[MetricReady]) != 1 || len(got[MetricConsumed]) != 2 {
		t.Errorf("the keeper's series: %v", got)
	}
}
