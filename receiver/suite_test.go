package receiver

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/kafkachannel/kafkachannel/api/v1beta1"
	"github.com/kafkachannel/kafkachannel/environments/envtestbin"
	"github.com/kafkachannel/kafkachannel/environments/kafkatest"
	"github.com/kafkachannel/kafkachannel/environments/testlog"
	"github.com/kafkachannel/kafkachannel/internal/kafkaconn"
	"github.com/kafkachannel/kafkachannel/internal/naming"
)

// One real kube-apiserver for the package; the receivers under test learn about channels only
// through the same cache of KafkaChannels the binary uses (WatchChannels).
var (
	k8s      client.Client
	channels *Index
	// restCfg reaches the apiserver as an administrator (token requests, OIDC discovery).
	restCfg *rest.Config
)

// noEnv says why the tests that need the apiserver skip; empty when it runs.
var noEnv string

func TestMain(m *testing.M) {
	flag.Parse()
	if fuzzing() {
		// The fuzz target needs no cluster, and fuzz workers are restarted and killed at will:
		// an apiserver per worker would be slow and left behind.
		channels = NewIndex()
		os.Exit(m.Run())
	}
	if _, noEnv = envtestbin.Find(); noEnv != "" {
		// The tests that need no apiserver (writer, routing) still run.
		fmt.Println("receiver:", noEnv)
		channels = NewIndex()
		os.Exit(m.Run())
	}
	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "config", "crd", "bases"), filepath.Join("..", "test", "crds")},
		ErrorIfCRDPathMissing: true,
	}
	cfg, err := env.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting envtest:", err)
		os.Exit(1)
	}
	restCfg = cfg
	code := func() int {
		defer func() { _ = env.Stop() }()
		scheme := runtime.NewScheme()
		_ = clientgoscheme.AddToScheme(scheme)
		_ = v1beta1.AddToScheme(scheme)
		k8s, err = client.New(cfg, client.Options{Scheme: scheme})
		if err != nil {
			fmt.Fprintln(os.Stderr, "kubernetes client:", err)
			return 1
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		channels = NewIndex()
		if _, err := WatchChannels(ctx, cfg, channels); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return m.Run()
	}()
	os.Exit(code)
}

func fuzzing() bool {
	for _, name := range []string{"test.fuzz", "test.fuzzworker"} {
		if f := flag.Lookup(name); f != nil && f.Value.String() != "" && f.Value.String() != "false" {
			return true
		}
	}
	return false
}

// testReceiver is a receiver on a real port of 127.0.0.1 writing to a real Kafka.
type testReceiver struct {
	*Receiver
	url      string
	registry *prometheus.Registry
	kafka    *kafkatest.Kafka
}

func kafkaConfig(t testing.TB, k *kafkatest.Kafka) *kafkaconn.Config {
	t.Helper()
	kc, err := kafkaconn.Parse(map[string][]byte{kafkaconn.KeyBrokers: []byte(k.BootstrapServers())})
	if err != nil {
		t.Fatal(err)
	}
	return kc
}

func startReceiver(t *testing.T, k *kafkatest.Kafka, mutate func(*Config)) *testReceiver {
	t.Helper()
	kc := kafkaConfig(t, k)
	reg := prometheus.NewRegistry()
	cfg := Config{
		Channels: channels,
		Writer:   NewWriter(kc, WriterOptions{}),
		Kafka:    kc,
		Registry: reg,
		Log:      testlog.New(t),
	}
	if mutate != nil {
		mutate(&cfg)
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_ = r.Shutdown(ctx)
	})
	waitFor(t, 5*time.Second, "receiver listening", func() error {
		if r.Addr() == nil {
			return errors.New("not yet")
		}
		return nil
	})
	return &testReceiver{Receiver: r, url: "http://" + r.Addr().String(), registry: reg, kafka: k}
}

// createChannel creates a KafkaChannel in the apiserver (and, when ready, its topic in Kafka with
// TopicReady=True in its status), and waits until the receiver's cache has seen it.
func createChannel(t *testing.T, k *kafkatest.Kafka, namespace, name string, partitions int, ready bool) Channel {
	envtestbin.Skip(t, noEnv)
	t.Helper()
	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}
	if err := k8s.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	kc := &v1beta1.KafkaChannel{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Spec:       v1beta1.KafkaChannelSpec{NumPartitions: int32(partitions)},
	}
	if err := k8s.Create(ctx, kc); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), kc) })
	if ready {
		createTopic(t, k, naming.Topic(namespace, name), partitions)
		meta.SetStatusCondition(&kc.Status.Conditions, metav1.Condition{
			Type: v1beta1.ConditionTopicReady, Status: metav1.ConditionTrue, Reason: "TopicCreated", Message: "topic exists",
		})
	} else {
		meta.SetStatusCondition(&kc.Status.Conditions, metav1.Condition{
			Type: v1beta1.ConditionTopicReady, Status: metav1.ConditionFalse, Reason: "KafkaUnreachable", Message: "brokers down",
		})
	}
	if err := k8s.Status().Update(ctx, kc); err != nil {
		t.Fatal(err)
	}
	var ch Channel
	waitFor(t, 10*time.Second, "the channel in the receiver's cache", func() error {
		var ok bool
		ch, ok = channels.ByName(namespace, name)
		if !ok {
			return errors.New("not in the index")
		}
		if ch.Ready != ready {
			return fmt.Errorf("ready=%v, want %v", ch.Ready, ready)
		}
		return nil
	})
	return ch
}

func createTopic(t testing.TB, k *kafkatest.Kafka, topic string, partitions int) {
	t.Helper()
	c := &kafka.Client{Addr: kafka.TCP(k.Brokers...), Timeout: 10 * time.Second}
	res, err := c.CreateTopics(context.Background(), &kafka.CreateTopicsRequest{
		Topics: []kafka.TopicConfig{{Topic: topic, NumPartitions: partitions, ReplicationFactor: 1}},
	})
	if err != nil {
		t.Fatalf("creating topic %s: %v", topic, err)
	}
	if err := res.Errors[topic]; err != nil && !errors.Is(err, kafka.TopicAlreadyExists) {
		t.Fatalf("creating topic %s: %v", topic, err)
	}
}

// readTopic reads every record of every partition of the topic, up to the end offsets at the
// time of the call.
func readTopic(t *testing.T, k *kafkatest.Kafka, topic string, partitions int) []kafka.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var all []kafka.Message
	for p := 0; p < partitions; p++ {
		conn, err := kafka.DialLeader(ctx, "tcp", k.Brokers[0], topic, p)
		if err != nil {
			t.Fatalf("dialing the leader of %s/%d: %v", topic, p, err)
		}
		last, err := conn.ReadLastOffset()
		_ = conn.Close()
		if err != nil {
			t.Fatalf("reading the end offset of %s/%d: %v", topic, p, err)
		}
		if last == 0 {
			continue
		}
		r := kafka.NewReader(kafka.ReaderConfig{
			Brokers: k.Brokers, Topic: topic, Partition: p, MaxWait: 100 * time.Millisecond, MinBytes: 1, MaxBytes: 10 << 20,
		})
		for {
			m, err := r.ReadMessage(ctx)
			if err != nil {
				_ = r.Close()
				t.Fatalf("reading %s/%d: %v", topic, p, err)
			}
			all = append(all, m)
			if m.Offset+1 >= last {
				break
			}
		}
		_ = r.Close()
	}
	return all
}

// waitFor polls check until it returns nil or the deadline passes.
func waitFor(t *testing.T, timeout time.Duration, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// post sends a request and returns the status code and the body.
func post(t *testing.T, req *http.Request) (int, string) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}
