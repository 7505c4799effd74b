package controllers

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/segmentio/kafka-go"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/kafkachannel/kafkachannel/api/v1alpha1"
	"github.com/kafkachannel/kafkachannel/api/v1beta1"
	"github.com/kafkachannel/kafkachannel/dispatcher"
	"github.com/kafkachannel/kafkachannel/dispatcher/kube"
	"github.com/kafkachannel/kafkachannel/environments/envtestbin"
	"github.com/kafkachannel/kafkachannel/environments/kafkatest"
	"github.com/kafkachannel/kafkachannel/internal/kafkabinding"
	"github.com/kafkachannel/kafkachannel/internal/naming"
	"github.com/kafkachannel/kafkachannel/internal/replay"
)

func resetOffset(ns, name string, ref v1alpha1.Ref, at string) *v1alpha1.ResetOffset {
	return &v1alpha1.ResetOffset{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       v1alpha1.ResetOffsetSpec{Ref: ref, Offset: v1alpha1.OffsetSpec{Time: at}},
	}
}

func TestResetOffsetValidation(t *testing.T) {
	envtestbin.Skip(t, noEnv)
	ctx := context.Background()
	ns := newNamespace(t, ctx, "ro-valid")
	byChannel := v1alpha1.Ref{KafkaChannel: "orders", SubscriberUID: "0b1c"}
	cases := []struct {
		name    string
		ref     v1alpha1.Ref
		at      string
		wantErr string // "" = accepted
	}{
		{"earliest", byChannel, "earliest", ""},
		{"latest", byChannel, "latest", ""},
		{"UTC time", byChannel, "2026-12-01T10:00:00Z", ""},
		{"offset time with fraction", byChannel, "2026-12-01T10:00:00.250+02:00", ""},
		{"by subscription", v1alpha1.Ref{Subscription: "my-sub"}, "earliest", ""},
		{"words", byChannel, "yesterday", "offset.time must be earliest, latest, or an RFC 3339 time"},
		{"space instead of T", byChannel, "2026-12-01 10:00:00Z", "offset.time must be earliest, latest, or an RFC 3339 time"},
		{"no zone", byChannel, "2026-12-01T10:00:00", "offset.time must be earliest, latest, or an RFC 3339 time"},
		{"capitalised", byChannel, "Earliest", "offset.time must be earliest, latest, or an RFC 3339 time"},
		{"both kinds of ref", v1alpha1.Ref{Subscription: "s", KafkaChannel: "c", SubscriberUID: "u"}, "earliest", "ref needs either subscription, or kafkaChannel together with subscriberUid"},
		{"no ref", v1alpha1.Ref{}, "earliest", "ref needs either subscription"},
		{"channel without uid", v1alpha1.Ref{KafkaChannel: "c"}, "earliest", "ref.kafkaChannel and ref.subscriberUid go together"},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := k8s.Create(ctx, resetOffset(ns, fmt.Sprintf("r%d", i), c.ref, c.at))
			switch {
			case c.wantErr == "" && err != nil:
				t.Fatalf("rejected: %v", err)
			case c.wantErr != "" && err == nil:
				t.Fatal("accepted")
			case c.wantErr != "" && !strings.Contains(err.Error(), c.wantErr):
				t.Fatalf("error %q does not say %q", err, c.wantErr)
			}
		})
	}

	t.Run("spec is immutable", func(t *testing.T) {
		ro := &v1alpha1.ResetOffset{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "r0"}, ro); err != nil {
			t.Fatal(err)
		}
		ro.Spec.Offset.Time = "latest"
		err := k8s.Update(ctx, ro)
		if err == nil || !strings.Contains(err.Error(), "spec is immutable: create a new ResetOffset") {
			t.Fatalf("changing spec.offset.time: %v", err)
		}
		ro.Spec.Offset.Time = "earliest"
		ro.Labels = map[string]string{"note": "metadata-may-change"}
		if err := k8s.Update(ctx, ro); err != nil {
			t.Fatalf("changing only labels: %v", err)
		}
	})
}

// recordingSink is a subscriber that counts every event id it receives.
type recordingSink struct {
	*httptest.Server
	mu  sync.Mutex
	got map[string]int
}

func newRecordingSink(t *testing.T) *recordingSink {
	s := &recordingSink{got: map[string]int{}}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ev, err := binding.ToEvent(r.Context(), cehttp.NewMessageFromHttpRequest(r))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		s.got[ev.ID()]++
		s.mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *recordingSink) counts() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.got))
	for k, v := range s.got {
		out[k] = v
	}
	return out
}

// runDispatcher runs the channel's dispatcher in this process, wired to the API server as the
// dispatcher binary is (dispatcher/kube), so it sees the pause annotation the way pods do.
func runDispatcher(t *testing.T, f *fixture, name string, brokers []string) *dispatcher.Dispatcher {
	t.Helper()
	d, err := dispatcher.New(dispatcher.Config{
		Brokers: brokers, ChannelNamespace: f.chNS, ChannelName: name,
		CommitInterval: 50 * time.Millisecond, DrainTimeout: 3 * time.Second, MaxWait: 200 * time.Millisecond,
		SessionTimeout: 6 * time.Second, HeartbeatInterval: 300 * time.Millisecond,
		RebalanceTimeout: 6 * time.Second, JoinGroupBackoff: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	scheme, err := kube.NewScheme()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(f.ctx)
	if _, err := kube.Watch(ctx, restCfg, scheme, f.chNS, name, func(ch *v1beta1.KafkaChannel) {
		if ch == nil {
			d.Update(dispatcher.Channel{})
			return
		}
		d.Update(dispatcher.ChannelFrom(ch))
	}); err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = d.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return d
}

// produceAt writes CloudEvents e<i> with record timestamps t0 + i seconds, alternating over
// two partitions.
func produceAt(t *testing.T, brokers []string, topic string, t0 time.Time, from, to int) {
	t.Helper()
	// A Transport of its own: kafka.DefaultTransport is shared by the whole test binary, and
	// its cached metadata (up to 6 s old) may predate the channel's topic, which Apache Kafka
	// then refuses as unknown.
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, BatchTimeout: time.Millisecond, RequiredAcks: kafka.RequireAll,
		Transport: &kafka.Transport{},
		Balancer:  kafka.BalancerFunc(func(m kafka.Message, _ ...int) int { p, _ := strconv.Atoi(string(m.Key)); return p })}
	defer w.Close()
	for i := from; i < to; i++ {
		ev := event.New()
		ev.SetID(fmt.Sprintf("e%d", i))
		ev.SetSource("/replay-test")
		ev.SetType("test.replay")
		m, err := kafkabinding.ToMessage(&ev)
		if err != nil {
			t.Fatal(err)
		}
		m.Key, m.Time = []byte(strconv.Itoa(i%2)), t0.Add(time.Duration(i)*time.Second)
		if err := w.WriteMessages(context.Background(), m); err != nil {
			t.Fatalf("producing: %v", err)
		}
	}
}

func (f *fixture) waitResetOffset(name string, status metav1.ConditionStatus, reason string) *v1alpha1.ResetOffset {
	f.t.Helper()
	ro := &v1alpha1.ResetOffset{}
	eventually(f.t, 60*time.Second, fmt.Sprintf("ResetOffset %s Succeeded=%s %s", name, status, reason), func() string {
		if err := k8s.Get(f.ctx, client.ObjectKey{Namespace: f.chNS, Name: name}, ro); err != nil {
			return err.Error()
		}
		c := meta.FindStatusCondition(ro.Status.Conditions, v1alpha1.ConditionSucceeded)
		if c == nil || c.Status != status || c.Reason != reason {
			return fmt.Sprintf("conditions %+v", ro.Status.Conditions)
		}
		if controllerutil.ContainsFinalizer(ro, ResetOffsetFinalizer) {
			return "finalizer still set"
		}
		return ""
	})
	return ro
}

func (f *fixture) waitNoPause(name, uid string) {
	f.t.Helper()
	eventually(f.t, 30*time.Second, "pause annotation removed", func() string {
		ch := &v1beta1.KafkaChannel{}
		if err := k8s.Get(f.ctx, client.ObjectKey{Namespace: f.chNS, Name: name}, ch); err != nil {
			if apierrors.IsNotFound(err) {
				return "" // a channel that is gone pauses nobody
			}
			return err.Error()
		}
		if v, ok := ch.Annotations[v1alpha1.PauseAnnotation(uid)]; ok {
			return "still paused by " + v
		}
		return ""
	})
}

// TestResetOffsetReplaysThroughTheDispatcher resets a subscriber named through a Knative
// Subscription to a time in the middle of its events, with a real dispatcher serving the
// channel: the events at or after that time reach it again, the other subscriber sees each
// event once, the status records the offsets, and the pause is lifted.
func TestResetOffsetReplaysThroughTheDispatcher(t *testing.T) {
	k := kafkatest.Start(t)
	f := startFixture(t, fixtureOpts{secret: map[string]string{"brokers": k.BootstrapServers()}})
	const name = "replay"
	sub := &unstructured.Unstructured{}
	sub.SetGroupVersionKind(subscriptionGVK)
	sub.SetNamespace(f.chNS)
	sub.SetName("sub-a")
	_ = unstructured.SetNestedMap(sub.Object, map[string]any{"apiVersion": "messaging.knative.dev/v1beta1", "kind": "KafkaChannel", "name": name}, "spec", "channel")
	if err := k8s.Create(f.ctx, sub); err != nil {
		t.Fatalf("creating the Subscription: %v", err)
	}
	uidA := string(sub.GetUID())
	a, b := newRecordingSink(t), newRecordingSink(t)
	f.createChannel(name, func(ch *v1beta1.KafkaChannel) {
		ch.Spec.NumPartitions = 2
		ch.Spec.Subscribers = []v1beta1.SubscriberSpec{
			{UID: uidA, Generation: 1, SubscriberURI: ptrTo(a.URL)},
			{UID: "uid-b", Generation: 1, SubscriberURI: ptrTo(b.URL)},
		}
	})
	f.waitCondition(name, v1beta1.ConditionTopicReady, metav1.ConditionTrue, "TopicReady")
	d := runDispatcher(t, f, name, k.Brokers)
	eventually(t, 30*time.Second, "both subscribers ready", func() string {
		for _, uid := range []string{uidA, "uid-b"} {
			if st, _ := d.State(uid); st.Ready != dispatcher.ReadyTrue {
				return fmt.Sprintf("%s: %+v", uid, st)
			}
		}
		return ""
	})
	t0 := time.Now().Add(-time.Hour).Truncate(time.Second)
	produceAt(t, k.Brokers, naming.Topic(f.chNS, name), t0, 0, 10)
	allOnce := func(s *recordingSink, n int) func() string {
		return func() string {
			got := s.counts()
			for i := 0; i < n; i++ {
				if got[fmt.Sprintf("e%d", i)] == 0 {
					return fmt.Sprintf("e%d missing; got %v", i, got)
				}
			}
			return ""
		}
	}
	eventually(t, 30*time.Second, "a got every event", allOnce(a, 10))
	eventually(t, 30*time.Second, "b got every event", allOnce(b, 10))

	at := t0.Add(5 * time.Second).UTC().Format(time.RFC3339)
	if err := k8s.Create(f.ctx, resetOffset(f.chNS, "back-to-5", v1alpha1.Ref{Subscription: "sub-a"}, at)); err != nil {
		t.Fatal(err)
	}
	ro := f.waitResetOffset("back-to-5", metav1.ConditionTrue, reasonSucceeded)
	st := ro.Status
	if st.Channel != name || st.SubscriberUID != uidA || st.Topic != naming.Topic(f.chNS, name) ||
		st.Group != naming.GroupID(f.chNS, name, uidA) || st.ObservedGeneration != ro.Generation {
		t.Errorf("status = %+v", st)
	}
	// Partition 0 holds e0 e2 e4 e6 e8, partition 1 e1 e3 e5 e7 e9: e5 and e6 are the first
	// events at or after t0+5s.
	want := []v1alpha1.PartitionOffset{{Partition: 0, OldOffset: 5, NewOffset: 3}, {Partition: 1, OldOffset: 5, NewOffset: 2}}
	if fmt.Sprint(st.Partitions) != fmt.Sprint(want) {
		t.Errorf("status.partitions = %+v, want %+v", st.Partitions, want)
	}
	for _, typ := range []string{v1alpha1.ConditionRefResolved, v1alpha1.ConditionOffsetsReset} {
		if c := meta.FindStatusCondition(st.Conditions, typ); c == nil || c.Status != metav1.ConditionTrue {
			t.Errorf("condition %s = %+v", typ, c)
		}
	}
	f.waitNoPause(name, uidA)
	eventually(t, 30*time.Second, "a gets e5..e9 again", func() string {
		got := a.counts()
		for i := 0; i < 10; i++ {
			want := 1
			if i >= 5 {
				want = 2
			}
			if got[fmt.Sprintf("e%d", i)] != want {
				return fmt.Sprintf("e%d delivered %d times, want %d; all: %v", i, got[fmt.Sprintf("e%d", i)], want, got)
			}
		}
		return ""
	})
	for id, n := range b.counts() {
		if n != 1 {
			t.Errorf("the other subscriber got %s %d times", id, n)
		}
	}
	// The resumed subscriber keeps going with new events.
	produceAt(t, k.Brokers, naming.Topic(f.chNS, name), t0, 10, 14)
	eventually(t, 30*time.Second, "a gets events sent after the reset", allOnce(a, 14))

	cols := printedColumnsOf(t, "kafka.eventing.knative.dev/v1alpha1", "resetoffsets", f.chNS, "back-to-5", "Succeeded", "Reason", "Channel", "Time")
	if fmt.Sprint(cols) != fmt.Sprint([]string{"True", reasonSucceeded, name, at}) {
		t.Errorf("kubectl get resetoffsets columns = %v", cols)
	}
	f.waitEvent("back-to-5", "continues from the first event at or after "+at)
}

// TestResetOffsetFailuresLeaveOffsetsAlone: a reset whose subscriber cannot be found, or whose
// group never empties (a member that does not honour the pause), ends Succeeded=False, lifts
// the pause and leaves the committed offsets where they were.
func TestResetOffsetFailuresLeaveOffsetsAlone(t *testing.T) {
	k := kafkatest.Start(t)
	f := startFixture(t, fixtureOpts{
		secret: map[string]string{"brokers": k.BootstrapServers()},
		env:    map[string]string{"RESET_OFFSET_TIMEOUT": "4s"},
	})
	const name = "stuck"
	f.createChannel(name, func(ch *v1beta1.KafkaChannel) {
		ch.Spec.NumPartitions = 2
		ch.Spec.Subscribers = []v1beta1.SubscriberSpec{{UID: "uid-c", Generation: 1, SubscriberURI: ptrTo("http://127.0.0.1:1/")}}
	})
	f.waitCondition(name, v1beta1.ConditionTopicReady, metav1.ConditionTrue, "TopicReady")

	t.Run("unknown subscriber", func(t *testing.T) {
		if err := k8s.Create(f.ctx, resetOffset(f.chNS, "nobody", v1alpha1.Ref{KafkaChannel: name, SubscriberUID: "uid-gone"}, "earliest")); err != nil {
			t.Fatal(err)
		}
		ro := f.waitResetOffset("nobody", metav1.ConditionFalse, reasonSubscriberGone)
		if c := meta.FindStatusCondition(ro.Status.Conditions, v1alpha1.ConditionRefResolved); c == nil || c.Status != metav1.ConditionFalse {
			t.Errorf("RefResolved = %+v", c)
		}
	})
	t.Run("unknown subscription", func(t *testing.T) {
		if err := k8s.Create(f.ctx, resetOffset(f.chNS, "no-sub", v1alpha1.Ref{Subscription: "absent"}, "earliest")); err != nil {
			t.Fatal(err)
		}
		f.waitResetOffset("no-sub", metav1.ConditionFalse, reasonSubscriptionGone)
	})

	t.Run("pause never acknowledged", func(t *testing.T) {
		topic, group := naming.Topic(f.chNS, name), naming.GroupID(f.chNS, name, "uid-c")
		cl := &kafka.Client{Addr: kafka.TCP(k.Brokers...), Timeout: 10 * time.Second}
		produceAt(t, k.Brokers, topic, time.Now(), 0, 6)
		if err := replay.Commit(f.ctx, cl, group, topic, replay.Offsets{0: 2, 1: 1}); err != nil {
			t.Fatal(err)
		}
		member := kafka.NewReader(kafka.ReaderConfig{Brokers: k.Brokers, GroupID: group, Topic: topic,
			SessionTimeout: 6 * time.Second, HeartbeatInterval: 300 * time.Millisecond, MaxWait: 200 * time.Millisecond})
		defer member.Close()
		fctx, cancel := context.WithTimeout(f.ctx, 30*time.Second)
		defer cancel()
		if _, err := member.FetchMessage(fctx); err != nil {
			t.Fatalf("joining the group: %v", err)
		}
		if err := k8s.Create(f.ctx, resetOffset(f.chNS, "stuck", v1alpha1.Ref{KafkaChannel: name, SubscriberUID: "uid-c"}, "earliest")); err != nil {
			t.Fatal(err)
		}
		ro := f.waitResetOffset("stuck", metav1.ConditionFalse, reasonNotAcknowledged)
		c := meta.FindStatusCondition(ro.Status.Conditions, v1alpha1.ConditionSucceeded)
		if !strings.Contains(c.Message, "the subscriber continues from where it was") {
			t.Errorf("message %q does not tell the user the position is unchanged", c.Message)
		}
		if c := meta.FindStatusCondition(ro.Status.Conditions, v1alpha1.ConditionOffsetsReset); c == nil || c.Status != metav1.ConditionFalse {
			t.Errorf("OffsetsReset = %+v", c)
		}
		f.waitNoPause(name, "uid-c")
		got, err := replay.Committed(f.ctx, cl, group, topic, []int{0, 1})
		if err != nil || got[0] != 2 || got[1] != 1 {
			t.Errorf("committed offsets after the failed reset = %v %v, want 0:2 1:1 (unchanged)", got, err)
		}
		if len(ro.Status.Partitions) != 0 {
			t.Errorf("status.partitions = %+v after a failed reset", ro.Status.Partitions)
		}
	})
}

// groupMembers is how many members the consumer group has in Kafka.
func groupMembers(ctx context.Context, cl *kafka.Client, group string) (int, error) {
	res, err := cl.DescribeGroups(ctx, &kafka.DescribeGroupsRequest{GroupIDs: []string{group}})
	if err != nil {
		return 0, err
	}
	for _, g := range res.Groups {
		if g.GroupID == group {
			return len(g.Members), g.Error
		}
	}
	return 0, fmt.Errorf("group %s not in the answer", group)
}

// holdGroup joins the subscriber's consumer group with a member that knows nothing of pauses,
// so a reset of that subscriber waits for it, and returns once the group has at least want
// members. The returned func makes the member leave.
func holdGroup(t *testing.T, f *fixture, brokers []string, group, topic string, want int) (leave func()) {
	t.Helper()
	member := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, GroupID: group, Topic: topic,
		SessionTimeout: 6 * time.Second, HeartbeatInterval: 300 * time.Millisecond, MaxWait: 200 * time.Millisecond})
	ctx, cancel := context.WithCancel(f.ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Fetching is what makes a kafka-go reader join; what it reads is never committed.
		for ctx.Err() == nil {
			if _, err := member.FetchMessage(ctx); err != nil {
				return
			}
		}
	}()
	once := sync.Once{}
	leave = func() { once.Do(func() { cancel(); <-done; _ = member.Close() }) }
	t.Cleanup(leave)
	cl := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second}
	eventually(t, 30*time.Second, fmt.Sprintf("%d members in %s", want, group), func() string {
		n, err := groupMembers(f.ctx, cl, group)
		if err != nil || n < want {
			return fmt.Sprintf("%d members (%v)", n, err)
		}
		return ""
	})
	return leave
}

// waitPaused waits until the channel carries a pause annotation for uid and returns its value.
func (f *fixture) waitPaused(name, uid string) string {
	f.t.Helper()
	var token string
	eventually(f.t, 30*time.Second, "pause annotation set", func() string {
		token = f.channel(name).Annotations[v1alpha1.PauseAnnotation(uid)]
		if token == "" {
			return "not paused"
		}
		return ""
	})
	return token
}

func (f *fixture) waitResetOffsetGone(name string) {
	f.t.Helper()
	eventually(f.t, 30*time.Second, "ResetOffset "+name+" gone", func() string {
		ro := &v1alpha1.ResetOffset{}
		err := k8s.Get(f.ctx, client.ObjectKey{Namespace: f.chNS, Name: name}, ro)
		if apierrors.IsNotFound(err) {
			return ""
		}
		return fmt.Sprintf("still there (%v): finalizers %v, deletion %v", err, ro.Finalizers, ro.DeletionTimestamp)
	})
}

func (f *fixture) deleteResetOffset(name string) {
	f.t.Helper()
	if err := k8s.Delete(f.ctx, &v1alpha1.ResetOffset{ObjectMeta: metav1.ObjectMeta{Namespace: f.chNS, Name: name}}); err != nil {
		f.t.Fatalf("deleting ResetOffset %s: %v", name, err)
	}
}

// TestResetOffsetDeletedMidResetResumesDelivery: a user deletes a reset that waits for a pause
// that never comes (a member outside the dispatcher holds the group). Deleting it must lift the
// pause, although the API server bumps metadata.generation when it sets deletionTimestamp on an
// object with finalizers, and the subscriber must get events again.
func TestResetOffsetDeletedMidResetResumesDelivery(t *testing.T) {
	k := kafkatest.Start(t)
	f := startFixture(t, fixtureOpts{
		secret: map[string]string{"brokers": k.BootstrapServers()},
		env:    map[string]string{"RESET_OFFSET_TIMEOUT": "10m"},
	})
	const name, uid = "deleted", "uid-d"
	sink := newRecordingSink(t)
	f.createChannel(name, func(ch *v1beta1.KafkaChannel) {
		ch.Spec.NumPartitions = 2
		ch.Spec.Subscribers = []v1beta1.SubscriberSpec{{UID: uid, Generation: 1, SubscriberURI: ptrTo(sink.URL)}}
	})
	f.waitCondition(name, v1beta1.ConditionTopicReady, metav1.ConditionTrue, "TopicReady")
	d := runDispatcher(t, f, name, k.Brokers)
	eventually(t, 30*time.Second, "subscriber ready", func() string {
		if st, _ := d.State(uid); st.Ready != dispatcher.ReadyTrue {
			return fmt.Sprintf("%+v", st)
		}
		return ""
	})
	topic, group := naming.Topic(f.chNS, name), naming.GroupID(f.chNS, name, uid)
	leave := holdGroup(t, f, k.Brokers, group, topic, 2)

	if err := k8s.Create(f.ctx, resetOffset(f.chNS, "stuck", v1alpha1.Ref{KafkaChannel: name, SubscriberUID: uid}, "earliest")); err != nil {
		t.Fatal(err)
	}
	f.waitPaused(name, uid)
	cl := &kafka.Client{Addr: kafka.TCP(k.Brokers...), Timeout: 10 * time.Second}
	eventually(t, 30*time.Second, "the dispatcher's member gone, the outside one left", func() string {
		if n, err := groupMembers(f.ctx, cl, group); err != nil || n != 1 {
			return fmt.Sprintf("%d members (%v)", n, err)
		}
		return ""
	})

	f.deleteResetOffset("stuck")
	f.waitNoPause(name, uid)
	f.waitResetOffsetGone("stuck")

	// With the outside member gone, the dispatcher's member is the group again.
	leave()
	produceAt(t, k.Brokers, topic, time.Now(), 0, 4)
	eventually(t, 60*time.Second, "delivery resumed", func() string {
		got := sink.counts()
		for i := 0; i < 4; i++ {
			if got[fmt.Sprintf("e%d", i)] == 0 {
				return fmt.Sprintf("e%d missing; got %v", i, got)
			}
		}
		return ""
	})
}

// TestResetOffsetLiftsThePauseOnEveryWayOut: every way a reset in progress can end, with the
// group held by a member outside the dispatcher so the pause is never acknowledged by itself,
// leaves the channel without the pause annotation.
func TestResetOffsetLiftsThePauseOnEveryWayOut(t *testing.T) {
	k := kafkatest.Start(t)
	f := startFixture(t, fixtureOpts{
		secret: map[string]string{"brokers": k.BootstrapServers()},
		env:    map[string]string{"RESET_OFFSET_TIMEOUT": "10m"},
	})
	cases := []struct {
		name string
		// act ends the reset in progress; leave makes the outside member leave the group.
		act func(t *testing.T, ch, ro string, leave func())
	}{
		{"subscriber removed from the channel", func(t *testing.T, ch, ro string, _ func()) {
			if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
				c := f.channel(ch)
				c.Spec.Subscribers = nil
				return k8s.Update(f.ctx, c)
			}); err != nil {
				t.Fatal(err)
			}
			f.waitResetOffset(ro, metav1.ConditionFalse, reasonSubscriberGone)
		}},
		{"channel deleted", func(t *testing.T, ch, ro string, _ func()) {
			if err := k8s.Delete(f.ctx, f.channel(ch)); err != nil {
				t.Fatal(err)
			}
			f.waitResetOffset(ro, metav1.ConditionFalse, reasonChannelGone)
		}},
		{"manager restarted, then the group empties", func(t *testing.T, _, ro string, leave func()) {
			f.stopManager()
			leave()
			f.startManager()
			f.waitResetOffset(ro, metav1.ConditionTrue, reasonSucceeded)
		}},
		{"ResetOffset deleted while no manager runs", func(t *testing.T, _, ro string, _ func()) {
			f.stopManager()
			f.deleteResetOffset(ro)
			f.startManager()
			f.waitResetOffsetGone(ro)
		}},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			name, uid, ro := fmt.Sprintf("way-%d", i), fmt.Sprintf("uid-w%d", i), fmt.Sprintf("reset-%d", i)
			f.createChannel(name, func(ch *v1beta1.KafkaChannel) {
				ch.Spec.NumPartitions = 2
				ch.Spec.Subscribers = []v1beta1.SubscriberSpec{{UID: uid, Generation: 1, SubscriberURI: ptrTo("http://127.0.0.1:1/")}}
			})
			f.waitCondition(name, v1beta1.ConditionTopicReady, metav1.ConditionTrue, "TopicReady")
			topic, group := naming.Topic(f.chNS, name), naming.GroupID(f.chNS, name, uid)
			leave := holdGroup(t, f, k.Brokers, group, topic, 1)
			if err := k8s.Create(f.ctx, resetOffset(f.chNS, ro, v1alpha1.Ref{KafkaChannel: name, SubscriberUID: uid}, "earliest")); err != nil {
				t.Fatal(err)
			}
			f.waitPaused(name, uid)
			c.act(t, name, ro, leave)
			f.waitNoPause(name, uid)
		})
	}
}

// TestResetOffsetReleasesAPauseItsStatusDoesNotName: a manager that set the pause annotation and
// stopped before it wrote the ResetOffset's status (or an earlier version, whose token carried
// the generation) must still lift the pause when the ResetOffset is deleted.
func TestResetOffsetReleasesAPauseItsStatusDoesNotName(t *testing.T) {
	k := kafkatest.Start(t)
	f := startFixture(t, fixtureOpts{secret: map[string]string{"brokers": k.BootstrapServers()}})
	const name, uid = "orphan", "uid-o"
	f.createChannel(name, func(ch *v1beta1.KafkaChannel) {
		ch.Spec.Subscribers = []v1beta1.SubscriberSpec{{UID: uid, Generation: 1, SubscriberURI: ptrTo("http://127.0.0.1:1/")}}
	})
	f.waitCondition(name, v1beta1.ConditionTopicReady, metav1.ConditionTrue, "TopicReady")
	f.stopManager()

	// The state such a manager leaves: a finalizer, an empty status, and the annotation.
	ro := resetOffset(f.chNS, "half-done", v1alpha1.Ref{KafkaChannel: name, SubscriberUID: uid}, "earliest")
	controllerutil.AddFinalizer(ro, ResetOffsetFinalizer)
	if err := k8s.Create(f.ctx, ro); err != nil {
		t.Fatal(err)
	}
	ch := f.channel(name)
	ch.Annotations = map[string]string{v1alpha1.PauseAnnotation(uid): fmt.Sprintf("%s.%d", ro.UID, ro.Generation)}
	if err := k8s.Update(f.ctx, ch); err != nil {
		t.Fatal(err)
	}
	f.deleteResetOffset("half-done")
	f.startManager()
	f.waitResetOffsetGone("half-done")
	f.waitNoPause(name, uid)
}
