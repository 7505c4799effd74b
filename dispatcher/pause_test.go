package dispatcher

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/kafkachannel/kafkachannel/api/v1alpha1"
	"github.com/kafkachannel/kafkachannel/api/v1beta1"
	"github.com/kafkachannel/kafkachannel/environments/kafkatest"
	"github.com/kafkachannel/kafkachannel/environments/poll"
	"github.com/kafkachannel/kafkachannel/internal/replay"
)

func TestPausedFromAnnotations(t *testing.T) {
	cases := []struct {
		in   map[string]string
		want map[string]string
	}{
		{nil, nil},
		{map[string]string{v1beta1.DeliveryOrderAnnotation: "unordered"}, nil},
		{map[string]string{v1alpha1.PauseAnnotation("a"): "x.1", v1alpha1.PauseAnnotationPrefix: "y", "other/pause.b": "z"}, map[string]string{"a": "x.1"}},
	}
	for _, c := range cases {
		got := pausedFrom(c.in)
		if fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("pausedFrom(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}

// TestPauseOneSubscriberAndReplay pauses one of two subscribers the way a ResetOffset does:
// its member leaves the group (so the group is empty) while the other keeps delivering; the
// paused group's offsets move to the beginning and, resumed, it gets every event again, while
// the other subscriber sees each event exactly once.
func TestPauseOneSubscriberAndReplay(t *testing.T) {
	k := kafkatest.Start(t)
	e := newEnv(t, k, 2)
	a, b := newSink(t, nil), newSink(t, nil)
	rd := e.start(nil)
	sa, sb := sub("uid-a", 1, a.URL), sub("uid-b", 1, b.URL)
	ch := Channel{Subscribers: []v1beta1.SubscriberSpec{sa, sb}}
	rd.Update(ch)
	rd.waitReady(t, sa, sb)

	before := append(e.produce(0, 15), e.produce(1, 15)...)
	a.waitIDs(t, before, 30*time.Second)
	b.waitIDs(t, before, 30*time.Second)

	paused := ch
	paused.Paused = map[string]string{"uid-a": "reset.1"}
	rd.Update(paused)
	groupA := rd.groupID("uid-a")
	ctx := context.Background()
	poll.Eventually(t, 30*time.Second, "group of the paused subscriber empty", func() error {
		return replay.CheckGroupEmpty(ctx, e.client, groupA)
	})
	if err := replay.CheckGroupEmpty(ctx, e.client, rd.groupID("uid-b")); err == nil {
		t.Fatal("the other subscriber's group is empty too: only uid-a should pause")
	}
	aBefore := len(a.received())

	during := append(e.produce(0, 10), e.produce(1, 10)...)
	b.waitIDs(t, during, 30*time.Second)
	if got := len(a.received()); got != aBefore {
		t.Fatalf("the paused subscriber received %d events while paused", got-aBefore)
	}
	if st, _ := rd.State("uid-a"); st.Ready != ReadyTrue {
		t.Errorf("paused subscriber's state became %+v; a pause must not flap readiness", st)
	}

	parts := []int{0, 1}
	old, err := replay.Committed(ctx, e.client, groupA, e.topic, parts)
	if err != nil {
		t.Fatal(err)
	}
	if old[0] != 15 || old[1] != 15 {
		t.Fatalf("the paused member committed %v on leaving, want 15 per partition", old)
	}
	to, err := replay.Resolve(ctx, e.client, e.topic, parts, replay.Target{Earliest: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := replay.Commit(ctx, e.client, groupA, e.topic, to); err != nil {
		t.Fatalf("committing for the empty group: %v", err)
	}

	rd.Update(ch)
	rd.waitReady(t, sa, sb)
	after := append(e.produce(0, 5), e.produce(1, 5)...)
	all := append(append(append([]string{}, before...), during...), after...)
	b.waitIDs(t, all, 30*time.Second)
	poll.Eventually(t, 30*time.Second, "the reset subscriber gets every event again", func() error {
		got := a.ids()
		for _, id := range before {
			if got[id] < 2 {
				return fmt.Errorf("event %s delivered %d times, want twice (before and after the reset)", id, got[id])
			}
		}
		for _, id := range append(append([]string{}, during...), after...) {
			if got[id] < 1 {
				return fmt.Errorf("event %s sent during or after the pause missing", id)
			}
		}
		return nil
	})
	for id, n := range b.ids() {
		if n != 1 {
			t.Errorf("the other subscriber got %s %d times", id, n)
		}
	}
}

// members counts the members of a consumer group.
func (e *env) members(group string) int {
	e.t.Helper()
	res, err := e.client.DescribeGroups(context.Background(), &kafka.DescribeGroupsRequest{GroupIDs: []string{group}})
	if err != nil || len(res.Groups) != 1 || res.Groups[0].Error != nil {
		e.t.Fatalf("describing group %s: %v %+v", group, err, res)
	}
	return len(res.Groups[0].Members)
}

// TestPauseAcrossReplicasAndRestart: the group only empties once every replica paused, and a
// replica that starts while the pause is set never joins; lifting the pause brings both back.
func TestPauseAcrossReplicasAndRestart(t *testing.T) {
	k := kafkatest.Start(t)
	e := newEnv(t, k, 2)
	a, b := newSink(t, nil), newSink(t, nil)
	sa, sb := sub("uid-a", 1, a.URL), sub("uid-b", 1, b.URL)
	ch := Channel{Subscribers: []v1beta1.SubscriberSpec{sa, sb}}
	paused := ch
	paused.Paused = map[string]string{"uid-a": "reset.1"}
	rd1, rd2 := e.start(nil), e.start(nil)
	rd1.Update(ch)
	rd2.Update(ch)
	rd1.waitReady(t, sa, sb)
	rd2.waitReady(t, sa, sb)
	groupA := rd1.groupID("uid-a")
	poll.Eventually(t, 30*time.Second, "both replicas in the group", func() error {
		if n := e.members(groupA); n != 2 {
			return fmt.Errorf("%d members", n)
		}
		return nil
	})

	rd1.Update(paused)
	poll.Eventually(t, 30*time.Second, "the first replica left", func() error {
		if n := e.members(groupA); n != 1 {
			return fmt.Errorf("%d members", n)
		}
		return nil
	})
	rd2.Update(paused)
	poll.Eventually(t, 30*time.Second, "group empty once both paused", func() error {
		return replay.CheckGroupEmpty(context.Background(), e.client, groupA)
	})

	// A restarted replica learns of the pause with its first view of the channel.
	rd2.stop()
	rd3 := e.start(nil)
	rd3.Update(paused)
	rd3.waitReady(t, sb)
	if _, ok := rd3.State("uid-a"); ok {
		t.Error("the restarted replica reports the paused subscriber as if it ran a member")
	}
	if n := e.members(groupA); n != 0 {
		t.Fatalf("a replica started during the pause joined the group (%d members)", n)
	}

	rd1.Update(ch)
	rd3.Update(ch)
	ids := append(e.produce(0, 5), e.produce(1, 5)...)
	a.waitIDs(t, ids, 30*time.Second)
	b.waitIDs(t, ids, 30*time.Second)
}
