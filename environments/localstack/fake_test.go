package localstack

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/kafkachannel/kafkachannel/environments/envtestbin"
	"github.com/kafkachannel/kafkachannel/environments/poll"
	"github.com/kafkachannel/kafkachannel/environments/testlog"
	"github.com/kafkachannel/kafkachannel/internal/naming"
)

// TestNodeFakeComponents: a Deployment of a faked component becomes Available with every
// replica counted, although BinDir holds no binary at all, and scales like a real one.
func TestNodeFakeComponents(t *testing.T) {
	assets := envtestbin.Require(t)
	env := &envtest.Environment{BinaryAssetsDirectory: assets}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("starting envtest: %v", err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	c, err := client.New(cfg, client.Options{Scheme: Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: testNS}}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	nodeCtx, stop := context.WithCancel(ctx)
	// An empty BinDir: a real replica could not start, so Ready can only come from the fake.
	n := &Node{Config: cfg, Namespace: testNS, BinDir: t.TempDir(), Dir: dir, Kubeconfig: "/nonexistent/kubeconfig",
		PodsFile: filepath.Join(dir, "pods"), Log: testlog.New(t), FakeComponents: []string{naming.ComponentDispatch}}
	if err := n.Start(nodeCtx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stop(); n.Wait() })

	d := fakeDeployment("faked", 3)
	d.Labels[naming.LabelComponent] = naming.ComponentDispatch
	d.Spec.MinReadySeconds = 1
	if err := c.Create(ctx, d); err != nil {
		t.Fatal(err)
	}
	real := fakeDeployment("real", 1)
	if err := c.Create(ctx, real); err != nil {
		t.Fatal(err)
	}

	want := func(replicas int32) {
		t.Helper()
		poll.Eventually(t, 30*time.Second, fmt.Sprintf("faked Deployment Available with %d replicas", replicas), func() error {
			got := &appsv1.Deployment{}
			if err := c.Get(ctx, key(testNS, "faked"), got); err != nil {
				return err
			}
			s := got.Status
			if s.ObservedGeneration != got.Generation || s.Replicas != replicas || s.UpdatedReplicas != replicas ||
				s.ReadyReplicas != replicas || s.AvailableReplicas != replicas || s.UnavailableReplicas != 0 {
				return fmt.Errorf("status %+v", s)
			}
			conds := map[appsv1.DeploymentConditionType]appsv1.DeploymentCondition{}
			for _, cond := range s.Conditions {
				conds[cond.Type] = cond
			}
			if a := conds[appsv1.DeploymentAvailable]; a.Status != corev1.ConditionTrue {
				return fmt.Errorf("Available %+v", a)
			}
			if p := conds[appsv1.DeploymentProgressing]; p.Status != corev1.ConditionTrue || p.Reason != "NewReplicaSetAvailable" {
				return fmt.Errorf("Progressing %+v", p)
			}
			return nil
		})
	}
	want(3)
	var fakes int
	for _, p := range n.Pods() {
		switch p.Deployment {
		case "faked":
			fakes++
			if !p.Fake || !p.Ready || p.PID != 0 || len(p.Ports) != 0 {
				t.Errorf("faked pod %s: %+v, want Fake and Ready with no process and no ports", p.Name, p)
			}
		case "real":
			if p.Fake || p.Ready {
				t.Errorf("pod %s of an unfaked component: %+v, want a real replica that cannot start", p.Name, p)
			}
		}
	}
	if fakes != 3 {
		t.Errorf("%d faked pods, want 3", fakes)
	}

	// A new template rolls, and scaling down is honoured, as for real replicas.
	got := &appsv1.Deployment{}
	if err := c.Get(ctx, key(testNS, "faked"), got); err != nil {
		t.Fatal(err)
	}
	orig := got.DeepCopy()
	got.Spec.Replicas = ptr(int32(2))
	got.Spec.Template.Annotations = map[string]string{"rolled": "yes"}
	if err := c.Patch(ctx, got, client.MergeFrom(orig)); err != nil {
		t.Fatal(err)
	}
	want(2)
	for _, p := range n.Pods() {
		if p.Deployment == "faked" && p.TemplateHash != TemplateHash(&got.Spec.Template) {
			t.Errorf("pod %s still runs the old template", p.Name)
		}
	}
}
