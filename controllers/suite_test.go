package controllers

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/kafkachannel/kafkachannel/api/v1alpha1"
	"github.com/kafkachannel/kafkachannel/api/v1beta1"
	"github.com/kafkachannel/kafkachannel/environments/envtestbin"
)

// One apiserver for the package; every test gets its own namespaces and its own manager, so
// tests with different Kafka Secrets do not see each other's channels.
var (
	restCfg   *rest.Config
	k8s       client.Client
	testSchem = runtime.NewScheme()
	nsCounter atomic.Int64
)

// noEnv says why the envtest tests skip; empty when the control plane runs.
var noEnv string

func TestMain(m *testing.M) {
	flag.Parse()
	if _, noEnv = envtestbin.Find(); noEnv != "" {
		// Pure unit tests still run; the envtest ones skip themselves with the reason.
		fmt.Println("controllers:", noEnv)
		os.Exit(m.Run())
	}
	logf.SetLogger(logr.Discard())
	_ = clientgoscheme.AddToScheme(testSchem)
	_ = v1beta1.AddToScheme(testSchem)
	_ = v1alpha1.AddToScheme(testSchem)
	env := &envtest.Environment{
		// testdata/crd: a minimal Knative Subscription CRD for ResetOffsets that name one; test/crds:
		// a minimal EventPolicy CRD.
		CRDDirectoryPaths:     []string{filepath.Join("..", "config", "crd", "bases"), filepath.Join("testdata", "crd"), filepath.Join("..", "test", "crds")},
		ErrorIfCRDPathMissing: true,
	}
	var err error
	if restCfg, err = env.Start(); err != nil {
		fmt.Println("starting envtest:", err)
		os.Exit(1)
	}
	if k8s, err = client.New(restCfg, client.Options{Scheme: testSchem}); err != nil {
		fmt.Println("client:", err)
		os.Exit(1)
	}
	code := m.Run()
	_ = env.Stop()
	os.Exit(code)
}

// fixture is one test's world: an operator namespace with the Kafka Secret, a channel
// namespace, and a running manager.
type fixture struct {
	t    *testing.T
	ctx  context.Context
	opNS string
	chNS string
	cfg  Config
	logs *memLog
	// stop ends the running manager and waits for it; nil when none runs.
	stop func()
}

type fixtureOpts struct {
	secret map[string]string
	env    map[string]string
}

func newNamespace(t *testing.T, ctx context.Context, prefix string) string {
	t.Helper()
	name := fmt.Sprintf("%s-%d", prefix, nsCounter.Add(1))
	if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
		t.Fatalf("creating namespace %s: %v", name, err)
	}
	return name
}

func startFixture(t *testing.T, o fixtureOpts) *fixture {
	t.Helper()
	envtestbin.Skip(t, noEnv)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	f := &fixture{t: t, ctx: ctx}
	f.opNS = newNamespace(t, ctx, "op")
	f.chNS = newNamespace(t, ctx, "ch")

	env := map[string]string{
		"OPERATOR_NAMESPACE":   f.opNS,
		"DISPATCHER_REPLICAS":  "2",
		"TOPIC_DELETE_TIMEOUT": "20s",
		"DATAPLANE_LABELS":     "team=events",
	}
	for k, v := range o.env {
		env[k] = v
	}
	cfg, err := ConfigFromEnv(func(k string) string { return env[k] })
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	f.cfg = cfg
	if o.secret != nil {
		f.writeSecret(o.secret)
	}

	// The manager's goroutines may log after the test has returned, which testing forbids:
	// keep the log in memory and print it only when the test failed.
	f.logs = &memLog{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Log("manager log:\n" + f.logs.String())
		}
	})
	t.Cleanup(f.stopManager)
	f.startManager()
	return f
}

// startManager runs a fresh manager with both reconcilers over the fixture's namespaces; a
// test that stops the previous one first plays a manager restart.
func (f *fixture) startManager() {
	t := f.t
	t.Helper()
	mgr, err := ctrl.NewManager(restCfg, ctrl.Options{
		Scheme:     testSchem,
		Metrics:    metricsserver.Options{BindAddress: "0"},
		Cache:      CacheOptions(f.cfg, f.chNS),
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
		Logger:     f.logs.logger(),
	})
	if err != nil {
		t.Fatalf("manager: %v", err)
	}
	r := &KafkaChannelReconciler{
		Client:        mgr.GetClient(),
		APIReader:     mgr.GetAPIReader(),
		Recorder:      mgr.GetEventRecorder(FieldManager),
		Config:        f.cfg,
		RetryInterval: 500 * time.Millisecond,
	}
	if err := r.SetupWithManager(mgr); err != nil {
		t.Fatalf("setup: %v", err)
	}
	ro := &ResetOffsetReconciler{
		Client:       mgr.GetClient(),
		APIReader:    mgr.GetAPIReader(),
		Recorder:     mgr.GetEventRecorder(FieldManager),
		Config:       f.cfg,
		PollInterval: 200 * time.Millisecond,
	}
	if err := ro.SetupWithManager(mgr); err != nil {
		t.Fatalf("setup: %v", err)
	}
	ctx, cancel := context.WithCancel(f.ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := mgr.Start(ctx); err != nil {
			t.Errorf("manager stopped: %v", err)
		}
	}()
	f.stop = func() { cancel(); <-done }
}

// stopManager stops the running manager, as a crash or a rollout would, and waits until it
// has stopped reconciling.
func (f *fixture) stopManager() {
	if f.stop != nil {
		f.stop()
		f.stop = nil
	}
}

func (f *fixture) writeSecret(data map[string]string) {
	f.t.Helper()
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: f.opNS, Name: f.cfg.SecretName}}
	_, err := ctrlCreateOrUpdate(f.ctx, s, func() { s.StringData = data; s.Data = nil })
	if err != nil {
		f.t.Fatalf("writing the Kafka Secret: %v", err)
	}
}

func ctrlCreateOrUpdate(ctx context.Context, obj client.Object, mutate func()) (bool, error) {
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
		mutate()
		return true, k8s.Create(ctx, obj)
	}
	mutate()
	return false, k8s.Update(ctx, obj)
}

func (f *fixture) createChannel(name string, mutate func(*v1beta1.KafkaChannel)) *v1beta1.KafkaChannel {
	f.t.Helper()
	ch := &v1beta1.KafkaChannel{ObjectMeta: metav1.ObjectMeta{Namespace: f.chNS, Name: name}}
	if mutate != nil {
		mutate(ch)
	}
	if err := k8s.Create(f.ctx, ch); err != nil {
		f.t.Fatalf("creating channel %s: %v", name, err)
	}
	return ch
}

func (f *fixture) channel(name string) *v1beta1.KafkaChannel {
	f.t.Helper()
	ch := &v1beta1.KafkaChannel{}
	if err := k8s.Get(f.ctx, client.ObjectKey{Namespace: f.chNS, Name: name}, ch); err != nil {
		f.t.Fatalf("reading channel %s: %v", name, err)
	}
	return ch
}

// eventually polls cond until it returns "" (success) or the deadline passes; the last
// explanation is the failure message.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for {
		if last = cond(); last == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s: %s", timeout, what, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitCondition waits until the channel's condition has the status (and reason, if given).
func (f *fixture) waitCondition(name, condType string, status metav1.ConditionStatus, reason string) *metav1.Condition {
	f.t.Helper()
	var got *metav1.Condition
	eventually(f.t, 45*time.Second, fmt.Sprintf("%s %s=%s %s", name, condType, status, reason), func() string {
		ch := &v1beta1.KafkaChannel{}
		if err := k8s.Get(f.ctx, client.ObjectKey{Namespace: f.chNS, Name: name}, ch); err != nil {
			return err.Error()
		}
		got = meta.FindStatusCondition(ch.Status.Conditions, condType)
		if got == nil {
			return "condition absent"
		}
		if got.Status != status || (reason != "" && got.Reason != reason) {
			return fmt.Sprintf("%s %s: %s", got.Status, got.Reason, got.Message)
		}
		if got.ObservedGeneration != ch.Generation {
			return fmt.Sprintf("observedGeneration %d, generation %d", got.ObservedGeneration, ch.Generation)
		}
		return ""
	})
	return got
}

// markAvailable plays the Deployment controller, which envtest does not run.
func markAvailable(t *testing.T, ctx context.Context, ns, name string) {
	t.Helper()
	eventually(t, 30*time.Second, "Deployment "+ns+"/"+name+" marked available", func() string {
		dep := &appsv1.Deployment{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, dep); err != nil {
			return err.Error()
		}
		n := ptr.Deref(dep.Spec.Replicas, 1)
		dep.Status = appsv1.DeploymentStatus{
			ObservedGeneration: dep.Generation, Replicas: n, UpdatedReplicas: n, ReadyReplicas: n, AvailableReplicas: n,
			Conditions: []appsv1.DeploymentCondition{{Type: appsv1.DeploymentAvailable, Status: corev1.ConditionTrue,
				Reason: "MinimumReplicasAvailable", LastUpdateTime: metav1.Now(), LastTransitionTime: metav1.Now()}},
		}
		if err := k8s.Status().Update(ctx, dep); err != nil {
			return err.Error()
		}
		return ""
	})
}

// eventsFor lists the Events recorded about a channel, as "Type Reason: note".
func (f *fixture) eventsFor(name string) []string {
	list := &corev1.EventList{}
	if err := k8s.List(f.ctx, list, client.InNamespace(f.chNS)); err != nil {
		f.t.Fatalf("listing events: %v", err)
	}
	var out []string
	for _, e := range list.Items {
		if e.InvolvedObject.Name == name {
			out = append(out, e.Type+" "+e.Reason+": "+e.Message)
		}
	}
	return out
}

func (f *fixture) waitEvent(name, substr string) {
	f.t.Helper()
	eventually(f.t, 45*time.Second, "an Event containing "+substr, func() string {
		evs := f.eventsFor(name)
		for _, e := range evs {
			if strings.Contains(e, substr) {
				return ""
			}
		}
		return strings.Join(evs, " | ")
	})
}

// memLog is a logr sink that keeps lines in memory, safe to use from any goroutine at any time.
type memLog struct {
	mu    sync.Mutex
	lines []string
}

func (m *memLog) logger() logr.Logger {
	return funcr.New(func(prefix, args string) {
		m.mu.Lock()
		defer m.mu.Unlock()
		m.lines = append(m.lines, time.Now().Format("15:04:05.000 ")+prefix+" "+args)
	}, funcr.Options{Verbosity: 1})
}

func (m *memLog) String() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return strings.Join(m.lines, "\n")
}
