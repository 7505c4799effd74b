// Package knative is the Knative peer run: Knative Eventing's own controller binary, built from
// the Go module proxy by hack/build-knative.sh, runs against the local stack
// (environments/localstack) and drives a KafkaChannel through Knative Subscriptions. Knative's CRDs
// and default ConfigMaps are read from the module cache copy of knative.dev/eventing; nothing of
// Knative is kept in this repository. Runs only under make test-knative, which builds the
// controller first; skipped otherwise.
package knative

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/yaml"

	v1beta1 "github.com/kafkachannel/kafkachannel/api/v1beta1"
	"github.com/kafkachannel/kafkachannel/environments/apachekafka"
	"github.com/kafkachannel/kafkachannel/environments/certs"
	"github.com/kafkachannel/kafkachannel/environments/localstack"
	"github.com/kafkachannel/kafkachannel/environments/poll"
	"github.com/kafkachannel/kafkachannel/environments/proc"
	"github.com/kafkachannel/kafkachannel/environments/testlog"
	"github.com/kafkachannel/kafkachannel/internal/features"
	"github.com/kafkachannel/kafkachannel/internal/naming"
	"github.com/kafkachannel/kafkachannel/internal/oidc"
)

// defaultVersion is the Knative Eventing release the peer run is pinned to (KNATIVE_VERSION
// overrides it, as for hack/build-knative.sh).
const defaultVersion = "v0.47.0"

const ns = "default"

var subscriptionGVK = schema.GroupVersionKind{Group: "messaging.knative.dev", Version: "v1", Kind: "Subscription"}

// knativeBuild finds the controller binary and the module source hack/build-knative.sh left.
func knativeBuild(t *testing.T) (controller, source string) {
	t.Helper()
	version := os.Getenv("KNATIVE_VERSION")
	if version == "" {
		version = defaultVersion
	}
	dir := filepath.Join(apachekafka.CacheDir(), "knative", version)
	controller = filepath.Join(dir, "controller")
	if _, err := os.Stat(controller); err != nil {
		t.Skipf("Knative Eventing's controller %s is not built: run `make knative` (hack/build-knative.sh)", controller)
	}
	b, err := os.ReadFile(filepath.Join(dir, "source-dir"))
	if err != nil {
		t.Skipf("%s: run `make knative` again to record where knative.dev/eventing@%s is", err, version)
	}
	source = strings.TrimSpace(string(b))
	if _, err := os.Stat(filepath.Join(source, "config", "core", "resources")); err != nil {
		t.Skipf("knative.dev/eventing@%s is no longer in the module cache (%v): run `make knative`", version, err)
	}
	return controller, source
}

func buildBinaries(t *testing.T) string {
	t.Helper()
	repo, err := localstack.FindRepo()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, pkg := range map[string]string{"manager": ".", "dispatcher": "./cmd/dispatcher", "receiver": "./cmd/receiver"} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, name), pkg)
		cmd.Dir = repo
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, out)
		}
	}
	return dir
}

func startStack(t *testing.T) *localstack.Stack {
	t.Helper()
	assets := localstack.EnvtestAssets()
	if _, err := os.Stat(filepath.Join(assets, "kube-apiserver")); err != nil {
		t.Skipf("kube-apiserver is not in %s: run `make envtest` or set KUBEBUILDER_ASSETS", assets)
	}
	bin := buildBinaries(t)
	log := testlog.New(t)
	ctrllog.SetLogger(log)
	s, err := localstack.Start(context.Background(), localstack.Options{Dir: t.TempDir(), BinDir: bin, Log: log})
	if err != nil {
		t.Fatalf("starting the local stack: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("manager log:\n%s", proc.Tail(s.ManagerLog(), 40))
			for _, p := range s.Node.Pods() {
				t.Logf("pod %s ready=%v restarts=%d failure=%q log:\n%s", p.Name, p.Ready, p.Restarts, p.Failure, proc.Tail(p.LogFile, 30))
			}
		}
		s.Stop()
	})
	return s
}

// yamlDocs reads every YAML document of the files matching pattern.
func yamlDocs(t *testing.T, pattern string) []*unstructured.Unstructured {
	t.Helper()
	files, err := filepath.Glob(pattern)
	if err != nil || len(files) == 0 {
		t.Fatalf("no files match %s (%v)", pattern, err)
	}
	var out []*unstructured.Unstructured
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, doc := range bytes.Split(b, []byte("\n---")) {
			u := &unstructured.Unstructured{}
			if err := yaml.Unmarshal(doc, &u.Object); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if len(u.Object) > 0 {
				out = append(out, u)
			}
		}
	}
	return out
}

// installKnative applies Knative's CRDs and its default ConfigMaps (those the stack already has,
// like config-logging, stay as they are) and waits for the CRDs to be served.
func installKnative(t *testing.T, s *localstack.Stack, source string) {
	t.Helper()
	ctx := context.Background()
	var crds []string
	for _, u := range yamlDocs(t, filepath.Join(source, "config", "core", "resources", "*.yaml")) {
		if err := s.Client.Create(ctx, u); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("creating %s %s: %v", u.GetKind(), u.GetName(), err)
		}
		crds = append(crds, u.GetName())
	}
	for _, u := range yamlDocs(t, filepath.Join(source, "config", "core", "configmaps", "*.yaml")) {
		u.SetNamespace(s.Opts.OperatorNamespace)
		if err := s.Client.Create(ctx, u); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("creating ConfigMap %s: %v", u.GetName(), err)
		}
	}
	poll.Eventually(t, time.Minute, "Knative's CRDs established", func() error {
		for _, name := range crds {
			crd := &unstructured.Unstructured{}
			crd.SetGroupVersionKind(schema.GroupVersionKind{Group: "apiextensions.k8s.io", Version: "v1", Kind: "CustomResourceDefinition"})
			if err := s.Client.Get(ctx, client.ObjectKey{Name: name}, crd); err != nil {
				return err
			}
			conds, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
			established := false
			for _, c := range conds {
				m, _ := c.(map[string]any)
				established = established || (m["type"] == "Established" && m["status"] == "True")
			}
			if !established {
				return fmt.Errorf("%s not established", name)
			}
		}
		return nil
	})
}

// controllerEnv is the environment Knative's own controller Deployment
// (config/core/deployments/controller.yaml) gives the controller: plain values as they are,
// the pod's namespace and name, and a placeholder for each image read from a ConfigMap that is
// not part of the core install (the images of sources and sinks this run never starts).
func controllerEnv(t *testing.T, s *localstack.Stack, source string) []string {
	t.Helper()
	var env []string
	for _, u := range yamlDocs(t, filepath.Join(source, "config", "core", "deployments", "controller.yaml")) {
		if u.GetKind() != "Deployment" {
			continue
		}
		containers, _, _ := unstructured.NestedSlice(u.Object, "spec", "template", "spec", "containers")
		for _, c := range containers {
			vars, _, _ := unstructured.NestedSlice(c.(map[string]any), "env")
			for _, v := range vars {
				m := v.(map[string]any)
				name, _ := m["name"].(string)
				value, hasValue := m["value"].(string)
				field, _, _ := unstructured.NestedString(m, "valueFrom", "fieldRef", "fieldPath")
				switch {
				case hasValue:
				case field == "metadata.namespace":
					value = s.Opts.OperatorNamespace
				case field == "metadata.name":
					value = "eventing-controller-local"
				default:
					value = "localstack/not-run-" + strings.ToLower(name)
				}
				env = append(env, name+"="+value)
			}
		}
	}
	if len(env) == 0 {
		t.Fatalf("no controller Deployment with env in %s", filepath.Join(source, "config", "core", "deployments"))
	}
	return env
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startController runs Knative's controller against the stack, as the admin the stack's
// kubeconfig names (Knative's RBAC is not installed), and waits for its readiness probe, which
// knative.dev/pkg serves only once every informer has synced.
func startController(t *testing.T, s *localstack.Stack, bin, source string) string {
	t.Helper()
	logFile := filepath.Join(t.TempDir(), "knative-controller.log")
	f, err := os.Create(logFile)
	if err != nil {
		t.Fatal(err)
	}
	probes := freePort(t)
	cmd := exec.Command(bin, "--disable-ha")
	cmd.Env = append(controllerEnv(t, s, source),
		"PATH="+os.Getenv("PATH"), "HOME="+os.Getenv("HOME"),
		"KUBECONFIG="+s.Kubeconfig,
		fmt.Sprintf("PROFILING_PORT=%d", freePort(t)),
		fmt.Sprintf("KNATIVE_PROBES_PORT=%d", probes),
	)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = proc.Attrs()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); f.Close() }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
		if t.Failed() {
			t.Logf("Knative controller log:\n%s", proc.Tail(logFile, 60))
		}
	})
	url := fmt.Sprintf("http://127.0.0.1:%d/readiness", probes)
	poll.Eventually(t, 2*time.Minute, "Knative's controller ready", func() error {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("Knative's controller exited: %v\n%s", err, proc.Tail(logFile, 40))
		default:
		}
		resp, err := http.Get(url)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %d", url, resp.StatusCode)
		}
		return nil
	})
	return logFile
}

// sink records the CloudEvent ids it receives, with the subject of the bearer token each came
// with ("" without one). With verifier set it serves https and refuses requests without a
// valid token for audience.
type sink struct {
	srv   *httptest.Server
	caPEM string
	mu    sync.Mutex
	got   map[string]string
	bad   []string
}

func newSink(t *testing.T, verifier *oidc.Verifier, audience string) *sink {
	t.Helper()
	k := &sink{got: map[string]string{}}
	k.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		subject := ""
		if verifier != nil {
			tok, err := oidc.BearerToken(r.Header)
			var id oidc.Identity
			if err == nil {
				id, err = verifier.Verify(r.Context(), tok, audience)
			}
			if err != nil {
				k.mu.Lock()
				k.bad = append(k.bad, err.Error())
				k.mu.Unlock()
				http.Error(w, err.Error(), http.StatusUnauthorized)
				return
			}
			subject = id.Subject
		} else if r.Header.Get("Authorization") != "" {
			subject = "unexpected Authorization header"
		}
		k.mu.Lock()
		k.got[r.Header.Get("Ce-Id")] = subject
		k.mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	}))
	if verifier == nil {
		k.srv.Start()
	} else {
		ca, err := certs.NewCA("knative peer sink CA")
		if err != nil {
			t.Fatal(err)
		}
		certPEM, keyPEM, err := ca.Issue("127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		k.caPEM = string(ca.CertPEM)
		k.srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
		k.srv.StartTLS()
	}
	t.Cleanup(k.srv.Close)
	return k
}

func (k *sink) waitFor(t *testing.T, id string) string {
	t.Helper()
	var subject string
	poll.Eventually(t, time.Minute, "the subscriber receives event "+id, func() error {
		k.mu.Lock()
		defer k.mu.Unlock()
		s, ok := k.got[id]
		if !ok {
			return fmt.Errorf("not received; refused requests: %v", k.bad)
		}
		subject = s
		return nil
	})
	return subject
}

func (k *sink) refused() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]string(nil), k.bad...)
}

// subscribe creates a Knative Subscription of the KafkaChannel channel to subscriber.
func subscribe(t *testing.T, s *localstack.Stack, name, channel string, subscriber map[string]any) *unstructured.Unstructured {
	t.Helper()
	sub := &unstructured.Unstructured{Object: map[string]any{
		"metadata": map[string]any{"name": name, "namespace": ns},
		"spec": map[string]any{
			"channel":    map[string]any{"apiVersion": v1beta1.GroupVersion.String(), "kind": "KafkaChannel", "name": channel},
			"subscriber": subscriber,
		},
	}}
	sub.SetGroupVersionKind(subscriptionGVK)
	if err := s.Client.Create(context.Background(), sub); err != nil {
		t.Fatal(err)
	}
	return sub
}

// waitReady waits for the Subscription's Ready condition, written by Knative's controller only
// once the channel's status.subscribers reports the subscription ready at its generation.
func waitReady(t *testing.T, s *localstack.Stack, sub *unstructured.Unstructured) {
	t.Helper()
	poll.Eventually(t, 2*time.Minute, "Subscription "+sub.GetName()+" Ready", func() error {
		if err := s.Client.Get(context.Background(), client.ObjectKeyFromObject(sub), sub); err != nil {
			return err
		}
		conds, _, _ := unstructured.NestedSlice(sub.Object, "status", "conditions")
		var seen []string
		for _, c := range conds {
			m, _ := c.(map[string]any)
			seen = append(seen, fmt.Sprintf("%v=%v(%v: %v)", m["type"], m["status"], m["reason"], m["message"]))
			if m["type"] == "Ready" && m["status"] == "True" {
				return nil
			}
		}
		return fmt.Errorf("conditions %v", seen)
	})
}

// channelSubscriber is the channel's spec.subscribers entry Knative wrote for sub.
func channelSubscriber(t *testing.T, s *localstack.Stack, channel string, sub *unstructured.Unstructured) v1beta1.SubscriberSpec {
	t.Helper()
	kc := &v1beta1.KafkaChannel{}
	if err := s.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: channel}, kc); err != nil {
		t.Fatal(err)
	}
	for _, e := range kc.Spec.Subscribers {
		if e.UID == string(sub.GetUID()) {
			if e.Generation != sub.GetGeneration() {
				t.Errorf("spec.subscribers entry of %s at generation %d, the Subscription is at %d", sub.GetName(), e.Generation, sub.GetGeneration())
			}
			return e
		}
	}
	t.Fatalf("spec.subscribers %+v has no entry for Subscription %s (uid %s)", kc.Spec.Subscribers, sub.GetName(), sub.GetUID())
	return v1beta1.SubscriberSpec{}
}

// post sends one event to the channel, retrying until the receiver accepts it (a replica of
// the shared receiver may still be starting when the channel first turns Ready).
func post(t *testing.T, s *localstack.Stack, channel, id, token string) {
	t.Helper()
	poll.Eventually(t, time.Minute, "the receiver accepts event "+id, func() error {
		req, err := http.NewRequest(http.MethodPost, s.ReceiverURL+naming.ChannelPath(ns, channel), strings.NewReader(`{"peer":"knative"}`))
		if err != nil {
			return err
		}
		for k, v := range map[string]string{"Ce-Specversion": "1.0", "Ce-Id": id, "Ce-Source": "/knative-peer", "Ce-Type": "dev.kafkachannel.knative", "Content-Type": "application/json"} {
			req.Header.Set(k, v)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			b, _ := io.ReadAll(resp.Body)
			return fmt.Errorf("%d %s", resp.StatusCode, b)
		}
		return nil
	})
}

// TestKnativeSubscriptionDrivesKafkaChannel: Knative's Subscription controller writes
// spec.subscribers into a KafkaChannel and reads our status.subscribers back, events reach the
// subscriber; then, with authentication-oidc enabled in the config-features both controllers
// read, Knative creates the subscription's OIDC service account, names it in
// spec.subscribers[].auth, and our dispatcher delivers with a token of that account.
func TestKnativeSubscriptionDrivesKafkaChannel(t *testing.T) {
	if os.Getenv("KAFKACHANNEL_KNATIVE") == "" {
		t.Skip("the Knative peer run is not part of make test: run make test-knative (it sets KAFKACHANNEL_KNATIVE=1)")
	}
	controller, source := knativeBuild(t)
	s := startStack(t)
	ctx := context.Background()
	installKnative(t, s, source)
	startController(t, s, controller, source)

	const channel = "peer"
	kc := &v1beta1.KafkaChannel{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: channel}, Spec: v1beta1.KafkaChannelSpec{NumPartitions: 1}}
	if err := s.Client.Create(ctx, kc); err != nil {
		t.Fatal(err)
	}

	plain := newSink(t, nil, "")
	first := subscribe(t, s, "plain", channel, map[string]any{"uri": plain.srv.URL + "/"})
	t.Run("a Subscription becomes Ready and its subscriber gets events", func(t *testing.T) {
		waitReady(t, s, first)
		e := channelSubscriber(t, s, channel, first)
		if e.SubscriberURI == nil || *e.SubscriberURI != plain.srv.URL+"/" {
			t.Errorf("spec.subscribers[].subscriberUri = %v, want %s", e.SubscriberURI, plain.srv.URL+"/")
		}
		post(t, s, channel, "plain-1", "")
		if subject := plain.waitFor(t, "plain-1"); subject != "" {
			t.Errorf("delivery without OIDC carried a token: %s", subject)
		}
	})
	if t.Failed() {
		return
	}

	t.Run("with authentication-oidc enabled the subscriber gets a token of Knative's OIDC service account", func(t *testing.T) {
		cm := &corev1.ConfigMap{}
		if err := s.Client.Get(ctx, client.ObjectKey{Namespace: s.Opts.OperatorNamespace, Name: features.ConfigMap}, cm); err != nil {
			t.Fatal(err)
		}
		if cm.Data == nil {
			cm.Data = map[string]string{}
		}
		cm.Data["authentication-oidc"] = "enabled"
		if err := s.Client.Update(ctx, cm); err != nil {
			t.Fatal(err)
		}
		// Our channel shows an audience once our manager has read the change.
		var audience string
		poll.Eventually(t, 2*time.Minute, "the channel's address has an audience", func() error {
			if err := s.Client.Get(ctx, client.ObjectKeyFromObject(kc), kc); err != nil {
				return err
			}
			if kc.Status.Address == nil || kc.Status.Address.Audience == nil {
				return fmt.Errorf("status.address %+v", kc.Status.Address)
			}
			audience = *kc.Status.Address.Audience
			return nil
		})

		keys, err := oidc.NewAPIServerKeys(s.Config)
		if err != nil {
			t.Fatal(err)
		}
		const subscriberAudience = "knative-peer-subscriber"
		secure := newSink(t, &oidc.Verifier{Source: keys}, subscriberAudience)
		second := subscribe(t, s, "oidc", channel, map[string]any{
			"uri": secure.srv.URL + "/", "CACerts": secure.caPEM, "audience": subscriberAudience,
		})
		waitReady(t, s, second)
		account, _, _ := unstructured.NestedString(second.Object, "status", "auth", "serviceAccountName")
		if account == "" {
			t.Fatalf("Knative named no OIDC service account in status.auth: %v", second.Object["status"])
		}
		cs, err := kubernetes.NewForConfig(s.Config)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cs.CoreV1().ServiceAccounts(ns).Get(ctx, account, metav1.GetOptions{}); err != nil {
			t.Fatalf("the OIDC service account Knative named: %v", err)
		}
		e := channelSubscriber(t, s, channel, second)
		if e.Auth == nil || e.Auth.ServiceAccountName == nil || *e.Auth.ServiceAccountName != account {
			t.Errorf("spec.subscribers[].auth = %+v, want serviceAccountName %s", e.Auth, account)
		}
		if e.SubscriberAudience == nil || *e.SubscriberAudience != subscriberAudience {
			t.Errorf("spec.subscribers[].subscriberAudience = %v, want %s", e.SubscriberAudience, subscriberAudience)
		}

		// A sender of the channel's namespace, admitted by the default authorization mode.
		if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "producer"}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
		tok, err := (&oidc.TokenProvider{Client: cs}).Token(ctx, ns, "producer", audience)
		if err != nil {
			t.Fatal(err)
		}
		// The first event after the Subscription turned Ready already carries the token: the
		// dispatcher follows spec.subscribers[].auth, not its own (possibly lagging) mounted copy
		// of config-features.
		const id = "oidc-1"
		post(t, s, channel, id, tok)
		want := "system:serviceaccount:" + ns + ":" + account
		if subject := secure.waitFor(t, id); subject != want {
			t.Errorf("the OIDC subscriber got a token of %q, want %q", subject, want)
		}
		if bad := secure.refused(); len(bad) > 0 {
			t.Errorf("the OIDC subscriber refused deliveries: %v", bad)
		}
		if subject := plain.waitFor(t, id); subject != "" {
			// Knative names an OIDC account for every Subscription once OIDC is on, but the
			// plain subscriber has no audience, so it must get no token.
			t.Errorf("the subscriber without an audience got a token: %s", subject)
		}
	})

	if t.Failed() {
		return
	}
	t.Run("deleting a Subscription removes it from the channel", func(t *testing.T) {
		if err := s.Client.Delete(ctx, first); err != nil {
			t.Fatal(err)
		}
		poll.Eventually(t, time.Minute, "Knative's finalizer removes the subscriber and the Subscription is gone", func() error {
			if err := s.Client.Get(ctx, client.ObjectKeyFromObject(kc), kc); err != nil {
				return err
			}
			for _, e := range kc.Spec.Subscribers {
				if e.UID == string(first.GetUID()) {
					return fmt.Errorf("spec.subscribers still lists %s", first.GetName())
				}
			}
			for _, st := range kc.Status.Subscribers {
				if st.UID == string(first.GetUID()) {
					return fmt.Errorf("status.subscribers still lists %s", first.GetName())
				}
			}
			err := s.Client.Get(ctx, client.ObjectKeyFromObject(first), first.DeepCopy())
			if !apierrors.IsNotFound(err) {
				return fmt.Errorf("the Subscription still exists (%v)", err)
			}
			return nil
		})
	})
}
