package v1beta1_test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/kafkachannel/kafkachannel/environments/envtestbin"

	v1beta1 "github.com/kafkachannel/kafkachannel/api/v1beta1"
)

// One real kube-apiserver for the package: the CRD's OpenAPI schema, defaults and CEL rules are
// only meaningful when the apiserver enforces them.
var (
	k8s     client.Client
	cfg     *rest.Config
	testEnv *envtest.Environment
)

// noEnv says why the envtest tests skip; empty when the control plane runs.
var noEnv string

func TestMain(m *testing.M) {
	flag.Parse()
	if _, noEnv = envtestbin.Find(); noEnv != "" {
		fmt.Println("api/v1beta1:", noEnv)
		os.Exit(m.Run())
	}
	testEnv = &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	var err error
	cfg, err = testEnv.Start()
	if err != nil {
		panic(err)
	}
	scheme := runtime.NewScheme()
	if err := v1beta1.AddToScheme(scheme); err != nil {
		panic(err)
	}
	k8s, err = client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		panic(err)
	}
	code := m.Run()
	_ = testEnv.Stop()
	os.Exit(code)
}

func ptr[T any](v T) *T { return &v }

func newChannel(name string) *v1beta1.KafkaChannel {
	return &v1beta1.KafkaChannel{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}}
}

func TestDefaults(t *testing.T) {
	envtestbin.Skip(t, noEnv)
	ctx := context.Background()
	kc := newChannel("defaults")
	if err := k8s.Create(ctx, kc); err != nil {
		t.Fatal(err)
	}
	if kc.Spec.NumPartitions != 1 || kc.Spec.ReplicationFactor != 1 || kc.Spec.RetentionDuration != "PT168H" {
		t.Errorf("defaults not applied: %+v", kc.Spec)
	}
}

// A channel written as YAML with no spec, or with an empty "spec:" (which YAML reads as null),
// is how Knative's conformance suite creates a KafkaChannel (test/rekt channel_impl.yaml). The
// apiserver defaults fields only inside an object that exists, so without a default for spec
// itself such a channel kept retentionDuration "" and never became Ready.
func TestDefaultsWithoutSpec(t *testing.T) {
	envtestbin.Skip(t, noEnv)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		spec any // nil: no spec key at all
		set  bool
	}{
		{name: "no-spec"},
		{name: "null-spec", spec: nil, set: true},
		{name: "empty-spec", spec: map[string]any{}, set: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := &unstructured.Unstructured{Object: map[string]any{}}
			u.SetGroupVersionKind(v1beta1.GroupVersion.WithKind("KafkaChannel"))
			u.SetNamespace("default")
			u.SetName("defaults-" + tc.name)
			if tc.set {
				u.Object["spec"] = tc.spec
			}
			if err := k8s.Create(ctx, u); err != nil {
				t.Fatal(err)
			}
			kc := &v1beta1.KafkaChannel{}
			if err := k8s.Get(ctx, client.ObjectKeyFromObject(u), kc); err != nil {
				t.Fatal(err)
			}
			if kc.Spec.NumPartitions != 1 || kc.Spec.ReplicationFactor != 1 || kc.Spec.RetentionDuration != "PT168H" {
				t.Errorf("defaults not applied: %+v", kc.Spec)
			}
		})
	}
}

func TestCreateValidation(t *testing.T) {
	envtestbin.Skip(t, noEnv)
	good := v1beta1.SubscriberSpec{UID: "u1", Generation: 1, SubscriberURI: ptr("http://sink.default.svc.cluster.local/")}
	tests := []struct {
		name    string
		mutate  func(*v1beta1.KafkaChannel)
		wantErr string // "" means accepted
	}{
		{"minimal", func(*v1beta1.KafkaChannel) {}, ""},
		{"full", func(kc *v1beta1.KafkaChannel) {
			kc.Spec = v1beta1.KafkaChannelSpec{NumPartitions: 8, ReplicationFactor: 3, RetentionDuration: "P7D",
				Delivery: &v1beta1.DeliverySpec{
					DeadLetterSink: &v1beta1.Destination{URI: ptr("https://dlq.example.com/x")},
					Retry:          ptr(int32(5)), BackoffPolicy: ptr(v1beta1.BackoffPolicyLinear), BackoffDelay: ptr("PT0.2S"),
				},
				Subscribers: []v1beta1.SubscriberSpec{good, {UID: "u2", ReplyURI: ptr("https://reply.example.com")}},
			}
		}, ""},
		{"negative partitions", func(kc *v1beta1.KafkaChannel) { kc.Spec.NumPartitions = -1 }, "spec.numPartitions"},
		{"negative replication", func(kc *v1beta1.KafkaChannel) { kc.Spec.ReplicationFactor = -1 }, "spec.replicationFactor"},
		{"bad retention", func(kc *v1beta1.KafkaChannel) { kc.Spec.RetentionDuration = "7 days" },
			"retentionDuration must be an ISO-8601 duration"},
		{"empty duration P", func(kc *v1beta1.KafkaChannel) { kc.Spec.RetentionDuration = "P" },
			"retentionDuration must be an ISO-8601 duration"},
		{"subscriber without any uri", func(kc *v1beta1.KafkaChannel) {
			kc.Spec.Subscribers = []v1beta1.SubscriberSpec{{UID: "u1"}}
		}, "a subscriber needs a subscriberUri or a replyUri"},
		{"relative subscriber uri", func(kc *v1beta1.KafkaChannel) {
			kc.Spec.Subscribers = []v1beta1.SubscriberSpec{{UID: "u1", SubscriberURI: ptr("/path")}}
		}, "subscriberUri must be an absolute http or https URL"},
		{"ftp reply uri", func(kc *v1beta1.KafkaChannel) {
			kc.Spec.Subscribers = []v1beta1.SubscriberSpec{{UID: "u1", ReplyURI: ptr("ftp://x")}}
		}, "replyUri must be an absolute http or https URL"},
		{"duplicate uid", func(kc *v1beta1.KafkaChannel) {
			kc.Spec.Subscribers = []v1beta1.SubscriberSpec{good, good}
		}, "Duplicate value"},
		{"missing uid", func(kc *v1beta1.KafkaChannel) {
			kc.Spec.Subscribers = []v1beta1.SubscriberSpec{{SubscriberURI: ptr("http://x")}}
		}, "uid"},
		{"negative retry", func(kc *v1beta1.KafkaChannel) {
			kc.Spec.Delivery = &v1beta1.DeliverySpec{Retry: ptr(int32(-1))}
		}, "spec.delivery.retry"},
		{"bad backoff policy", func(kc *v1beta1.KafkaChannel) {
			kc.Spec.Delivery = &v1beta1.DeliverySpec{BackoffPolicy: ptr(v1beta1.BackoffPolicyType("random"))}
		}, "Unsupported value: \"random\""},
		{"bad backoff delay", func(kc *v1beta1.KafkaChannel) {
			kc.Spec.Delivery = &v1beta1.DeliverySpec{BackoffDelay: ptr("200ms")}
		}, "backoffDelay must be an ISO-8601 duration"},
		{"bad subscriber timeout", func(kc *v1beta1.KafkaChannel) {
			s := good
			s.Delivery = &v1beta1.DeliverySpec{Timeout: ptr("PT")}
			kc.Spec.Subscribers = []v1beta1.SubscriberSpec{s}
		}, "timeout must be an ISO-8601 duration"},
		{"dead letter sink without target", func(kc *v1beta1.KafkaChannel) {
			kc.Spec.Delivery = &v1beta1.DeliverySpec{DeadLetterSink: &v1beta1.Destination{}}
		}, "a destination needs a ref or a uri"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kc := newChannel("create-" + string(rune('a'+i)))
			tt.mutate(kc)
			err := k8s.Create(context.Background(), kc)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("valid object rejected: %v", err)
			case tt.wantErr != "" && err == nil:
				t.Fatalf("invalid object accepted, want an error containing %q", tt.wantErr)
			case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
				t.Fatalf("error %q does not contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestUpdateValidation(t *testing.T) {
	envtestbin.Skip(t, noEnv)
	tests := []struct {
		name    string
		mutate  func(*v1beta1.KafkaChannel)
		wantErr string
	}{
		{"grow partitions", func(kc *v1beta1.KafkaChannel) { kc.Spec.NumPartitions = 6 }, ""},
		{"shrink partitions", func(kc *v1beta1.KafkaChannel) { kc.Spec.NumPartitions = 2 },
			"numPartitions may grow but never shrink"},
		{"change replication factor", func(kc *v1beta1.KafkaChannel) { kc.Spec.ReplicationFactor = 2 },
			"replicationFactor is immutable"},
		{"change retention", func(kc *v1beta1.KafkaChannel) { kc.Spec.RetentionDuration = "PT1H" }, ""},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			kc := newChannel("update-" + string(rune('a'+i)))
			kc.Spec.NumPartitions = 4
			if err := k8s.Create(ctx, kc); err != nil {
				t.Fatal(err)
			}
			tt.mutate(kc)
			err := k8s.Update(ctx, kc)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("valid update rejected: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("update error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

// The Knative Subscription controller writes every field of its duck v1 SubscriberSpec and
// compares what it reads back: any pruned field makes it patch forever.
func TestKnativeSubscriberRoundTripsUnpruned(t *testing.T) {
	envtestbin.Skip(t, noEnv)
	ctx := context.Background()
	kc := newChannel("knative-written")
	if err := k8s.Create(ctx, kc); err != nil {
		t.Fatal(err)
	}
	written := map[string]any{
		"name": "my-subscription", "uid": "6f1b0c1e-5d3c-4c1e-9b1a-2f7c1f0e9a11", "generation": int64(3),
		"subscriberUri": "https://sink.default.svc.cluster.local/", "subscriberCACerts": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
		"subscriberAudience": "sink-audience", "replyUri": "http://reply.default.svc.cluster.local/",
		"replyCACerts": "-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----\n", "replyAudience": "reply-audience",
		"delivery": map[string]any{
			"deadLetterSink": map[string]any{"uri": "http://dlq.default.svc.cluster.local/", "CACerts": "pem", "audience": "dlq",
				"ref": map[string]any{"kind": "Service", "apiVersion": "v1", "name": "dlq", "namespace": "default"}},
			"retry": int64(3), "backoffPolicy": "exponential", "backoffDelay": "PT0.5S", "timeout": "PT10S",
			"retryAfterMax": "PT30S", "format": "binary",
		},
		"auth": map[string]any{"serviceAccountName": "sa", "serviceAccountNames": []any{"sa", "sb"}},
	}
	patch := func() int64 {
		body, _ := json.Marshal(map[string]any{"spec": map[string]any{"subscribers": []any{written}}})
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(v1beta1.GroupVersion.WithKind("KafkaChannel"))
		u.SetNamespace("default")
		u.SetName(kc.Name)
		if err := k8s.Patch(ctx, u, client.RawPatch(types.MergePatchType, body)); err != nil {
			t.Fatal(err)
		}
		return u.GetGeneration()
	}
	gen1 := patch()
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(v1beta1.GroupVersion.WithKind("KafkaChannel"))
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: "default", Name: kc.Name}, u); err != nil {
		t.Fatal(err)
	}
	subs, _, _ := unstructured.NestedSlice(u.Object, "spec", "subscribers")
	if len(subs) != 1 {
		t.Fatalf("subscribers = %v", subs)
	}
	got, _ := json.Marshal(subs[0])
	want, _ := json.Marshal(written)
	var gotM, wantM any
	_ = json.Unmarshal(got, &gotM)
	_ = json.Unmarshal(want, &wantM)
	if string(mustJSON(gotM)) != string(mustJSON(wantM)) {
		t.Errorf("subscriber pruned or changed by the apiserver:\n got %s\nwant %s", got, want)
	}
	if gen2 := patch(); gen2 != gen1 {
		t.Errorf("an identical second patch bumped the generation %d -> %d", gen1, gen2)
	}
}

func mustJSON(v any) []byte { b, _ := json.Marshal(v); return b }

// kubectl is what users look at; the printer columns must tell whether a channel works.
func TestKubectlGetShowsPrinterColumns(t *testing.T) {
	envtestbin.Skip(t, noEnv)
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skip("kubectl not installed")
	}
	ctx := context.Background()
	user, err := testEnv.AddUser(envtest.User{Name: "viewer", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig, err := user.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, kubeconfig, 0o600); err != nil {
		t.Fatal(err)
	}
	kc := newChannel("printed")
	kc.Spec.NumPartitions = 3
	if err := k8s.Create(ctx, kc); err != nil {
		t.Fatal(err)
	}
	kc.Status.Address = &v1beta1.Addressable{URL: "http://printed-kn-channel.default.svc.cluster.local"}
	kc.Status.Conditions = []metav1.Condition{{Type: "Ready", Status: metav1.ConditionFalse, Reason: "TopicNotReady",
		Message: "brokers unreachable", LastTransitionTime: metav1.Now()}}
	if err := k8s.Status().Update(ctx, kc); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(kubectl, "--kubeconfig", path, "get", "kafkachannels", "-n", "default", "printed").CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	header := strings.Fields(lines[0])
	wantHeader := []string{"NAME", "READY", "REASON", "URL", "PARTITIONS", "AGE"}
	if strings.Join(header, " ") != strings.Join(wantHeader, " ") {
		t.Errorf("header = %v, want %v", header, wantHeader)
	}
	row := strings.Fields(lines[len(lines)-1])
	if len(row) < 5 || row[0] != "printed" || row[1] != "False" || row[2] != "TopicNotReady" ||
		row[3] != "http://printed-kn-channel.default.svc.cluster.local" || row[4] != "3" {
		t.Errorf("row = %v", row)
	}
	// The short name and the categories work too.
	for _, args := range [][]string{{"get", "kc", "-n", "default"}, {"get", "channel", "-n", "default"}, {"get", "knative", "-n", "default"}} {
		if out, err := exec.Command(kubectl, append([]string{"--kubeconfig", path}, args...)...).CombinedOutput(); err != nil ||
			!strings.Contains(string(out), "printed") {
			t.Errorf("kubectl %v: %v\n%s", args, err, out)
		}
	}
}
