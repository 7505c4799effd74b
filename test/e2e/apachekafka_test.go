package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1beta1 "github.com/kafkachannel/kafkachannel/api/v1beta1"
	"github.com/kafkachannel/kafkachannel/environments/apachekafka"
	"github.com/kafkachannel/kafkachannel/environments/poll"
	"github.com/kafkachannel/kafkachannel/internal/naming"
)

// smokeEvents is how many events the real-Kafka smoke sends; maxDuplicates bounds what a
// SIGKILLed dispatcher may deliver twice: what it delivered but had not committed yet, at most
// one commit interval (100 ms) of deliveries plus the events in flight. Measured: see
// docs/kafka-compatibility.md.
const (
	smokeEvents   = 1000
	maxDuplicates = 250
)

// TestApacheKafka is the real-Kafka smoke of `make test`: the whole system on one Apache Kafka
// broker (the newest 4.x, or KAFKA_VERSION) with two subscribers, a dispatcher SIGKILLed
// mid-stream, interop with Kafka's own console tools and consumer-groups, and the channel's
// deletion. Every request the data plane sent must be in a version the broker supports.
func TestApacheKafka(t *testing.T) {
	if os.Getenv("KAFKACHANNEL_SKIP_APACHE") == "1" {
		t.Skip("KAFKACHANNEL_SKIP_APACHE=1")
	}
	version := os.Getenv("KAFKA_VERSION")
	if version == "" {
		version = apachekafka.DefaultVersion
	}
	// make test-kafka runs this package against a cluster of its own; this test starts its own.
	t.Setenv("KAFKA_BOOTSTRAP_SERVERS", "")
	start := time.Now()
	s := startStackOn(t, &apachekafka.Options{Version: version, Brokers: 1, RequestLog: true}, nil)
	k := s.Apache
	t.Logf("local stack on Apache Kafka %s up in %s", version, time.Since(start).Round(100*time.Millisecond))
	ctx := context.Background()
	url := fmt.Sprintf("%s/%s/%s", s.ReceiverURL, chNS, chName)
	topic := naming.Topic(chNS, chName)
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

	t.Run("1,000 events, a dispatcher SIGKILLed mid-stream: none lost", func(t *testing.T) {
		var ids []string
		var evs []sent
		for i := 0; i < smokeEvents; i++ {
			e := makeEvent("smoke", i)
			ids, evs = append(ids, e.id), append(evs, e)
		}
		// Eight senders, as many clients would; every event must be accepted (202).
		var wg sync.WaitGroup
		errs := make(chan error, smokeEvents)
		next := make(chan sent)
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for e := range next {
					if err := sendEvent(ctx, url, e); err != nil {
						errs <- err
					}
				}
			}()
		}
		go func() {
			for _, e := range evs {
				next <- e
			}
			close(next)
		}()
		poll.Eventually(t, time.Minute, "subscriber one has a fifth of the events", func() error {
			if n := one.received(ids); n < smokeEvents/5 {
				return fmt.Errorf("%d received", n)
			}
			return nil
		})
		victim := dispatcherPods(s)[0]
		if err := syscall.Kill(victim.PID, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		pending := smokeEvents - one.received(ids)
		t.Logf("SIGKILLed dispatcher %s with %d of %d events not yet at subscriber one", victim.Name, pending, smokeEvents)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		if pending == 0 {
			t.Fatal("every event had arrived before the kill: the kill was not mid-stream")
		}
		killed := time.Now()
		one.waitAll(t, ids, 2*time.Minute)
		two.waitAll(t, ids, 2*time.Minute)
		t.Logf("all %d events at both subscribers %s after the kill", smokeEvents, time.Since(killed).Round(100*time.Millisecond))
		for _, r := range []*recorder{one, two} {
			d := r.duplicates(ids)
			t.Logf("subscriber %s: 0 lost, %d duplicates", r.name, d)
			if d > maxDuplicates {
				t.Errorf("subscriber %s got %d duplicates, more than the %d a dispatcher can have delivered but not committed", r.name, d, maxDuplicates)
			}
		}
		checkUnaltered(t, one, evs)
		checkUnaltered(t, two, evs)
	})
	if t.Failed() {
		return
	}

	t.Run("Kafka's console consumer reads what the receiver wrote", func(t *testing.T) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(`{"interop":1}`))
		for h, v := range map[string]string{"Ce-Specversion": "1.0", "Ce-Id": "interop-1", "Ce-Source": "/e2e/interop",
			"Ce-Type": "dev.kafkachannel.interop", "Ce-Partitionkey": "order-42", "Content-Type": "application/json"} {
			req.Header.Set(h, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("receiver answered %d", resp.StatusCode)
		}
		prop := apachekafka.PropertyFlag(k.Version(), "kafka-console-consumer")
		out, err := k.Tool(ctx, "kafka-console-consumer", "--bootstrap-server", k.BootstrapServers(), "--topic", topic,
			"--from-beginning", "--max-messages", strconv.Itoa(smokeEvents+1), "--timeout-ms", "60000",
			prop, "print.headers=true", prop, "print.key=true")
		if err != nil {
			t.Fatal(err)
		}
		var line string
		for _, l := range strings.Split(out, "\n") {
			if strings.Contains(l, "ce_id:interop-1") {
				line = l
			}
		}
		if line == "" {
			t.Fatalf("no record with ce_id interop-1 among %d lines", strings.Count(out, "\n"))
		}
		fields := strings.SplitN(line, "\t", 3)
		if len(fields) != 3 {
			t.Fatalf("console consumer line %q: want headers, key and value", line)
		}
		headers := map[string]string{}
		for _, h := range strings.Split(fields[0], ",") {
			k, v, _ := strings.Cut(h, ":")
			headers[k] = v
		}
		want := map[string]string{"ce_specversion": "1.0", "ce_id": "interop-1", "ce_source": "/e2e/interop",
			"ce_type": "dev.kafkachannel.interop", "ce_partitionkey": "order-42", "content-type": "application/json"}
		for k, v := range want {
			if headers[k] != v {
				t.Errorf("header %s = %q, want %q (all: %v)", k, headers[k], v, headers)
			}
		}
		if fields[1] != "order-42" || fields[2] != `{"interop":1}` {
			t.Errorf("key %q value %q, want order-42 and the event's data", fields[1], fields[2])
		}
	})

	t.Run("a binary-mode CloudEvent from Kafka's console producer is delivered unaltered", func(t *testing.T) {
		prop := apachekafka.PropertyFlag(k.Version(), "kafka-console-producer")
		cmd, err := k.Command(ctx, "kafka-console-producer", "--bootstrap-server", k.BootstrapServers(), "--topic", topic,
			prop, "parse.headers=true", prop, "parse.key=true")
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stdin = strings.NewReader("ce_specversion:1.0,ce_id:from-console,ce_source:/kafka-console-producer,ce_type:dev.kafka.console," +
			"ce_subject:s1,content-type:application/json\tconsole-key\t{\"from\":\"console\"}\n")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("kafka-console-producer: %v\n%s", err, out)
		}
		for _, r := range []*recorder{one, two} {
			r.waitAll(t, []string{"from-console"}, time.Minute)
			got, _ := r.first("from-console")
			if got.SpecVersion() != "1.0" || got.Source() != "/kafka-console-producer" || got.Type() != "dev.kafka.console" ||
				got.Subject() != "s1" || got.DataContentType() != "application/json" || string(got.Data()) != `{"from":"console"}` ||
				len(got.Extensions()) != 0 {
				t.Errorf("subscriber %s got %s", r.name, got.String())
			}
		}
	})

	t.Run("kafka-consumer-groups shows each subscriber's group with lag 0", func(t *testing.T) {
		for _, uid := range []string{"uid-one", "uid-two"} {
			group := naming.GroupID(chNS, chName, uid)
			poll.Eventually(t, time.Minute, "lag 0 for "+group, func() error {
				out, err := k.Tool(ctx, "kafka-consumer-groups", "--bootstrap-server", k.BootstrapServers(), "--describe", "--group", group)
				if err != nil {
					return err
				}
				return zeroLag(out, topic, 4)
			})
		}
	})

	t.Run("every request of the data plane in a version the broker supports", func(t *testing.T) {
		if refused := k.Refused(); len(refused) > 0 {
			t.Errorf("Apache Kafka %s refused requests for their version:\n%s", version, strings.Join(refused, "\n"))
		}
		reqs, err := k.Requests()
		if err != nil {
			t.Fatal(err)
		}
		// kafka-go's Conn names itself in the client id, its Transport sends none; Kafka's own
		// tools and the broker's internal clients name themselves otherwise.
		seen := map[string]bool{}
		for _, r := range reqs {
			if r.Client == "" || strings.Contains(r.Client, "segmentio/kafka-go") {
				seen[fmt.Sprintf("%s v%d", r.API, r.Version)] = true
			}
		}
		apis := slices.Sorted(func(yield func(string) bool) {
			for k := range seen {
				if !yield(k) {
					return
				}
			}
		})
		t.Logf("kafka-go requests on Apache Kafka %s: %s", version, strings.Join(apis, ", "))
		for _, want := range []string{"JOIN_GROUP", "SYNC_GROUP", "OFFSET_COMMIT", "OFFSET_FETCH", "PRODUCE", "FETCH", "CREATE_TOPICS"} {
			if !slices.ContainsFunc(apis, func(a string) bool { return strings.HasPrefix(a, want+" ") }) {
				t.Errorf("no %s request from kafka-go logged: is the request log complete?", want)
			}
		}
	})

	t.Run("deleting the channel deletes its topic", func(t *testing.T) {
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
		poll.Eventually(t, time.Minute, "topic deleted", func() error { return topicGone(s.Brokers[0], topic) })
		out, err := k.Tool(ctx, "kafka-topics", "--bootstrap-server", k.BootstrapServers(), "--list")
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(strings.Fields(out), topic) {
			t.Errorf("kafka-topics --list still lists %s", topic)
		}
	})
}

// zeroLag checks kafka-consumer-groups --describe output: a row per partition of topic, each
// with a committed offset and LAG 0.
func zeroLag(out, topic string, partitions int) error {
	var cols []string
	rows := 0
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) == 0 {
			continue
		}
		if f[0] == "GROUP" {
			cols = f
			continue
		}
		if cols == nil || len(f) < len(cols)-3 {
			continue
		}
		col := func(name string) string {
			if i := slices.Index(cols, name); i >= 0 && i < len(f) {
				return f[i]
			}
			return ""
		}
		if col("TOPIC") != topic {
			continue
		}
		rows++
		if col("CURRENT-OFFSET") == "-" || col("LAG") != "0" {
			return fmt.Errorf("partition %s: current offset %s, lag %s\n%s", col("PARTITION"), col("CURRENT-OFFSET"), col("LAG"), out)
		}
	}
	if rows != partitions {
		return fmt.Errorf("%d rows for %s, want %d\n%s", rows, topic, partitions, out)
	}
	return nil
}
