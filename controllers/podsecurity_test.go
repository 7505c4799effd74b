package controllers

import (
	"context"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kafkachannel/kafkachannel/environments/envtestbin"
)

// Every pod the manager asks for must pass the restricted Pod Security Standard. Admission
// enforces it on Pods (on Deployments it only warns), so the pod templates the manager writes
// are submitted as Pods, dry-run, to a namespace that enforces restricted.
func TestDataPlanePodsPassRestrictedPodSecurity(t *testing.T) {
	envtestbin.Skip(t, noEnv)
	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "psa-restricted",
		Labels: map[string]string{"pod-security.kubernetes.io/enforce": "restricted"}}}
	if err := k8s.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	cfg, err := ConfigFromEnv(func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	dispatcher, receiver := &appsv1.Deployment{}, &appsv1.Deployment{}
	mutateDispatcher(dispatcher, cfg, "team-a", "orders", 4, "hash")
	mutateReceiver(receiver, cfg, "hash")

	dryRun := func(name string, spec corev1.PodSpec) error {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns.Name}, Spec: spec}
		return k8s.Create(ctx, pod, client.DryRunAll)
	}
	// Admission must really be judging: a variant that may run as root is refused.
	bad := *dispatcher.Spec.Template.Spec.DeepCopy()
	bad.Containers[0].SecurityContext.RunAsNonRoot = ptr.To(false)
	bad.SecurityContext.RunAsNonRoot = nil
	if err := dryRun("root", bad); err == nil || !strings.Contains(err.Error(), "violates PodSecurity") {
		t.Fatalf("a pod that may run as root was admitted (%v): Pod Security admission is not enforcing", err)
	}
	for name, dep := range map[string]*appsv1.Deployment{"dispatcher": dispatcher, "receiver": receiver} {
		if err := dryRun(name, dep.Spec.Template.Spec); err != nil {
			t.Errorf("the %s pod the manager writes is refused: %v", name, err)
		}
	}
}
