package kube

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/kafkachannel/kafkachannel/api/v1beta1"
	"github.com/kafkachannel/kafkachannel/dispatcher"
	"github.com/kafkachannel/kafkachannel/environments/envtestbin"
	"github.com/kafkachannel/kafkachannel/environments/kafkatest"
	"github.com/kafkachannel/kafkachannel/environments/poll"
	"github.com/kafkachannel/kafkachannel/internal/naming"
	"github.com/segmentio/kafka-go"
)

var (
	k8s    client.Client
	cfg    *rest.Config
	env    *envtest.Environment
	testNS = "default"
	// noEnv says why the envtest tests skip; empty when the control plane runs.
	noEnv string
)

func TestMain(m *testing.M) {
	flag.Parse()
	if _, noEnv = envtestbin.Find(); noEnv != "" {
		fmt.Println("dispatcher/kube:", noEnv)
		os.Exit(m.Run())
	}
	env = &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	var err error
	cfg, err = env.Start()
	if err != nil {
		panic(err)
	}
	scheme, err := NewScheme()
	if err != nil {
		panic(err)
	}
	k8s, err = client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		panic(err)
	}
	code := m.Run()
	_ = env.Stop()
	os.Exit(code)
}

// staticSource is a replica's states, set by the test.
type staticSource struct {
	mu     sync.Mutex
	states []dispatcher.SubscriberState
}

func (s *staticSource) set(st ...dispatcher.SubscriberState) {
	s.mu.Lock()
	s.states = st
	s.mu.Unlock()
}

func (s *staticSource) States() []dispatcher.SubscriberState {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]dispatcher.SubscriberState(nil), s.states...)
}

func spec(uid string, gen int64) v1beta1.SubscriberSpec {
	return v1beta1.SubscriberSpec{UID: uid, Generation: gen, SubscriberURI: ptr("http://" + uid + ".example")}
}

func ptr[T any](v T) *T { return &v }

func st(uid string, gen int64, ready, msg string) dispatcher.SubscriberState {
	return dispatcher.SubscriberState{UID: uid, Generation: gen, Ready: ready, Message: msg}
}

func TestMerge(t *testing.T) {
	T, F, U := dispatcher.ReadyTrue, dispatcher.ReadyFalse, dispatcher.ReadyUnknown
	entry := func(uid string, gen int64, ready, msg string) v1beta1.SubscriberStatus {
		return v1beta1.SubscriberStatus{UID: uid, ObservedGeneration: gen, Ready: ready, Message: msg}
	}
	cases := []struct {
		name    string
		current []v1beta1.SubscriberStatus
		spec    []v1beta1.SubscriberSpec
		mine    []dispatcher.SubscriberState
		want    []v1beta1.SubscriberStatus
	}{
		{"new entry", nil, []v1beta1.SubscriberSpec{spec("a", 1)}, []dispatcher.SubscriberState{st("a", 1, U, "joining")},
			[]v1beta1.SubscriberStatus{entry("a", 1, U, "joining")}},
		{"ready never goes back to unknown", []v1beta1.SubscriberStatus{entry("a", 1, T, "")}, []v1beta1.SubscriberSpec{spec("a", 1)},
			[]dispatcher.SubscriberState{st("a", 1, U, "joining")}, []v1beta1.SubscriberStatus{entry("a", 1, T, "")}},
		{"false raises unknown", []v1beta1.SubscriberStatus{entry("a", 1, U, "")}, []v1beta1.SubscriberSpec{spec("a", 1)},
			[]dispatcher.SubscriberState{st("a", 1, F, "bad CA")}, []v1beta1.SubscriberStatus{entry("a", 1, F, "bad CA")}},
		{"new generation resets", []v1beta1.SubscriberStatus{entry("a", 1, T, "")}, []v1beta1.SubscriberSpec{spec("a", 2)},
			[]dispatcher.SubscriberState{st("a", 2, U, "")}, []v1beta1.SubscriberStatus{entry("a", 2, U, "")}},
		{"older replica keeps newer entry", []v1beta1.SubscriberStatus{entry("a", 2, T, "")}, []v1beta1.SubscriberSpec{spec("a", 2)},
			[]dispatcher.SubscriberState{st("a", 1, T, "")}, []v1beta1.SubscriberStatus{entry("a", 2, T, "")}},
		{"removed subscriber goes", []v1beta1.SubscriberStatus{entry("a", 1, T, ""), entry("b", 1, T, "")}, []v1beta1.SubscriberSpec{spec("a", 1)},
			[]dispatcher.SubscriberState{st("a", 1, T, ""), st("b", 1, T, "")}, []v1beta1.SubscriberStatus{entry("a", 1, T, "")}},
		{"unknown to this replica is kept", []v1beta1.SubscriberStatus{entry("a", 1, T, "")}, []v1beta1.SubscriberSpec{spec("a", 1), spec("b", 1)},
			nil, []v1beta1.SubscriberStatus{entry("a", 1, T, "")}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := Merge(tc.current, tc.spec, tc.mine)
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func createChannel(t *testing.T, name string, subs ...v1beta1.SubscriberSpec) *v1beta1.KafkaChannel {
	t.Helper()
	kc := &v1beta1.KafkaChannel{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: testNS}}
	kc.Spec.Subscribers = subs
	if err := k8s.Create(context.Background(), kc); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), kc) })
	return kc
}

func getChannel(t *testing.T, name string) *v1beta1.KafkaChannel {
	t.Helper()
	kc := &v1beta1.KafkaChannel{}
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: testNS, Name: name}, kc); err != nil {
		t.Fatal(err)
	}
	return kc
}

func statusOf(kc *v1beta1.KafkaChannel) map[string]v1beta1.SubscriberStatus {
	out := map[string]v1beta1.SubscriberStatus{}
	for _, s := range kc.Status.Subscribers {
		out[s.UID] = s
	}
	return out
}

// Two replicas report different partial views at the same time as the manager patches its
// conditions: every replica's news lands, nothing regresses, the manager's fields survive.
func TestConcurrentReplicasReportStatus(t *testing.T) {
	envtestbin.Skip(t, noEnv)
	ctx := context.Background()
	T, F, U := dispatcher.ReadyTrue, dispatcher.ReadyFalse, dispatcher.ReadyUnknown
	createChannel(t, "concurrent", spec("a", 1), spec("b", 1), spec("c", 1))
	r1src, r2src := &staticSource{}, &staticSource{}
	r1src.set(st("a", 1, T, ""), st("b", 1, U, "joining"), st("c", 1, U, ""))
	r2src.set(st("a", 1, U, "joining"), st("b", 1, T, ""), st("c", 1, F, "subscriberCACerts of subscriber c: not a valid PEM CA bundle"))
	log := testr.New(t)
	r1 := &Reporter{Client: k8s, Namespace: testNS, Name: "concurrent", Source: r1src, Log: log}
	r2 := &Reporter{Client: k8s, Namespace: testNS, Name: "concurrent", Source: r2src, Log: log}

	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for i := 0; i < 10; i++ {
		for _, r := range []*Reporter{r1, r2} {
			wg.Add(1)
			go func() { defer wg.Done(); errs <- r.Sync(ctx) }()
		}
	}
	// The manager writes its conditions meanwhile (merge patch, no lock, as it does).
	wg.Add(1)
	go func() {
		defer wg.Done()
		kc := getChannel(t, "concurrent")
		base := kc.DeepCopy()
		meta.SetStatusCondition(&kc.Status.Conditions, metav1.Condition{Type: v1beta1.ConditionReady, Status: metav1.ConditionTrue, Reason: "Ready"})
		errs <- k8s.Status().Patch(ctx, kc, client.MergeFrom(base))
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	kc := getChannel(t, "concurrent")
	got := statusOf(kc)
	if got["a"].Ready != T || got["b"].Ready != T || got["c"].Ready != F || got["c"].Message == "" {
		t.Fatalf("status.subscribers = %+v", kc.Status.Subscribers)
	}
	if meta.FindStatusCondition(kc.Status.Conditions, v1beta1.ConditionReady) == nil {
		t.Fatal("the manager's condition was lost")
	}

	// Subscriber b is removed, a moves to generation 2; replica 1 applied it, replica 2 lags.
	kc.Spec.Subscribers = []v1beta1.SubscriberSpec{spec("a", 2), spec("c", 1)}
	if err := k8s.Update(ctx, kc); err != nil {
		t.Fatal(err)
	}
	r1src.set(st("a", 2, T, ""), st("c", 1, U, ""))
	for _, r := range []*Reporter{r2, r1, r2} {
		if err := r.Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	kc = getChannel(t, "concurrent")
	got = statusOf(kc)
	if len(got) != 2 || got["a"].Ready != T || got["a"].ObservedGeneration != 2 || got["c"].Ready != F {
		t.Fatalf("status.subscribers after update = %+v", kc.Status.Subscribers)
	}
	// Nothing to change: no write (the resourceVersion stays).
	rv := kc.ResourceVersion
	if err := r2.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if getChannel(t, "concurrent").ResourceVersion != rv {
		t.Error("a sync without news wrote the object")
	}
}

// The whole path: the channel is watched through the restricted cache, two dispatchers run
// the subscriber against Kafka, and their reporters make it ready, then remove it.
func TestWatchDispatchAndReport(t *testing.T) {
	envtestbin.Skip(t, noEnv)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	k := kafkatest.Start(t)
	name := "e2e"
	topic := naming.Topic(testNS, name)
	kcl := &kafka.Client{Addr: kafka.TCP(k.Brokers...)}
	if _, err := kcl.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{Topic: topic, NumPartitions: 2, ReplicationFactor: 1}}}); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusAccepted) }))
	defer srv.Close()
	sp := v1beta1.SubscriberSpec{UID: "u1", Generation: 1, SubscriberURI: &srv.URL}
	createChannel(t, name, sp)
	// A second channel the cache must not see.
	createChannel(t, "other", v1beta1.SubscriberSpec{UID: "x", Generation: 1, SubscriberURI: &srv.URL})

	scheme, _ := NewScheme()
	var wg sync.WaitGroup
	defer wg.Wait()
	for i := 0; i < 2; i++ {
		d, err := dispatcher.New(dispatcher.Config{Brokers: k.Brokers, ChannelNamespace: testNS, ChannelName: name,
			Log: testr.New(t), SessionTimeout: 6 * time.Second, HeartbeatInterval: 300 * time.Millisecond, RebalanceTimeout: 6 * time.Second, MaxWait: 200 * time.Millisecond, DrainTimeout: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		var seen sync.Map
		if _, err := Watch(ctx, cfg, scheme, testNS, name, func(kc *v1beta1.KafkaChannel) {
			if kc == nil {
				return
			}
			seen.Store(kc.Name, true)
			d.Update(dispatcher.ChannelFrom(kc))
		}); err != nil {
			t.Fatal(err)
		}
		if _, ok := seen.Load("other"); ok {
			t.Fatal("the cache saw another channel")
		}
		rep := &Reporter{Client: k8s, Namespace: testNS, Name: name, Source: d, Log: testr.New(t)}
		wg.Add(2)
		go func() { defer wg.Done(); _ = d.Run(ctx) }()
		go func() { defer wg.Done(); rep.Run(ctx, d.Changed()) }()
	}
	poll.Eventually(t, 30*time.Second, "condition", func() error {
		s := statusOf(getChannel(t, name))["u1"]
		if s.Ready != dispatcher.ReadyTrue || s.ObservedGeneration != 1 {
			return fmt.Errorf("status %+v", s)
		}
		return nil
	})
	kc := getChannel(t, name)
	kc.Spec.Subscribers = nil
	if err := k8s.Update(ctx, kc); err != nil {
		t.Fatal(err)
	}
	poll.Eventually(t, 30*time.Second, "condition", func() error {
		if s := getChannel(t, name).Status.Subscribers; len(s) != 0 {
			return fmt.Errorf("status still has %+v", s)
		}
		return nil
	})
	cancel()
}

// A dispatcher that may not list its KafkaChannel (a missing RBAC rule) fails with a message
// saying so within SyncTimeout, instead of waiting forever never ready.
func TestWatchFailsWithinSyncTimeoutWhenItCannotList(t *testing.T) {
	envtestbin.Skip(t, noEnv)
	// Authenticated, but no role: every list is forbidden.
	user, err := env.AddUser(envtest.User{Name: "no-rbac"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	prev := SyncTimeout
	SyncTimeout = 3 * time.Second
	t.Cleanup(func() { SyncTimeout = prev })
	scheme, _ := NewScheme()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := Watch(ctx, user.Config(), scheme, testNS, "forbidden", func(*v1beta1.KafkaChannel) {})
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "RBAC") {
			t.Fatalf("Watch returned %v, want an error naming RBAC", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("Watch still waiting for the cache after 60 s with a 3 s sync timeout")
	}
}
