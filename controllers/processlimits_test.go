package controllers

import (
	"context"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kafkachannel/kafkachannel/environments/envtestbin"
	"github.com/kafkachannel/kafkachannel/internal/memlimit"
)

// Every data-plane container learns its own memory limit through the downward API, so the
// binary can keep its heap below it, and has a limit to learn: without one the downward API
// hands over the node's memory.
func TestDataPlanePodsKnowTheirMemoryLimit(t *testing.T) {
	cfg, err := ConfigFromEnv(func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	dispatcher, receiver := &appsv1.Deployment{}, &appsv1.Deployment{}
	mutateDispatcher(dispatcher, cfg, "team-a", "orders", 4, "hash")
	mutateReceiver(receiver, cfg, "hash")
	for name, dep := range map[string]*appsv1.Deployment{"dispatcher": dispatcher, "receiver": receiver} {
		t.Run(name, func(t *testing.T) {
			c := dep.Spec.Template.Spec.Containers[0]
			if l := c.Resources.Limits.Memory(); l.IsZero() {
				t.Errorf("the %s container has no memory limit", name)
			}
			var ref *corev1.ResourceFieldSelector
			for _, e := range c.Env {
				if e.Name == memlimit.Env && e.ValueFrom != nil {
					ref = e.ValueFrom.ResourceFieldRef
				}
			}
			switch {
			case ref == nil:
				t.Fatalf("the %s container has no %s from the downward API; env: %v", name, memlimit.Env, c.Env)
			case ref.Resource != "limits.memory" || ref.ContainerName != c.Name:
				t.Errorf("%s comes from %s of container %q, want limits.memory of %q", memlimit.Env, ref.Resource, ref.ContainerName, c.Name)
			case !ref.Divisor.IsZero() && ref.Divisor.Cmp(resource.MustParse("1")) != 0:
				t.Errorf("%s has divisor %s; the binary reads bytes", memlimit.Env, ref.Divisor.String())
			}
		})
	}
}

// The API server judges the resource a resourceFieldRef names (one it can expose), which the
// unit test above cannot: the pods are submitted, dry-run. (It does not check the container
// name; the unit test does.)
func TestDataPlaneMemoryLimitRefIsValid(t *testing.T) {
	envtestbin.Skip(t, noEnv)
	ctx := context.Background()
	cfg, err := ConfigFromEnv(func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	dispatcher, receiver := &appsv1.Deployment{}, &appsv1.Deployment{}
	mutateDispatcher(dispatcher, cfg, "team-a", "orders", 4, "hash")
	mutateReceiver(receiver, cfg, "hash")
	for name, dep := range map[string]*appsv1.Deployment{"dispatcher": dispatcher, "receiver": receiver} {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name + "-limits", Namespace: "default"}, Spec: dep.Spec.Template.Spec}
		if err := k8s.Create(ctx, pod, client.DryRunAll); err != nil {
			t.Errorf("the %s pod is refused: %v", name, err)
		}
	}
}
