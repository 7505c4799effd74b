package controllers

import (
	"context"
	"maps"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/kafkachannel/kafkachannel/api/v1alpha1"
	"github.com/kafkachannel/kafkachannel/api/v1beta1"
	"github.com/kafkachannel/kafkachannel/internal/naming"
)

// CacheOptions keeps the manager's informers to what it manages: Secrets, ConfigMaps and
// Deployments of the operator namespace only, Services it labelled. channelNamespaces, when
// given, limits KafkaChannels (and channel Services) to those namespaces; none means all.
func CacheOptions(c Config, channelNamespaces ...string) cache.Options {
	managed := labels.SelectorFromSet(labels.Set{naming.LabelManagedBy: naming.ManagedBy})
	opNS := map[string]cache.Config{c.OperatorNamespace: {}}
	o := cache.Options{ByObject: map[client.Object]cache.ByObject{
		&corev1.Secret{}:     {Namespaces: opNS},
		&corev1.ConfigMap{}:  {Namespaces: opNS},
		&appsv1.Deployment{}: {Namespaces: opNS, Label: managed},
		&corev1.Service{}:    {Label: managed},
	}}
	if len(channelNamespaces) > 0 {
		o.DefaultNamespaces = map[string]cache.Config{c.OperatorNamespace: {}}
		for _, ns := range channelNamespaces {
			o.DefaultNamespaces[ns] = cache.Config{}
		}
	}
	return o
}

// SetupWithManager registers the controller and its watches.
func (r *KafkaChannelReconciler) SetupWithManager(mgr ctrl.Manager) error {
	inOperatorNS := func(names ...string) predicate.Predicate {
		return predicate.NewPredicateFuncs(func(o client.Object) bool {
			return o.GetNamespace() == r.Config.OperatorNamespace && slices.Contains(names, o.GetName())
		})
	}
	b := ctrl.NewControllerManagedBy(mgr).
		Named("kafkachannel").
		// Dispatchers write status.subscribers often; those writes need no reconcile.
		For(&v1beta1.KafkaChannel{}, builder.WithPredicates(predicate.Or(
			predicate.GenerationChangedPredicate{}, predicate.LabelChangedPredicate{},
			annotationsChanged{}, deletionStarted{}))).
		Watches(&appsv1.Deployment{}, handler.EnqueueRequestsFromMapFunc(r.mapManaged)).
		Watches(&corev1.Service{}, handler.EnqueueRequestsFromMapFunc(r.mapManaged)).
		Watches(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(r.allChannels),
			builder.WithPredicates(inOperatorNS(r.Config.SecretName, r.Config.ReceiverTLSSecret))).
		Watches(&corev1.ConfigMap{}, handler.EnqueueRequestsFromMapFunc(r.allChannels),
			builder.WithPredicates(inOperatorNS(DataPlaneConfigMaps...)))
	return r.watchPolicies(mgr, b).Complete(r)
}

// annotationsChanged is predicate.AnnotationChangedPredicate without the ResetOffset pause
// annotations, which only dispatchers read (they watch their channel themselves): setting and
// lifting one would otherwise reconcile the whole channel, topic round trips included, twice
// per reset.
type annotationsChanged struct{ predicate.Funcs }

func (annotationsChanged) Update(e event.UpdateEvent) bool {
	return !maps.Equal(withoutPause(e.ObjectOld.GetAnnotations()), withoutPause(e.ObjectNew.GetAnnotations()))
}

func withoutPause(a map[string]string) map[string]string {
	out := make(map[string]string, len(a))
	for k, v := range a {
		if !strings.HasPrefix(k, v1alpha1.PauseAnnotationPrefix) {
			out[k] = v
		}
	}
	return out
}

// deletionStarted lets through the update that sets deletionTimestamp.
type deletionStarted struct{ predicate.Funcs }

func (deletionStarted) Update(e event.UpdateEvent) bool {
	return e.ObjectOld.GetDeletionTimestamp().IsZero() != e.ObjectNew.GetDeletionTimestamp().IsZero()
}

// mapManaged maps a Deployment or Service back to its channel through the annotations that
// carry the channel's full name (objects in the operator namespace cannot have owner references
// to it); the shared receiver concerns every channel.
func (r *KafkaChannelReconciler) mapManaged(ctx context.Context, o client.Object) []reconcile.Request {
	a := o.GetAnnotations()
	if ns, name := a[ChannelNamespaceAnnotation], a[ChannelNameAnnotation]; ns != "" && name != "" {
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: ns, Name: name}}}
	}
	if o.GetNamespace() == r.Config.OperatorNamespace && o.GetName() == naming.ReceiverName {
		return r.allChannels(ctx, o)
	}
	return nil
}

func (r *KafkaChannelReconciler) allChannels(ctx context.Context, _ client.Object) []reconcile.Request {
	return r.channelRequests(ctx)
}

// channelRequests lists the KafkaChannels (of one namespace, with client.InNamespace) to
// re-reconcile them.
func (r *KafkaChannelReconciler) channelRequests(ctx context.Context, opts ...client.ListOption) []reconcile.Request {
	list := &v1beta1.KafkaChannelList{}
	if err := r.List(ctx, list, opts...); err != nil {
		logf.FromContext(ctx).Error(err, "listing KafkaChannels to re-reconcile them")
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(list.Items))
	for _, ch := range list.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: ch.Namespace, Name: ch.Name}})
	}
	return reqs
}
