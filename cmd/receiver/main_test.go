package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/kafkachannel/kafkachannel/api/v1beta1"
	"github.com/kafkachannel/kafkachannel/environments/certs"
	"github.com/kafkachannel/kafkachannel/environments/envtestbin"
	"github.com/kafkachannel/kafkachannel/environments/kafkatest"
	"github.com/kafkachannel/kafkachannel/internal/naming"
	"github.com/kafkachannel/kafkachannel/internal/observability"
)

func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "receiver")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestBinary runs the receiver as the manager's Deployment does (env, mounted Secret, ports)
// against a real apiserver and Kafka: an event posted to the channel's address is accepted and
// in the topic, the admin port answers /readyz and /metrics, and SIGTERM ends it cleanly.
func TestBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and starts an apiserver")
	}
	_, noEnv := envtestbin.Find()
	envtestbin.Skip(t, noEnv)
	bin := buildBinary(t)

	// --help needs no cluster and no Secret.
	if out, err := exec.Command(bin, "--help").CombinedOutput(); !strings.Contains(string(out), "-max-body-bytes") {
		t.Fatalf("--help: %v\n%s", err, out)
	}

	env := &envtest.Environment{CRDDirectoryPaths: []string{filepath.Join("..", "..", "config", "crd", "bases")}, ErrorIfCRDPathMissing: true}
	cfg, err := env.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	user, err := env.AddUser(envtest.User{Name: "receiver", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig, err := user.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	scheme := runtime.NewScheme()
	_ = v1beta1.AddToScheme(scheme)
	k8s, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}

	k := kafkatest.Start(t)
	topic := naming.Topic("default", "bin")
	c := &kafka.Client{Addr: kafka.TCP(k.Brokers...), Timeout: 10 * time.Second}
	if _, err := c.CreateTopics(context.Background(), &kafka.CreateTopicsRequest{
		Topics: []kafka.TopicConfig{{Topic: topic, NumPartitions: 1, ReplicationFactor: 1}},
	}); err != nil {
		t.Fatal(err)
	}
	kc := &v1beta1.KafkaChannel{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "bin"}}
	if err := k8s.Create(context.Background(), kc); err != nil {
		t.Fatal(err)
	}
	meta.SetStatusCondition(&kc.Status.Conditions, metav1.Condition{Type: v1beta1.ConditionTopicReady, Status: metav1.ConditionTrue, Reason: "TopicCreated"})
	if err := k8s.Status().Update(context.Background(), kc); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	secretDir := filepath.Join(dir, "kafka-secret")
	_ = os.MkdirAll(secretDir, 0o755)
	_ = os.WriteFile(filepath.Join(secretDir, "brokers"), []byte(k.BootstrapServers()), 0o600)
	kubeconfigPath := filepath.Join(dir, "kubeconfig")
	_ = os.WriteFile(kubeconfigPath, kubeconfig, 0o600)
	ingress, ingressTLS, metrics, profiling := freePort(t), freePort(t), freePort(t), freePort(t)
	// The certificate Secret as mounted (cert-manager's kubernetes.io/tls keys).
	ca, err := certs.NewCA("receiver CA")
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.Issue("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	tlsDir := filepath.Join(dir, "tls")
	_ = os.MkdirAll(tlsDir, 0o755)
	_ = os.WriteFile(filepath.Join(tlsDir, "tls.crt"), certPEM, 0o600)
	_ = os.WriteFile(filepath.Join(tlsDir, "tls.key"), keyPEM, 0o600)

	cmd := exec.Command(bin, "--kubeconfig", kubeconfigPath)
	cmd.Env = append(os.Environ(),
		"KAFKA_SECRET_DIR="+secretDir,
		"CONFIG_DIR="+filepath.Join(dir, "config"),
		"RECEIVER_TLS_DIR="+tlsDir,
		"POD_NAME=receiver-0", "POD_NAMESPACE=knative-eventing",
		fmt.Sprintf("%s=%d=%d,%d=%d,%d=%d,%d=%d", observability.PortMapEnv,
			observability.IngressPort, ingress, observability.IngressTLSPort, ingressTLS,
			observability.MetricsPort, metrics, observability.ProfilingPort, profiling),
	)
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill() // no-op once it has exited
		if t.Failed() {
			t.Logf("receiver output:\n%s", logs.String())
		}
	})

	admin := fmt.Sprintf("http://127.0.0.1:%d", metrics)
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(admin + "/readyz")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the receiver never became ready: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	var resp *http.Response
	for {
		req, _ := http.NewRequest(http.MethodPost, fmt.Sprintf("http://127.0.0.1:%d/", ingress), strings.NewReader("hi"))
		req.Host = naming.ChannelHost("default", "bin")
		req.Header.Set("ce-specversion", "1.0")
		req.Header.Set("ce-id", "bin-1")
		req.Header.Set("ce-source", "/test")
		req.Header.Set("ce-type", "t")
		resp, err = http.DefaultClient.Do(req)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST to the channel's address: %d, want 202", resp.StatusCode)
	}

	// The https port serves the mounted certificate.
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.CertPEM)
	tlsClient := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	req, _ := http.NewRequest(http.MethodPost, fmt.Sprintf("https://127.0.0.1:%d%s", ingressTLS, naming.ChannelPath("default", "bin")), strings.NewReader("hi"))
	req.Header.Set("ce-specversion", "1.0")
	req.Header.Set("ce-id", "bin-2")
	req.Header.Set("ce-source", "/test")
	req.Header.Set("ce-type", "t")
	tresp, err := tlsClient.Do(req)
	if err != nil {
		t.Fatalf("POST over https: %v", err)
	}
	_ = tresp.Body.Close()
	if tresp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST over https: %d, want 202", tresp.StatusCode)
	}

	mresp, err := http.Get(admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	var body bytes.Buffer
	_, _ = body.ReadFrom(mresp.Body)
	_ = mresp.Body.Close()
	if !strings.Contains(body.String(), `kafkachannel_receiver_events_total{channel="default/bin",code="202"} 2`) {
		t.Errorf("/metrics does not count the event:\n%s", body.String())
	}

	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("exit after SIGTERM: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the receiver did not exit after SIGTERM")
	}

	r := kafka.NewReader(kafka.ReaderConfig{Brokers: k.Brokers, Topic: topic, MaxWait: 100 * time.Millisecond, MaxBytes: 1 << 20})
	defer func() { _ = r.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	m, err := r.ReadMessage(ctx)
	if err != nil {
		t.Fatalf("reading the topic: %v", err)
	}
	if string(m.Value) != "hi" {
		t.Errorf("record value %q, want hi", m.Value)
	}
}
