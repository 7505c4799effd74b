package faults

import (
	"context"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha512"
	"fmt"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl/scram"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kafkachannel/kafkachannel/api/v1beta1"
	"github.com/kafkachannel/kafkachannel/environments/localstack"
	"github.com/kafkachannel/kafkachannel/environments/poll"
	"github.com/kafkachannel/kafkachannel/internal/kafkaconn"
	"github.com/kafkachannel/kafkachannel/internal/naming"
)

func ptr[T any](v T) *T { return &v }

// TestQuickDispatcherSIGKILL kills the channel's dispatcher process with SIGKILL while events
// flow: once in the quick part, five rounds in the full suite. The killed process commits
// nothing more, so its successor redelivers what was in flight (duplicates), and nothing of
// what the receiver accepted may go missing.
func TestQuickDispatcherSIGKILL(t *testing.T) {
	w := getWorld(t)
	rounds := 1
	if full() {
		rounds = 5
	}
	s := newSink(t)
	url := w.channel(t, "kill", 4, subscriber("kill-sub", s), nil)
	f := startFlow(url, "kill", 2, 5*time.Millisecond)
	f.waitAccepted(t, 100)
	var kills []time.Time
	for round := 1; round <= rounds; round++ {
		pods := w.dispatchers("kill")
		if len(pods) != 1 {
			f.end()
			t.Fatalf("round %d: want 1 dispatcher process, have %+v", round, pods)
		}
		old := pods[0]
		kills = append(kills, time.Now())
		if err := syscall.Kill(old.PID, syscall.SIGKILL); err != nil {
			f.end()
			t.Fatalf("round %d: SIGKILL %d: %v", round, old.PID, err)
		}
		// The next kill comes once the new process consumes every partition again: killing a
		// member while its group is still joining is a different fault (see
		// docs/reliability.md, what the suite found).
		poll.Eventually(t, 2*time.Minute, "dispatcher restarted and consuming all 4 partitions", func() error {
			for _, p := range w.dispatchers("kill") {
				if p.PID == old.PID || !p.Ready {
					continue
				}
				n, err := partitionsConsumed(p.MetricsURL)
				if err != nil {
					return err
				}
				if n == 4 {
					return nil
				}
				return fmt.Errorf("new process %d consumes %d of 4 partitions", p.PID, n)
			}
			return fmt.Errorf("pods %+v", w.dispatchers("kill"))
		})
		f.waitAccepted(t, 100)
	}
	as := f.end()
	var maxDups int
	for _, k := range kills {
		maxDups += killDups(as, k, 4)
	}
	settle(t, fmt.Sprintf("dispatcher SIGKILLed mid-stream, %d round(s)", rounds), maxDups, acceptedIDs(as), func() string { return codes(as) }, s)
}

// TestQuickSubscriberErrors makes the subscriber answer 500 and 503 in bursts of a second
// while events flow; retries must carry every event through.
func TestQuickSubscriberErrors(t *testing.T) {
	w := getWorld(t)
	s := newSink(t)
	url := w.channel(t, "burst", 2, subscriber("burst-sub", s), &v1beta1.DeliverySpec{
		Retry: ptr[int32](20), BackoffPolicy: ptr(v1beta1.BackoffPolicyLinear), BackoffDelay: ptr("PT0.1S"),
	})
	f := startFlow(url, "burst", 2, 10*time.Millisecond)
	for range 3 {
		f.waitAccepted(t, 50)
		s.mode.Store(answerBurst)
		time.Sleep(time.Second) // the length of a burst, not an assertion
		s.mode.Store(answerOK)
	}
	f.waitAccepted(t, 50)
	as := f.end()
	settle(t, "subscriber answering 500/503 in 1 s bursts (retry 20, linear 100 ms)", dupsNoRestart, acceptedIDs(as),
		func() string { return fmt.Sprintf("%d deliveries refused; %s", s.refused.Load(), codes(as)) }, s)
}

// TestQuickKafkaCut cuts the connection between the system and Kafka for longer than the
// receiver's produce timeout (10 s) while events flow, then heals it: the receiver answers 503
// (never 202) while Kafka is away, every 202 it gave is delivered, and no data-plane process
// restarts.
func TestQuickKafkaCut(t *testing.T) {
	w := getWorld(t)
	s := newSink(t)
	url := w.channel(t, "cut", 2, subscriber("cut-sub", s), nil)
	// Four senders: each request waits up to the produce timeout while Kafka is away, and
	// several must be answered inside the outage for the 503 check to mean something.
	f := startFlow(url, "cut", 4, 20*time.Millisecond)
	f.waitAccepted(t, 50)
	before := w.restarts()
	cutAt := time.Now()
	w.proxy.Break()
	time.Sleep(13 * time.Second) // the length of the outage, not an assertion
	healAt := time.Now()
	w.proxy.Heal()
	f.waitAccepted(t, 100)
	as := f.end()
	checkOutage(t, as, cutAt, healAt)
	checkNoRestart(t, w, before)
	settle(t, "connection to Kafka cut for 13 s and healed", dupsPerReaderRestart, acceptedIDs(as), func() string { return outageNotes(as, cutAt, healAt) }, s)
}

// partitionsConsumed counts the partitions a dispatcher process has consumed records from,
// from its eventing_kafka_consumed_msg_count series.
func partitionsConsumed(metricsURL string) (int, error) {
	resp, err := http.Get(metricsURL)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "eventing_kafka_consumed_msg_count{") && !strings.HasSuffix(line, " 0") {
			n++
		}
	}
	return n, nil
}

// checkOutage fails on a 202 for a request sent after Kafka went away and answered before it
// came back, and on any answer other than 503 in that window.
func checkOutage(t *testing.T, as []answer, down, up time.Time) {
	t.Helper()
	// Connections are cut at `down`; a request a few ms later is surely after it.
	down = down.Add(50 * time.Millisecond)
	for _, a := range as {
		if a.start.After(down) && a.end.Before(up) {
			if a.code == http.StatusAccepted {
				t.Errorf("event %s got 202 while Kafka was unreachable", a.id)
			} else if a.code != http.StatusServiceUnavailable {
				t.Errorf("event %s got %d while Kafka was unreachable, want 503", a.id, a.code)
			}
		}
	}
}

func outageNotes(as []answer, down, up time.Time) string {
	n503, n := 0, 0
	for _, a := range as {
		if a.start.After(down) && a.end.Before(up) {
			n++
			if a.code == http.StatusServiceUnavailable {
				n503++
			}
		}
	}
	return fmt.Sprintf("while away: %d of %d answers 503, 0 202; overall %s", n503, n, codes(as))
}

// checkNoRestart fails when a pod that ran before the fault restarted since.
func checkNoRestart(t *testing.T, w *world, before map[string]int) {
	t.Helper()
	for name, n := range w.restarts() {
		if old, ok := before[name]; ok && n != old {
			t.Errorf("pod %s restarted (%d -> %d): the data plane should recover by itself", name, old, n)
		}
	}
}

// TestReplicas scales the dispatcher from one replica to two and back under load.
func TestReplicas(t *testing.T) {
	requireFull(t)
	w := getWorld(t)
	s := newSink(t)
	url := w.channel(t, "scale", 4, subscriber("scale-sub", s), nil)
	f := startFlow(url, "scale", 2, 5*time.Millisecond)
	f.waitAccepted(t, 100)
	for _, n := range []int{2, 1} {
		if err := w.stack.RestartManager(context.Background(), map[string]string{"DISPATCHER_REPLICAS": fmt.Sprint(n)}); err != nil {
			f.end()
			t.Fatal(err)
		}
		w.waitReplicas(t, "scale", n)
		f.waitAccepted(t, 200)
	}
	as := f.end()
	settle(t, "dispatcher replicas 1 -> 2 -> 1 under load", 2*dupsPerRebalance, acceptedIDs(as), func() string { return codes(as) }, s)
}

func (w *world) waitReplicas(t *testing.T, name string, n int) {
	t.Helper()
	poll.Eventually(t, 2*time.Minute, fmt.Sprintf("%d ready dispatcher replicas", n), func() error {
		d := &appsv1.Deployment{}
		if err := w.stack.Client.Get(context.Background(), client.ObjectKey{Namespace: w.stack.Opts.OperatorNamespace, Name: naming.DispatcherName(chNS, name)}, d); err != nil {
			return err
		}
		if d.Spec.Replicas == nil || int(*d.Spec.Replicas) != n || int(d.Status.ReadyReplicas) != n || int(d.Status.Replicas) != n || int(d.Status.UpdatedReplicas) != n {
			return fmt.Errorf("spec %v status %+v", d.Spec.Replicas, d.Status)
		}
		return nil
	})
}

// TestSubscriberDown keeps the subscriber down for longer than its retries: every event must
// land in the dead-letter sink.
func TestSubscriberDown(t *testing.T) {
	requireFull(t)
	w := getWorld(t)
	s, dls := newSink(t), newSink(t)
	s.mode.Store(answerDown)
	sub := subscriber("down-sub", s)
	sub.Delivery = &v1beta1.DeliverySpec{
		Retry: ptr[int32](2), BackoffPolicy: ptr(v1beta1.BackoffPolicyLinear), BackoffDelay: ptr("PT0.05S"),
		DeadLetterSink: &v1beta1.Destination{URI: ptr(dls.url())},
	}
	url := w.channel(t, "down", 2, sub, nil)
	f := startFlow(url, "down", 2, 10*time.Millisecond)
	f.waitAccepted(t, 300)
	as := f.end()
	ids := acceptedIDs(as)
	settle(t, "subscriber down longer than its retries (retry 2): all in the dead-letter sink", dupsNoRestart, ids,
		func() string {
			return fmt.Sprintf("%d deliveries refused by the subscriber; %s", s.refused.Load(), codes(as))
		}, dls)
	// Every event was tried 1 + retry times before it was dead-lettered.
	if got, want := s.refused.Load(), int64(3*len(ids)); got < want {
		t.Errorf("the subscriber refused %d deliveries, want at least %d (3 attempts per event)", got, want)
	}
	if d, _, _ := s.tally(ids); d != 0 {
		t.Errorf("the subscriber that was down accepted %d events", d)
	}
}

// TestBrokerRestart restarts the broker with its data on the same port under load: the data
// plane carries on without restarting.
func TestBrokerRestart(t *testing.T) {
	requireFull(t)
	w := getWorld(t)
	s := newSink(t)
	url := w.channel(t, "restart", 2, subscriber("restart-sub", s), nil)
	f := startFlow(url, "restart", 2, 10*time.Millisecond)
	f.waitAccepted(t, 100)
	before := w.restarts()
	down := time.Now()
	w.stopKafka()
	time.Sleep(3 * time.Second) // the broker's downtime, not an assertion
	if err := w.startKafka(); err != nil {
		f.end()
		t.Fatal(err)
	}
	up := time.Now()
	f.waitAccepted(t, 100)
	as := f.end()
	checkOutage(t, as, down, up)
	checkNoRestart(t, w, before)
	settle(t, "broker restarted with its data (3 s down)", dupsPerReaderRestart, acceptedIDs(as), func() string { return outageNotes(as, down, up) }, s)
}

// TestManagerRestart restarts the manager right after a channel is created, while it is
// reconciling it, and again while a subscriber is added; the channel still becomes Ready and
// delivers everything.
func TestManagerRestart(t *testing.T) {
	requireFull(t)
	w := getWorld(t)
	ctx := context.Background()
	s := newSink(t)
	u := s.url()
	ch := &v1beta1.KafkaChannel{}
	ch.Name, ch.Namespace = "mgr", chNS
	ch.Spec = v1beta1.KafkaChannelSpec{NumPartitions: 2, Subscribers: []v1beta1.SubscriberSpec{{Name: "mgr-sub", UID: "mgr-sub", Generation: 1, SubscriberURI: &u}}}
	if err := w.stack.Client.Create(ctx, ch); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.stack.Client.Delete(context.Background(), ch) })
	time.Sleep(200 * time.Millisecond) // lets the reconcile start, so the restart lands inside it
	if err := w.stack.RestartManager(ctx, nil); err != nil {
		t.Fatal(err)
	}
	w.waitReady(t, "mgr", "mgr-sub")
	url := fmt.Sprintf("%s/%s/%s", w.stack.ReceiverURL, chNS, "mgr")
	f := startFlow(url, "mgr", 2, 10*time.Millisecond)
	f.waitAccepted(t, 100)
	s2 := newSink(t)
	poll.Eventually(t, 30*time.Second, "add a second subscriber", func() error {
		if err := w.stack.Client.Get(ctx, client.ObjectKeyFromObject(ch), ch); err != nil {
			return err
		}
		ch.Spec.Subscribers = append(ch.Spec.Subscribers[:1], subscriber("mgr-sub2", s2))
		return w.stack.Client.Update(ctx, ch)
	})
	if err := w.stack.RestartManager(ctx, nil); err != nil {
		f.end()
		t.Fatal(err)
	}
	w.waitReady(t, "mgr", "mgr-sub2")
	f.waitAccepted(t, 100)
	as := f.end()
	settle(t, "manager restarted mid-reconcile (create, then subscriber added)", dupsNoRestart, acceptedIDs(as), func() string { return codes(as) }, s)
}

// TestSecretRotation changes the Kafka user's SCRAM password in Kafka and then in the Kafka
// Secret while events flow: the data plane rolls to the new password and nothing accepted is
// lost.
func TestSecretRotation(t *testing.T) {
	requireFull(t)
	w := getWorld(t)
	ctx := context.Background()
	s := newSink(t)
	url := w.channel(t, "rotate", 2, subscriber("rotate-sub", s), nil)
	f := startFlow(url, "rotate", 2, 10*time.Millisecond)
	f.waitAccepted(t, 100)
	hashes := map[string]bool{}
	for _, p := range w.dispatchers("rotate") {
		hashes[p.TemplateHash] = true
	}
	newPassword := "second-password"
	if err := w.setPassword(ctx, newPassword); err != nil {
		f.end()
		t.Fatal(err)
	}
	poll.Eventually(t, 30*time.Second, "update the Kafka Secret", func() error {
		sec := &corev1.Secret{}
		if err := w.stack.Client.Get(ctx, client.ObjectKey{Namespace: w.stack.Opts.OperatorNamespace, Name: localstack.KafkaSecretName}, sec); err != nil {
			return err
		}
		sec.Data[kafkaconn.KeyPassword] = []byte(newPassword)
		return w.stack.Client.Update(ctx, sec)
	})
	poll.Eventually(t, 2*time.Minute, "dispatcher rolled to the new Secret", func() error {
		pods := w.dispatchers("rotate")
		for _, p := range pods {
			if hashes[p.TemplateHash] || !p.Ready {
				return fmt.Errorf("pods %+v", pods)
			}
		}
		if len(pods) == 0 {
			return fmt.Errorf("no dispatcher")
		}
		return nil
	})
	f.waitAccepted(t, 200)
	as := f.end()
	settle(t, "Kafka Secret rotated (SCRAM password changed) under load", 2*dupsPerRebalance, acceptedIDs(as), func() string { return codes(as) }, s)
}

// setPassword changes the suite user's SCRAM-SHA-512 password in Kafka.
func (w *world) setPassword(ctx context.Context, password string) error {
	mech, err := scram.Mechanism(scram.SHA512, kafkaUser, w.password)
	if err != nil {
		return err
	}
	salt := make([]byte, 16)
	_, _ = rand.Read(salt)
	const iterations = 4096
	salted, err := pbkdf2.Key(sha512.New, password, salt, iterations, sha512.Size)
	if err != nil {
		return err
	}
	c := &kafka.Client{Addr: kafka.TCP(w.proxy.Addr()), Transport: &kafka.Transport{SASL: mech}, Timeout: 10 * time.Second}
	res, err := c.AlterUserScramCredentials(ctx, &kafka.AlterUserScramCredentialsRequest{
		Upsertions: []kafka.UserScramCredentialsUpsertion{{
			Name: kafkaUser, Mechanism: kafka.ScramMechanismSha512, Iterations: iterations, Salt: salt, SaltedPassword: salted,
		}},
	})
	if err != nil {
		return fmt.Errorf("changing the SCRAM password: %w", err)
	}
	for _, r := range res.Results {
		if r.Error != nil {
			return fmt.Errorf("changing the SCRAM password of %s: %w", r.User, r.Error)
		}
	}
	w.password = password
	return nil
}
