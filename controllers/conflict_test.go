package controllers

import (
	"context"
	"fmt"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kafkachannel/kafkachannel/api/v1beta1"
	"github.com/kafkachannel/kafkachannel/environments/envtestbin"
	"github.com/kafkachannel/kafkachannel/internal/kafkaconn"
	"github.com/kafkachannel/kafkachannel/internal/naming"
)

// staleClient answers the first Get of one object with an older copy, as the manager's
// informer cache does right after another writer (the Deployment controller writing status)
// changed the object.
type staleClient struct {
	client.Client
	key   client.ObjectKey
	stale *appsv1.Deployment
}

func (c *staleClient) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if d, ok := obj.(*appsv1.Deployment); ok && key == c.key && c.stale != nil {
		c.stale.DeepCopyInto(d)
		c.stale = nil
		return nil
	}
	return c.Client.Get(ctx, key, obj, opts...)
}

// On a real cluster the Deployment controller writes a Deployment's status right after the
// manager changed it, so the manager's next read from its cache can be stale and its update
// conflict. That is no failure of the channel: the data-plane Deployments must still be applied,
// without a DeploymentFailed condition or a "Reconciler error" in the log (seen on the real
// cluster of make test-cluster; the local stack has no Deployment controller).
func TestDataPlaneDeploymentsSurviveAStaleRead(t *testing.T) {
	envtestbin.Skip(t, noEnv)
	ctx := context.Background()
	opNS := fmt.Sprintf("conflict-op-%d", nsCounter.Add(1))
	if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: opNS}}); err != nil {
		t.Fatal(err)
	}
	cfg, err := ConfigFromEnv(func(k string) string {
		if k == "OPERATOR_NAMESPACE" {
			return opNS
		}
		return ""
	})
	if err != nil {
		t.Fatal(err)
	}
	ch := &v1beta1.KafkaChannel{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "orders"}}
	ch.Spec.NumPartitions = 2
	for _, tc := range []struct {
		name, condition string
		dep             *appsv1.Deployment
		reconcile       func(r *KafkaChannelReconciler, s *scope) error
	}{
		{"receiver", v1beta1.ConditionReceiverReady, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: opNS, Name: naming.ReceiverName}},
			func(r *KafkaChannelReconciler, s *scope) error { return r.reconcileReceiver(ctx, s) }},
		{"dispatcher", v1beta1.ConditionDispatcherReady, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: opNS, Name: naming.DispatcherName(ch.Namespace, ch.Name)}},
			func(r *KafkaChannelReconciler, s *scope) error { return r.reconcileDispatcher(ctx, s) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "receiver" {
				mutateReceiver(tc.dep, cfg, "old-hash")
			} else {
				mutateDispatcher(tc.dep, cfg, ch.Namespace, ch.Name, 2, "old-hash")
			}
			if err := k8s.Create(ctx, tc.dep); err != nil {
				t.Fatal(err)
			}
			stale := tc.dep.DeepCopy()
			// Another writer changes the Deployment: its status, as the Deployment controller does.
			tc.dep.Status.ObservedGeneration = tc.dep.Generation
			if err := k8s.Status().Update(ctx, tc.dep); err != nil {
				t.Fatal(err)
			}
			r := &KafkaChannelReconciler{Client: &staleClient{Client: k8s, key: client.ObjectKeyFromObject(stale), stale: stale}, Config: cfg}
			s := &scope{ch: ch.DeepCopy(), conn: &kafkaconn.Config{}, secretHash: "new-hash"}
			if err := tc.reconcile(r, s); err != nil {
				t.Fatalf("a stale read failed the reconcile: %v", err)
			}
			if c := meta.FindStatusCondition(s.ch.Status.Conditions, tc.condition); c == nil || c.Reason == "DeploymentFailed" {
				t.Errorf("%s after a stale read: %+v", tc.condition, c)
			}
			got := &appsv1.Deployment{}
			if err := k8s.Get(ctx, client.ObjectKeyFromObject(stale), got); err != nil {
				t.Fatal(err)
			}
			if h, want := got.Spec.Template.Annotations[ConfigHashAnnotation], configHash("new-hash", dataPlaneOf(cfg, tc.name), cfg); h != want {
				t.Errorf("the %s Deployment was not updated: config hash %q, want %q", tc.name, h, want)
			}
		})
	}
}

func dataPlaneOf(c Config, component string) DataPlane {
	if component == "receiver" {
		return c.Receiver
	}
	return c.Dispatcher
}
