package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/segmentio/kafka-go"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/kafkachannel/kafkachannel/api/v1beta1"
	"github.com/kafkachannel/kafkachannel/dispatcher"
	"github.com/kafkachannel/kafkachannel/dispatcher/kube"
	"github.com/kafkachannel/kafkachannel/environments/envtestbin"
	"github.com/kafkachannel/kafkachannel/environments/kafkatest"
	"github.com/kafkachannel/kafkachannel/environments/poll"
	"github.com/kafkachannel/kafkachannel/internal/kafkabinding"
	"github.com/kafkachannel/kafkachannel/internal/naming"
	"github.com/kafkachannel/kafkachannel/internal/observability"
)

// The binary's wiring end to end: env-style options, the mounted Secret, the restricted watch,
// delivery, status, the admin endpoints and a graceful stop.
func TestRunEndToEnd(t *testing.T) {
	_, noEnv := envtestbin.Find()
	envtestbin.Skip(t, noEnv)
	env := &envtest.Environment{CRDDirectoryPaths: []string{filepath.Join("..", "..", "config", "crd", "bases")}, ErrorIfCRDPathMissing: true}
	cfg, err := env.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	scheme, _ := kube.NewScheme()
	k8s, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}

	k := kafkatest.Start(t)
	ns, name := "default", "bin"
	kcl := &kafka.Client{Addr: kafka.TCP(k.Brokers...)}
	if _, err := kcl.CreateTopics(context.Background(), &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{Topic: naming.Topic(ns, name), NumPartitions: 2, ReplicationFactor: 1}}}); err != nil {
		t.Fatal(err)
	}
	var delivered atomic.Int32
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		delivered.Add(1)
		w.WriteHeader(http.StatusAccepted)
	}))
	defer sink.Close()
	kc := &v1beta1.KafkaChannel{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	kc.Spec.Subscribers = []v1beta1.SubscriberSpec{{UID: "u1", Generation: 3, SubscriberURI: &sink.URL}}
	if err := k8s.Create(context.Background(), kc); err != nil {
		t.Fatal(err)
	}

	secretDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(secretDir, "brokers"), []byte(k.BootstrapServers()), 0o600); err != nil {
		t.Fatal(err)
	}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	t.Setenv(observability.PortMapEnv, fmt.Sprintf("%d=%d", observability.MetricsPort, port))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	o := options{namespace: ns, name: name, secretDir: secretDir, maxInFlight: 8, commitInterval: 100 * time.Millisecond,
		drainTimeout: time.Second, sessionTimeout: 6 * time.Second, logLevel: "info"}
	done := make(chan error, 1)
	go func() { done <- run(ctx, o, func() (*rest.Config, error) { return cfg, nil }) }()

	poll.Eventually(t, 30*time.Second, "condition", func() error {
		got := &v1beta1.KafkaChannel{}
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(kc), got); err != nil {
			return err
		}
		for _, s := range got.Status.Subscribers {
			if s.UID == "u1" && s.Ready == dispatcher.ReadyTrue && s.ObservedGeneration == 3 {
				return nil
			}
		}
		return fmt.Errorf("status.subscribers = %+v", got.Status.Subscribers)
	})
	admin := "http://127.0.0.1:" + strconv.Itoa(port)
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get(admin + path)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %v %v", path, err, resp)
		}
		_ = resp.Body.Close()
	}

	ev := event.New()
	ev.SetID("one")
	ev.SetSource("/test")
	ev.SetType("test")
	msg, _ := kafkabinding.ToMessage(&ev)
	w := &kafka.Writer{Addr: kafka.TCP(k.Brokers...), Topic: naming.Topic(ns, name), BatchTimeout: time.Millisecond}
	defer w.Close()
	if err := w.WriteMessages(ctx, msg); err != nil {
		t.Fatal(err)
	}
	poll.Eventually(t, 20*time.Second, "condition", func() error {
		if delivered.Load() == 0 {
			return fmt.Errorf("not delivered yet")
		}
		return nil
	})
	resp, err := http.Get(admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if !strings.Contains(string(body), dispatcher.MetricConsumed+`{consumer="`+naming.GroupID(ns, name, "u1")+`"`) {
		t.Errorf("/metrics lacks %s for the subscriber's group", dispatcher.MetricConsumed)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run did not stop after the signal")
	}
}
