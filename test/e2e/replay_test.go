package e2e

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kafkachannel/kafkachannel/api/v1alpha1"
	v1beta1 "github.com/kafkachannel/kafkachannel/api/v1beta1"
	"github.com/kafkachannel/kafkachannel/environments/localstack"
	"github.com/kafkachannel/kafkachannel/environments/poll"
)

// counts returns how often r received each of ids.
func (r *recorder) counts(ids []string) map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]int, len(ids))
	for _, id := range ids {
		out[id] = len(r.got[id])
	}
	return out
}

// waitCounts waits until r received each id exactly want(id) times.
func (r *recorder) waitCounts(t *testing.T, ids []string, timeout time.Duration, what string, want func(id string) int) {
	t.Helper()
	poll.Eventually(t, timeout, fmt.Sprintf("subscriber %s: %s", r.name, what), func() error {
		got := r.counts(ids)
		bad := 0
		first := ""
		for _, id := range ids {
			if got[id] != want(id) {
				if bad == 0 {
					first = fmt.Sprintf("%s received %d times, want %d", id, got[id], want(id))
				}
				bad++
			}
		}
		if bad > 0 {
			return fmt.Errorf("%d of %d events off, e.g. %s", bad, len(ids), first)
		}
		return nil
	})
}

// applyReset creates a ResetOffset for subscriber uid of the e2e channel and waits for its
// outcome.
func applyReset(t *testing.T, s *localstack.Stack, name, uid, at string) *v1alpha1.ResetOffset {
	t.Helper()
	ctx := context.Background()
	ro := &v1alpha1.ResetOffset{
		ObjectMeta: metav1.ObjectMeta{Namespace: chNS, Name: name},
		Spec: v1alpha1.ResetOffsetSpec{
			Ref:    v1alpha1.Ref{KafkaChannel: chName, SubscriberUID: uid},
			Offset: v1alpha1.OffsetSpec{Time: at},
		},
	}
	if err := s.Client.Create(ctx, ro); err != nil {
		t.Fatalf("creating ResetOffset %s: %v", name, err)
	}
	poll.Eventually(t, 2*time.Minute, "ResetOffset "+name+" finished", func() error {
		if err := s.Client.Get(ctx, client.ObjectKeyFromObject(ro), ro); err != nil {
			return err
		}
		if c := meta.FindStatusCondition(ro.Status.Conditions, v1alpha1.ConditionSucceeded); c != nil && c.Status != metav1.ConditionUnknown {
			return nil
		}
		return fmt.Errorf("conditions %+v", ro.Status.Conditions)
	})
	return ro
}

func succeeded(ro *v1alpha1.ResetOffset) *metav1.Condition {
	return meta.FindStatusCondition(ro.Status.Conditions, v1alpha1.ConditionSucceeded)
}

// waitUnpaused waits until no ResetOffset holds a pause on the channel.
func waitUnpaused(t *testing.T, s *localstack.Stack, uid string) {
	t.Helper()
	poll.Eventually(t, time.Minute, "pause of "+uid+" lifted", func() error {
		if v, ok := getChannel(t, s).Annotations[v1alpha1.PauseAnnotation(uid)]; ok {
			return fmt.Errorf("still paused by %s", v)
		}
		return nil
	})
}

// TestReplay runs ResetOffsets on the whole system: the dispatcher and manager processes
// coordinate through the API server and Kafka exactly as they would in a cluster.
func TestReplay(t *testing.T) {
	// A short timeout so the failing reset below gives up quickly.
	s := startStackWith(t, map[string]string{"RESET_OFFSET_TIMEOUT": "15s"})
	ctx := context.Background()
	url := fmt.Sprintf("%s/%s/%s", s.ReceiverURL, chNS, chName)
	one, two := newRecorder(t, "one"), newRecorder(t, "two")
	ch := &v1beta1.KafkaChannel{
		ObjectMeta: metav1.ObjectMeta{Name: chName, Namespace: chNS},
		Spec: v1beta1.KafkaChannelSpec{NumPartitions: 4,
			Subscribers: []v1beta1.SubscriberSpec{subscriber("one", one), subscriber("two", two)}},
	}
	if err := s.Client.Create(ctx, ch); err != nil {
		t.Fatal(err)
	}
	waitSubscribers(t, s, "uid-one", "uid-two")
	once := func(string) int { return 1 }

	first, _ := sendBatch(t, url, "first", 500)
	one.waitCounts(t, first, 2*time.Minute, "500 events once", once)
	two.waitCounts(t, first, 2*time.Minute, "500 events once", once)

	var load []string
	t.Run("reset to earliest under load replays everything to one subscriber only", func(t *testing.T) {
		f := startFlow(url, "load", 20*time.Millisecond)
		poll.Eventually(t, 30*time.Second, "events flowing", func() error {
			if n := f.count(); n < 20 {
				return fmt.Errorf("%d accepted", n)
			}
			return nil
		})
		ro := applyReset(t, s, "to-earliest", "uid-one", "earliest")
		if c := succeeded(ro); c.Status != metav1.ConditionTrue {
			t.Fatalf("Succeeded = %+v", c)
		}
		var total int64
		for _, p := range ro.Status.Partitions {
			if p.NewOffset != 0 || p.OldOffset < 0 {
				t.Errorf("partition %+v: want the new offset 0", p)
			}
			total += p.OldOffset
		}
		if len(ro.Status.Partitions) != 4 || total < 500 {
			t.Errorf("status.partitions = %+v: want 4 partitions whose old offsets add up to at least 500", ro.Status.Partitions)
		}
		waitUnpaused(t, s, "uid-one")
		after := f.count()
		poll.Eventually(t, 30*time.Second, "events keep flowing after the reset", func() error {
			if n := f.count(); n < after+20 {
				return fmt.Errorf("%d accepted since", n-after)
			}
			return nil
		})
		load = f.end()
		one.waitCounts(t, first, 2*time.Minute, "the 500 events again", func(string) int { return 2 })
		// Events of the flow sent before the reset are replayed too; those after it come once.
		one.waitAll(t, load, 2*time.Minute)
		two.waitCounts(t, append(append([]string{}, first...), load...), 2*time.Minute, "every event exactly once", once)
	})
	if t.Failed() {
		return
	}

	t.Run("reset to a time replays exactly the events at or after it", func(t *testing.T) {
		// Kafka timestamps are milliseconds: the boundary is the next whole millisecond, and
		// nothing is sent before it has passed.
		boundary := time.Now().Truncate(time.Millisecond).Add(time.Millisecond)
		poll.Eventually(t, 5*time.Second, "clock past the boundary", func() error {
			if !time.Now().After(boundary) {
				return errors.New("not yet")
			}
			return nil
		})
		mid, _ := sendBatch(t, url, "mid", 100)
		one.waitAll(t, mid, 2*time.Minute)
		two.waitAll(t, mid, 2*time.Minute)
		older := append(append([]string{}, first...), load...)
		beforeOne := one.counts(older)

		ro := applyReset(t, s, "to-boundary", "uid-one", boundary.UTC().Format(time.RFC3339Nano))
		if c := succeeded(ro); c.Status != metav1.ConditionTrue {
			t.Fatalf("Succeeded = %+v", c)
		}
		waitUnpaused(t, s, "uid-one")
		one.waitCounts(t, mid, 2*time.Minute, "the events after the boundary twice", func(string) int { return 2 })
		// Delivery is in order per partition and the mid events are the newest in each: an older
		// event replayed by mistake would have arrived before them.
		one.waitCounts(t, older, 10*time.Second, "older events not replayed", func(id string) int { return beforeOne[id] })
		two.waitCounts(t, append(append([]string{}, older...), mid...), time.Minute, "every event exactly once", once)
	})
	if t.Failed() {
		return
	}

	t.Run("a reset Kafka does not answer fails and the subscriber continues without loss", func(t *testing.T) {
		if s.Kafka == nil {
			t.Skip("needs the embedded Kafka to refuse the manager's requests")
		}
		// Kafka refuses DescribeGroups, which only the reset uses: the manager cannot confirm
		// the pause, and deliveries of both subscribers go on through other requests.
		var cut atomic.Bool
		cut.Store(true)
		s.Kafka.ControlKey(kmsg.DescribeGroups.Int16(), func(kmsg.Request) (kmsg.Response, error, bool) {
			if !cut.Load() {
				return nil, nil, false
			}
			s.Kafka.KeepControl()
			return nil, errors.New("cut off for the test"), true
		})
		defer cut.Store(false)
		before := one.counts(first)
		f := startFlow(url, "cut", 20*time.Millisecond)
		ro := applyReset(t, s, "cannot-finish", "uid-one", "earliest")
		c := succeeded(ro)
		if c.Status != metav1.ConditionFalse || c.Reason != "KafkaUnreachable" {
			t.Fatalf("Succeeded = %+v, want False KafkaUnreachable", c)
		}
		if len(ro.Status.Partitions) != 0 {
			t.Errorf("status.partitions = %+v after a failed reset", ro.Status.Partitions)
		}
		waitUnpaused(t, s, "uid-one")
		n := f.count()
		poll.Eventually(t, 30*time.Second, "events keep flowing", func() error {
			if f.count() < n+20 {
				return errors.New("not yet")
			}
			return nil
		})
		cutIDs := f.end()
		// Paused while the reset tried, then resumed where it was: every event once, nothing
		// older again.
		one.waitCounts(t, cutIDs, 2*time.Minute, "events sent around the failed reset once", once)
		two.waitCounts(t, cutIDs, time.Minute, "events sent around the failed reset once", once)
		one.waitCounts(t, first, 10*time.Second, "nothing older replayed", func(id string) int { return before[id] })
	})
}
