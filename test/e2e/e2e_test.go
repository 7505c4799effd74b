// Package e2e runs the whole system through the local stack (environments/localstack): a real
// kube-apiserver, Kafka (kfake, or KAFKA_BOOTSTRAP_SERVERS), the manager binary, and the
// Deployments it writes run as local processes. A wrong env var or mount in those Deployments
// breaks these tests.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	v1beta1 "github.com/kafkachannel/kafkachannel/api/v1beta1"
	"github.com/kafkachannel/kafkachannel/environments/apachekafka"
	"github.com/kafkachannel/kafkachannel/environments/envtestbin"
	"github.com/kafkachannel/kafkachannel/environments/localstack"
	"github.com/kafkachannel/kafkachannel/environments/poll"
	"github.com/kafkachannel/kafkachannel/environments/proc"
	"github.com/kafkachannel/kafkachannel/environments/testlog"
	"github.com/kafkachannel/kafkachannel/internal/naming"
)

const (
	chNS   = "default"
	chName = "e2e"
)

func startStack(t *testing.T) *localstack.Stack {
	t.Helper()
	return startStackWith(t, nil)
}

// startStackWith starts a stack whose manager also gets env; KAFKA=apache starts real Apache
// Kafka brokers instead of kfake.
func startStackWith(t *testing.T, env map[string]string) *localstack.Stack {
	t.Helper()
	apache, err := localstack.ApacheFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	return startStackOn(t, apache, env)
}

// startStackOn starts the local stack on kfake (apache nil) or on Apache Kafka brokers.
func startStackOn(t *testing.T, apache *apachekafka.Options, env map[string]string) *localstack.Stack {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end: needs kube-apiserver, etcd and the built binaries")
	}
	envtestbin.Require(t)
	bin := buildBinaries(t)
	log := testlog.New(t)
	ctrllog.SetLogger(log)
	dir := t.TempDir()
	managerEnv := map[string]string{"TOPIC_DELETE_TIMEOUT": "30s"}
	for k, v := range env {
		managerEnv[k] = v
	}
	s, err := localstack.Start(context.Background(), localstack.Options{
		Dir: dir, BinDir: bin, Log: log, Apache: apache,
		// A deleted channel's topic is deleted at once; no need to wait minutes for Kafka.
		ManagerEnv: managerEnv,
	})
	if err != nil {
		t.Fatalf("starting the local stack: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			dumpLogs(t, s)
		}
		s.Stop()
	})
	return s
}

func dumpLogs(t *testing.T, s *localstack.Stack) {
	t.Logf("manager log:\n%s", proc.Tail(s.ManagerLog(), 40))
	for _, p := range s.Node.Pods() {
		t.Logf("pod %s pid=%d ready=%v restarts=%d failure=%q log:\n%s", p.Name, p.PID, p.Ready, p.Restarts, p.Failure, proc.Tail(p.LogFile, 30))
	}
}

func subscriber(name string, r *recorder) v1beta1.SubscriberSpec {
	u := r.URL()
	return v1beta1.SubscriberSpec{Name: name, UID: "uid-" + name, Generation: 1, SubscriberURI: &u}
}

func getChannel(t *testing.T, s *localstack.Stack) *v1beta1.KafkaChannel {
	t.Helper()
	ch := &v1beta1.KafkaChannel{}
	if err := s.Client.Get(context.Background(), client.ObjectKey{Namespace: chNS, Name: chName}, ch); err != nil {
		t.Fatal(err)
	}
	return ch
}

// waitSubscribers waits until the channel is Ready and status.subscribers lists exactly the
// given uids, all ready.
func waitSubscribers(t *testing.T, s *localstack.Stack, uids ...string) {
	t.Helper()
	poll.Eventually(t, 2*time.Minute, fmt.Sprintf("channel Ready with subscribers %v ready", uids), func() error {
		ch := getChannel(t, s)
		ready := false
		var conds []string
		for _, c := range ch.Status.Conditions {
			conds = append(conds, fmt.Sprintf("%s=%s(%s)", c.Type, c.Status, c.Message))
			if c.Type == v1beta1.ConditionReady && c.Status == metav1.ConditionTrue {
				ready = true
			}
		}
		if !ready || ch.Status.ObservedGeneration != ch.Generation {
			return fmt.Errorf("not Ready at generation %d: %v", ch.Generation, conds)
		}
		var got []string
		for _, sub := range ch.Status.Subscribers {
			if sub.Ready != "True" {
				return fmt.Errorf("subscriber %s not ready: %s", sub.UID, sub.Message)
			}
			got = append(got, sub.UID)
		}
		slices.Sort(got)
		want := slices.Sorted(slices.Values(uids))
		if !slices.Equal(got, want) {
			return fmt.Errorf("status.subscribers %v, want %v", got, want)
		}
		return nil
	})
}

func updateSubscribers(t *testing.T, s *localstack.Stack, subs ...v1beta1.SubscriberSpec) {
	t.Helper()
	poll.Eventually(t, 30*time.Second, "update spec.subscribers", func() error {
		ch := getChannel(t, s)
		ch.Spec.Subscribers = subs
		return s.Client.Update(context.Background(), ch)
	})
}

func dispatcherPods(s *localstack.Stack) []localstack.PodInfo {
	var out []localstack.PodInfo
	for _, p := range s.Node.Pods() {
		if p.Deployment == naming.DispatcherName(chNS, chName) {
			out = append(out, p)
		}
	}
	return out
}

func TestEndToEnd(t *testing.T) {
	s := startStack(t)
	ctx := context.Background()
	url := fmt.Sprintf("%s/%s/%s", s.ReceiverURL, chNS, chName)
	one, two, three := newRecorder(t, "one"), newRecorder(t, "two"), newRecorder(t, "three")

	ch := &v1beta1.KafkaChannel{
		ObjectMeta: metav1.ObjectMeta{Name: chName, Namespace: chNS},
		Spec: v1beta1.KafkaChannelSpec{NumPartitions: 4,
			Subscribers: []v1beta1.SubscriberSpec{subscriber("one", one), subscriber("two", two)}},
	}
	if err := s.Client.Create(ctx, ch); err != nil {
		t.Fatal(err)
	}

	t.Run("two subscribers get every event unaltered", func(t *testing.T) {
		waitSubscribers(t, s, "uid-one", "uid-two")
		ids, evs := sendBatch(t, url, "first", 20)
		one.waitAll(t, ids, time.Minute)
		two.waitAll(t, ids, time.Minute)
		checkUnaltered(t, one, evs)
		checkUnaltered(t, two, evs)
	})
	if t.Failed() {
		return
	}

	t.Run("a second channel created while the receiver runs accepts events once Ready", func(t *testing.T) {
		sub := newRecorder(t, "second")
		u := sub.URL()
		second := &v1beta1.KafkaChannel{
			ObjectMeta: metav1.ObjectMeta{Name: "second", Namespace: chNS},
			Spec: v1beta1.KafkaChannelSpec{NumPartitions: 2,
				Subscribers: []v1beta1.SubscriberSpec{{Name: "second", UID: "uid-second", Generation: 1, SubscriberURI: &u}}},
		}
		if err := s.Client.Create(ctx, second); err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := s.Client.Delete(ctx, second); err != nil {
				t.Errorf("deleting the second channel: %v", err)
			}
		}()
		poll.Eventually(t, 2*time.Minute, "second channel Ready", func() error {
			if err := s.Client.Get(ctx, client.ObjectKeyFromObject(second), second); err != nil {
				return err
			}
			for _, c := range second.Status.Conditions {
				if c.Type == v1beta1.ConditionReady && c.Status == metav1.ConditionTrue &&
					len(second.Status.Subscribers) == 1 && second.Status.Subscribers[0].Ready == "True" {
					return nil
				}
			}
			return fmt.Errorf("conditions %v subscribers %v", second.Status.Conditions, second.Status.Subscribers)
		})
		// Ready promises the address works: a client may retry briefly, not for half a minute.
		// (A receiver that learns about new topics only from its periodic metadata refresh,
		// every 30 s, fails this in all but the few seconds after a refresh; 10 s leaves room
		// for a loaded machine and still catches that.)
		e := makeEvent("second", 0)
		poll.Eventually(t, 10*time.Second, "the receiver accepts an event for the new channel", func() error {
			return sendEvent(ctx, fmt.Sprintf("%s/%s/%s", s.ReceiverURL, chNS, "second"), e)
		})
		sub.waitAll(t, []string{e.id}, time.Minute)
		checkUnaltered(t, sub, []sent{e})
	})

	t.Run("config-observability changes apply live: pprof on and off without a restart", func(t *testing.T) {
		setProfiling := func(v string) {
			poll.Eventually(t, 30*time.Second, "update config-observability", func() error {
				cm := &corev1.ConfigMap{}
				if err := s.Client.Get(ctx, client.ObjectKey{Namespace: s.Opts.OperatorNamespace, Name: "config-observability"}, cm); err != nil {
					return err
				}
				cm.Data["profiling.enable"] = v
				return s.Client.Update(ctx, cm)
			})
		}
		before := dispatcherPods(s)
		if len(before) == 0 {
			t.Fatal("no dispatcher pod")
		}
		pprof := fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/", before[0].Ports[8008])
		if resp, err := http.Get(pprof); err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				t.Fatalf("%s answers while config-observability disables profiling", pprof)
			}
		}
		setProfiling("true")
		poll.Eventually(t, time.Minute, "pprof answers", func() error {
			resp, err := http.Get(pprof)
			if err != nil {
				return err
			}
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("%s: %d", pprof, resp.StatusCode)
			}
			return nil
		})
		setProfiling("false")
		poll.Eventually(t, time.Minute, "pprof closed", func() error {
			// A refused connection or an error status both mean closed.
			if resp, err := http.Get(pprof); err == nil {
				_ = resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return fmt.Errorf("%s still answers", pprof)
				}
			}
			return nil
		})
		if now := dispatcherPods(s); len(now) != len(before) || now[0].PID != before[0].PID {
			t.Errorf("a ConfigMap change restarted the dispatcher: %+v -> %+v", before, now)
		}
	})

	t.Run("a third subscriber added while events flow", func(t *testing.T) {
		f := startFlow(url, "flow3", 20*time.Millisecond)
		poll.Eventually(t, 30*time.Second, "events flowing", func() error {
			if f.count() < 10 {
				return fmt.Errorf("%d accepted", f.count())
			}
			return nil
		})
		updateSubscribers(t, s, subscriber("one", one), subscriber("two", two), subscriber("three", three))
		waitSubscribers(t, s, "uid-one", "uid-two", "uid-three")
		// The new subscriber's start position is the dispatcher's business; every event sent
		// after it reported ready must reach it.
		after := f.count()
		poll.Eventually(t, 30*time.Second, "more events after the third subscriber turned ready", func() error {
			if f.count() < after+20 {
				return fmt.Errorf("%d accepted", f.count())
			}
			return nil
		})
		ids := f.end()
		one.waitAll(t, ids, time.Minute)
		two.waitAll(t, ids, time.Minute)
		three.waitAll(t, ids[after:], time.Minute)
	})

	t.Run("kcat reads a record the receiver wrote with its ce_ headers", func(t *testing.T) {
		kcat := requireKcat(t)
		out, err := exec.Command(kcat, "-b", strings.Join(s.Brokers, ","), "-t", naming.Topic(chNS, chName),
			"-C", "-J", "-e", "-o", "beginning", "-q").Output()
		if err != nil {
			t.Fatalf("kcat -C: %v", err)
		}
		var found bool
		for _, line := range bytes.Split(bytes.TrimSpace(out), []byte("\n")) {
			var rec struct {
				Headers []string `json:"headers"`
				Payload string   `json:"payload"`
			}
			if err := json.Unmarshal(line, &rec); err != nil {
				t.Fatalf("kcat output %q: %v", line, err)
			}
			h := map[string]string{}
			for i := 0; i+1 < len(rec.Headers); i += 2 {
				h[rec.Headers[i]] = rec.Headers[i+1]
			}
			if h["ce_id"] != "first-3" {
				continue
			}
			found = true
			want := makeEvent("first", 3)
			if h["ce_specversion"] != "1.0" || h["ce_source"] != want.source || h["ce_type"] != want.typ ||
				h["ce_subject"] != want.subject || h["ce_e2eext"] != want.ext || rec.Payload != want.data {
				t.Errorf("record of first-3: headers %v payload %q", h, rec.Payload)
			}
		}
		if !found {
			t.Fatalf("no record with ce_id first-3 among %d records", bytes.Count(out, []byte("\n")))
		}
	})

	t.Run("a record kcat produces with ce_ headers reaches a subscriber", func(t *testing.T) {
		kcat := requireKcat(t)
		cmd := exec.Command(kcat, "-b", strings.Join(s.Brokers, ","), "-t", naming.Topic(chNS, chName), "-P",
			"-H", "ce_specversion=1.0", "-H", "ce_id=from-kcat", "-H", "ce_source=/kcat", "-H", "ce_type=dev.kcat",
			"-H", "content-type=application/json")
		cmd.Stdin = strings.NewReader(`{"from":"kcat"}` + "\n")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("kcat -P: %v\n%s", err, out)
		}
		one.waitAll(t, []string{"from-kcat"}, time.Minute)
		got, _ := one.first("from-kcat")
		if got.Source() != "/kcat" || got.Type() != "dev.kcat" || string(got.Data()) != `{"from":"kcat"}` {
			t.Errorf("event from kcat: %s", got.String())
		}
	})

	t.Run("dispatcher scaled to 2 replicas shares partitions", func(t *testing.T) {
		if err := s.RestartManager(ctx, map[string]string{"DISPATCHER_REPLICAS": "2"}); err != nil {
			t.Fatal(err)
		}
		poll.Eventually(t, 2*time.Minute, "2 ready dispatcher replicas", func() error {
			d := &appsv1.Deployment{}
			if err := s.Client.Get(ctx, client.ObjectKey{Namespace: s.Opts.OperatorNamespace, Name: naming.DispatcherName(chNS, chName)}, d); err != nil {
				return err
			}
			if d.Spec.Replicas == nil || *d.Spec.Replicas != 2 || d.Status.ReadyReplicas != 2 || d.Status.UpdatedReplicas != 2 || d.Status.Replicas != 2 {
				return fmt.Errorf("spec %v status %+v", d.Spec.Replicas, d.Status)
			}
			return nil
		})
		waitSubscribers(t, s, "uid-one", "uid-two", "uid-three")
		// Counters are cumulative and a rebalance may still move partitions: compare the counts
		// of one batch at a time until both replicas consumed, from disjoint partitions.
		round := 0
		poll.Eventually(t, 2*time.Minute, "both replicas consume disjoint partitions", func() error {
			pods := dispatcherPods(s)
			if len(pods) != 2 {
				return fmt.Errorf("%d dispatcher pods", len(pods))
			}
			before := make([]map[string]map[string]float64, 2)
			for i, p := range pods {
				m, err := consumed(p.MetricsURL)
				if err != nil {
					return err
				}
				before[i] = m
			}
			round++
			ids, _ := sendBatch(t, url, fmt.Sprintf("scale%d", round), 24)
			one.waitAll(t, ids, time.Minute)
			two.waitAll(t, ids, time.Minute)
			three.waitAll(t, ids, time.Minute)
			// Give the counters of the last deliveries a moment to be bumped after the POST.
			time.Sleep(200 * time.Millisecond)
			parts := make([]map[string]map[string]bool, 2)
			for i, p := range pods {
				after, err := consumed(p.MetricsURL)
				if err != nil {
					return err
				}
				parts[i] = map[string]map[string]bool{}
				for consumer, byPart := range after {
					for part, v := range byPart {
						if v > before[i][consumer][part] {
							if parts[i][consumer] == nil {
								parts[i][consumer] = map[string]bool{}
							}
							parts[i][consumer][part] = true
						}
					}
				}
			}
			if len(parts[0]) == 0 || len(parts[1]) == 0 {
				return fmt.Errorf("a replica consumed nothing: %v / %v", parts[0], parts[1])
			}
			for consumer, ps := range parts[0] {
				for part := range ps {
					if parts[1][consumer][part] {
						return fmt.Errorf("consumer %s partition %s consumed by both replicas in one batch", consumer, part)
					}
				}
			}
			return nil
		})
	})

	t.Run("a SIGKILLed dispatcher restarts and no event is lost", func(t *testing.T) {
		f := startFlow(url, "kill", 10*time.Millisecond)
		poll.Eventually(t, 30*time.Second, "events flowing", func() error {
			if f.count() < 50 {
				return fmt.Errorf("%d accepted", f.count())
			}
			return nil
		})
		victim := dispatcherPods(s)[0]
		if err := syscall.Kill(victim.PID, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		poll.Eventually(t, time.Minute, "the killed replica restarted and ready", func() error {
			for _, p := range dispatcherPods(s) {
				if p.Name == victim.Name && p.PID != 0 && p.PID != victim.PID && p.Ready && p.Restarts > victim.Restarts {
					return nil
				}
			}
			return fmt.Errorf("%+v", dispatcherPods(s))
		})
		at := f.count()
		poll.Eventually(t, 30*time.Second, "events after the restart", func() error {
			if f.count() < at+50 {
				return fmt.Errorf("%d accepted", f.count())
			}
			return nil
		})
		ids := f.end()
		for _, r := range []*recorder{one, two, three} {
			r.waitAll(t, ids, 2*time.Minute)
		}
	})

	t.Run("a removed subscriber disappears from status", func(t *testing.T) {
		updateSubscribers(t, s, subscriber("one", one), subscriber("three", three))
		waitSubscribers(t, s, "uid-one", "uid-three")
	})

	t.Run("a subscriber written as Knative's Subscription controller writes it becomes ready", func(t *testing.T) {
		knSink, knDLS := newRecorder(t, "knative"), newRecorder(t, "knative-dls")
		kn := &v1beta1.KafkaChannel{
			ObjectMeta: metav1.ObjectMeta{Name: "knative", Namespace: chNS},
			Spec: v1beta1.KafkaChannelSpec{NumPartitions: 2,
				Delivery: &v1beta1.DeliverySpec{DeadLetterSink: &v1beta1.Destination{URI: ptr(knDLS.URL())}}},
		}
		if err := s.Client.Create(ctx, kn); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = s.Client.Delete(ctx, kn) }()
		// Exactly the fields and shape Knative Eventing's Subscription controller patches in.
		const uid = "0c7c1a52-36ab-4d7f-9a6e-5b1a8c2f0e11"
		patch, _ := json.Marshal(map[string]any{"spec": map[string]any{"subscribers": []any{map[string]any{
			"name": "my-subscription", "uid": uid, "generation": 2,
			"subscriberUri": knSink.URL(), "subscriberAudience": "sink-audience",
			"replyUri": knSink.URL() + "reply", "replyAudience": "reply-audience",
			"delivery": map[string]any{"deadLetterSink": map[string]any{"uri": knDLS.URL()},
				"retry": 2, "backoffPolicy": "linear", "backoffDelay": "PT0.1S", "timeout": "PT5S"},
			"auth": map[string]any{"serviceAccountName": "my-subscription-oidc"},
		}}}})
		apply := func() int64 {
			t.Helper()
			if err := s.Client.Patch(ctx, kn, client.RawPatch(types.MergePatchType, patch)); err != nil {
				t.Fatal(err)
			}
			return kn.Generation
		}
		gen := apply()
		// What Knative's Subscription controller waits for before the Subscription is Ready, and
		// the resolved channel dead-letter sink it reads.
		poll.Eventually(t, 2*time.Minute, "status.subscribers ready at the subscriber's generation", func() error {
			if err := s.Client.Get(ctx, client.ObjectKeyFromObject(kn), kn); err != nil {
				return err
			}
			if kn.Status.DeadLetterSinkURI == nil || *kn.Status.DeadLetterSinkURI != knDLS.URL() {
				return fmt.Errorf("status.deadLetterSinkUri = %v, want %s", kn.Status.DeadLetterSinkURI, knDLS.URL())
			}
			for _, st := range kn.Status.Subscribers {
				if st.UID == uid && st.ObservedGeneration == 2 && st.Ready == "True" {
					return nil
				}
			}
			return fmt.Errorf("status.subscribers = %+v", kn.Status.Subscribers)
		})
		if again := apply(); again != gen {
			t.Errorf("an identical patch bumped the generation %d -> %d: Knative would patch forever", gen, again)
		}
		e := makeEvent("knative", 0)
		poll.Eventually(t, 10*time.Second, "the receiver accepts an event for the channel", func() error {
			return sendEvent(ctx, fmt.Sprintf("%s/%s/%s", s.ReceiverURL, chNS, "knative"), e)
		})
		knSink.waitAll(t, []string{e.id}, time.Minute)
		checkUnaltered(t, knSink, []sent{e})
	})

	t.Run("deleting the channel removes its topic and processes", func(t *testing.T) {
		pids := dispatcherPods(s)
		if err := s.Client.Delete(ctx, getChannel(t, s)); err != nil {
			t.Fatal(err)
		}
		poll.Eventually(t, 2*time.Minute, "channel gone", func() error {
			err := s.Client.Get(ctx, client.ObjectKey{Namespace: chNS, Name: chName}, &v1beta1.KafkaChannel{})
			if apierrors.IsNotFound(err) {
				return nil
			}
			return fmt.Errorf("still there: %v", err)
		})
		poll.Eventually(t, time.Minute, "dispatcher processes gone", func() error {
			if left := dispatcherPods(s); len(left) > 0 {
				return fmt.Errorf("%d dispatcher pods", len(left))
			}
			for _, p := range pids {
				if p.PID != 0 && syscall.Kill(p.PID, 0) == nil {
					return fmt.Errorf("pid %d alive", p.PID)
				}
			}
			return nil
		})
		poll.Eventually(t, time.Minute, "topic deleted", func() error { return topicGone(s.Brokers[0], naming.Topic(chNS, chName)) })
	})
}

// topicGone asks a broker over a fresh connection (kafka-go's client caches metadata).
func topicGone(broker, topic string) error {
	conn, err := kafka.Dial("tcp", broker)
	if err != nil {
		return err
	}
	defer conn.Close()
	parts, err := conn.ReadPartitions(topic)
	if errors.Is(err, kafka.UnknownTopicOrPartition) || (err == nil && len(parts) == 0) {
		return nil
	}
	if err != nil {
		return err
	}
	return fmt.Errorf("topic %s still has %d partitions", topic, len(parts))
}

func requireKcat(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("kcat")
	if err != nil {
		t.Skip("kcat is not installed: run `make kcat` (Debian package kcat)")
	}
	return p
}

func ptr[T any](v T) *T { return &v }
