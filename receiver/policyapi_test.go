package receiver

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	"github.com/kafkachannel/kafkachannel/environments/envtestbin"
	"github.com/kafkachannel/kafkachannel/environments/kafkatest"
	"github.com/kafkachannel/kafkachannel/environments/testlog"
	"github.com/kafkachannel/kafkachannel/internal/features"
	"github.com/kafkachannel/kafkachannel/internal/naming"
	"github.com/kafkachannel/kafkachannel/internal/oidc"
)

// TestPoliciesEnforcedWhenTheAPIAppearsLater is issue 22's defect 6: a receiver started on a
// cluster without Knative's EventPolicy API must enforce the policies of an API installed
// afterwards (a Knative upgrade), not only after a restart. It runs an apiserver of its own,
// since the package's has the API from the start.
func TestPoliciesEnforcedWhenTheAPIAppearsLater(t *testing.T) {
	envtestbin.Skip(t, noEnv)
	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	cfg, err := env.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	serviceAccount(t, cs, "late", "producer")
	serviceAccount(t, cs, "late", "bystander")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	policies, err := WatchPolicies(ctx, cfg, 100*time.Millisecond, testlog.New(t))
	if err != nil {
		t.Fatal(err)
	}
	if policies.Installed() {
		t.Fatal("the EventPolicy API is reported installed before its CRD is")
	}
	keys, err := oidc.NewAPIServerKeys(cfg)
	if err != nil {
		t.Fatal(err)
	}
	k := kafkatest.Start(t)
	idx := NewIndex()
	idx.SetChannel(Channel{Namespace: "late", Name: "ch", Topic: naming.Topic("late", "ch"), Ready: true})
	createTopic(t, k, naming.Topic("late", "ch"), 1)
	live := features.NewLive(features.Flags{TransportEncryption: features.EncryptionDisabled, OIDC: true, DefaultAuthorization: features.AllowSameNamespace})
	r := startReceiver(t, k, func(c *Config) {
		c.Channels = idx
		c.Features = live
		c.Auth = &Auth{Verifier: &oidc.Verifier{Source: keys}, Policies: policies}
	})
	tokens := &oidc.TokenProvider{Client: cs}
	send := func(sa string) (int, string) {
		t.Helper()
		tok, err := tokens.Token(ctx, "late", sa, naming.ChannelAudience("late", "ch"))
		if err != nil {
			t.Fatal(err)
		}
		h := with(binaryHeaders, "Authorization", "Bearer "+tok)
		return post(t, rawRequest(t, "POST", r.url+naming.ChannelPath("late", "ch"), h, "hi"))
	}
	if code, body := send("bystander"); code != http.StatusAccepted {
		t.Fatalf("same namespace, no EventPolicy API: %d %q, want 202 (allow-same-namespace)", code, body)
	}

	// Knative is upgraded: the API appears, with a policy admitting only the producer.
	if _, err := envtest.InstallCRDs(cfg, envtest.CRDInstallOptions{
		Paths: []string{filepath.Join("..", "test", "crds")}, ErrorIfPathMissing: true,
	}); err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(`
apiVersion: eventing.knative.dev/v1alpha1
kind: EventPolicy
metadata: {namespace: late, name: producer-only}
spec:
  from: [{sub: "system:serviceaccount:late:producer"}]
`), &u.Object); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the policy created", func() error {
		// The REST mapping of a CRD just established may lag a moment behind.
		return c.Create(ctx, u)
	})
	waitFor(t, 30*time.Second, "the bystander refused by the new policy", func() error {
		if code, body := send("bystander"); code != http.StatusForbidden {
			return fmt.Errorf("%d %q", code, body)
		}
		return nil
	})
	if code, body := send("producer"); code != http.StatusAccepted {
		t.Errorf("the producer the policy names: %d %q, want 202", code, body)
	}
	if err := policies.Ready(); err != nil {
		t.Errorf("the policy index is not ready after enforcing: %v", err)
	}
	if !policies.Installed() {
		t.Error("the EventPolicy API is not reported installed")
	}
}
