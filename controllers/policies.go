package controllers

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/kafkachannel/kafkachannel/api/v1beta1"
	"github.com/kafkachannel/kafkachannel/internal/eventpolicy"
)

// +kubebuilder:rbac:groups=eventing.knative.dev,resources=eventpolicies,verbs=get;list;watch

// ConditionEventPoliciesReady is False while an EventPolicy that applies to the channel cannot
// be evaluated as written (a CESQL filter) and so admits no event; it is absent otherwise. It
// does not make the channel un-Ready: the other policies still admit their senders.
const ConditionEventPoliciesReady = "EventPoliciesReady"

// reconcilePolicies lists in status.policies the EventPolicies that apply to the channel, while
// authentication-oidc is enabled (without it nothing is authorized, so none apply). A cluster
// without Knative's EventPolicy API has none.
func (r *KafkaChannelReconciler) reconcilePolicies(ctx context.Context, s *scope) error {
	ch := s.ch
	meta.RemoveStatusCondition(&ch.Status.Conditions, ConditionEventPoliciesReady)
	if !s.features.OIDC {
		ch.Status.Policies = nil
		return nil
	}
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(eventpolicy.GVK.GroupVersion().WithKind(eventpolicy.GVK.Kind + "List"))
	// Watched policies are read from their informer: a Secret or ConfigMap change reconciles
	// every channel, which would otherwise be a LIST per channel.
	reader := r.policyCache
	if reader == nil {
		reader = r.reader()
	}
	if err := reader.List(ctx, list, client.InNamespace(ch.Namespace)); err != nil {
		if meta.IsNoMatchError(err) {
			ch.Status.Policies = nil
			return nil
		}
		return fmt.Errorf("listing the EventPolicies of namespace %s: %w", ch.Namespace, err)
	}
	var refs []v1beta1.AppliedEventPolicyRef
	var unsupported []string
	for i := range list.Items {
		p, err := eventpolicy.FromUnstructured(&list.Items[i])
		if err != nil {
			logf.FromContext(ctx).Info("ignoring an EventPolicy that cannot be read", "error", err.Error())
			continue
		}
		if p.AppliesTo(ch.Namespace, ch.Name, ch.Labels) {
			refs = append(refs, v1beta1.AppliedEventPolicyRef{APIVersion: eventpolicy.GVK.GroupVersion().String(), Name: p.Name})
			if why := p.Unsupported(); why != "" {
				unsupported = append(unsupported, p.Name+": "+why)
			}
		}
	}
	sort.Slice(refs, func(i, j int) bool { return refs[i].Name < refs[j].Name })
	ch.Status.Policies = refs
	if len(unsupported) > 0 {
		sort.Strings(unsupported)
		s.set(ConditionEventPoliciesReady, metav1.ConditionFalse, "UnsupportedEventPolicy", "%s", strings.Join(unsupported, "; "))
	}
	if r.policyCache == nil {
		// The API appeared after the manager started, so nothing tells it about changes:
		// look again on the retry interval until a restart sets up the watch.
		s.retry = true
	}
	return nil
}

// watchPolicies re-reconciles the channels of a namespace when one of its EventPolicies
// changes. It is only set up when the cluster serves the EventPolicy API at start.
func (r *KafkaChannelReconciler) watchPolicies(mgr ctrl.Manager, b *ctrl.Builder) *ctrl.Builder {
	if _, err := mgr.GetRESTMapper().RESTMapping(eventpolicy.GVK.GroupKind(), eventpolicy.GVK.Version); err != nil {
		mgr.GetLogger().Info("EventPolicies are not installed yet: with authentication-oidc, channels look for them on the retry interval (a restart of the manager watches them instead)")
		return b
	}
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(eventpolicy.GVK)
	r.policyCache = mgr.GetCache()
	return b.Watches(u, handler.EnqueueRequestsFromMapFunc(r.channelsIn))
}

func (r *KafkaChannelReconciler) channelsIn(ctx context.Context, o client.Object) []reconcile.Request {
	return r.channelRequests(ctx, client.InNamespace(o.GetNamespace()))
}
