package controllers

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kafkachannel/kafkachannel/api/v1beta1"
	"github.com/kafkachannel/kafkachannel/internal/features"
)

// resolvedDestination is a Destination turned into what a sender needs.
type resolvedDestination struct {
	URI      string
	CACerts  *string
	Audience *string
}

// reconcileDeadLetterSink publishes spec.delivery.deadLetterSink as status.deadLetterSinkUri:
// Knative's Subscription controller reads it from there, and dispatchers use it for
// subscribers that have no dead-letter sink of their own.
func (r *KafkaChannelReconciler) reconcileDeadLetterSink(ctx context.Context, s *scope) error {
	ch := s.ch
	st := &ch.Status
	if ch.Spec.Delivery == nil || ch.Spec.Delivery.DeadLetterSink == nil {
		st.DeadLetterSinkURI, st.DeadLetterSinkCACerts, st.DeadLetterSinkAudience = nil, nil, nil
		s.set(v1beta1.ConditionDeadLetterSinkReady, metav1.ConditionTrue, "DeadLetterSinkNotConfigured", "the channel has no dead-letter sink")
		return nil
	}
	dls := ch.Spec.Delivery.DeadLetterSink
	if ref := dls.Ref; ref != nil && ref.Namespace != "" && ref.Namespace != ch.Namespace {
		allowed, err := r.crossNamespaceEventLinks(ctx)
		if err != nil {
			st.DeadLetterSinkURI, st.DeadLetterSinkCACerts, st.DeadLetterSinkAudience = nil, nil, nil
			s.set(v1beta1.ConditionDeadLetterSinkReady, metav1.ConditionUnknown, "DeadLetterSinkUnresolved", "deadLetterSink: %v", err)
			return err
		}
		if !allowed {
			// Knative refuses such a ref unless the feature is on: it would let a channel's
			// owner have events sent to, and the manager read, an Addressable in a namespace
			// that owner may have no access to. config-features is watched, so turning the
			// feature on reconciles the channel again.
			st.DeadLetterSinkURI, st.DeadLetterSinkCACerts, st.DeadLetterSinkAudience = nil, nil, nil
			s.set(v1beta1.ConditionDeadLetterSinkReady, metav1.ConditionFalse, "CrossNamespaceRefNotAllowed",
				"deadLetterSink.ref names namespace %q, not the channel's: a ref to another namespace needs %s: enabled in the ConfigMap %s/%s",
				ref.Namespace, features.CrossNamespaceEventLinks, r.Config.OperatorNamespace, features.ConfigMap)
			return nil
		}
	}
	d, reason, err := r.resolveDestination(ctx, ch.Namespace, dls)
	if err != nil {
		// A sink that cannot be resolved must not be used with a stale address.
		st.DeadLetterSinkURI, st.DeadLetterSinkCACerts, st.DeadLetterSinkAudience = nil, nil, nil
		s.set(v1beta1.ConditionDeadLetterSinkReady, metav1.ConditionFalse, reason, "deadLetterSink: %v", err)
		// The referent may appear or become addressable later, and it is not watched.
		s.retry = true
		return nil
	}
	st.DeadLetterSinkURI, st.DeadLetterSinkCACerts, st.DeadLetterSinkAudience = &d.URI, d.CACerts, d.Audience
	s.set(v1beta1.ConditionDeadLetterSinkReady, metav1.ConditionTrue, "DeadLetterSinkResolved", "dead-letter sink is %s", d.URI)
	return nil
}

// crossNamespaceEventLinks reports whether config-features (operator namespace) enables
// references to other namespaces; an absent ConfigMap or key, or any other value, means no.
func (r *KafkaChannelReconciler) crossNamespaceEventLinks(ctx context.Context) (bool, error) {
	cm := &corev1.ConfigMap{}
	key := types.NamespacedName{Namespace: r.Config.OperatorNamespace, Name: features.ConfigMap}
	if err := r.Get(ctx, key, cm); err != nil {
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return false, fmt.Errorf("reading the ConfigMap %s for %s: %w", key, features.CrossNamespaceEventLinks, err)
	}
	return strings.EqualFold(strings.TrimSpace(cm.Data[features.CrossNamespaceEventLinks]), "enabled"), nil
}

// resolveDestination follows Knative's rules: a ref's address (a Service's cluster DNS name, or
// an Addressable's status.address.url), with uri resolved relative to it; or uri alone, which
// must then be absolute. The second return is a condition reason.
func (r *KafkaChannelReconciler) resolveDestination(ctx context.Context, namespace string, dst *v1beta1.Destination) (resolvedDestination, string, error) {
	out := resolvedDestination{CACerts: dst.CACerts, Audience: dst.Audience}
	if dst.Ref == nil {
		if dst.URI == nil || *dst.URI == "" {
			return out, "DeadLetterSinkInvalid", errors.New("neither ref nor uri is set")
		}
		u, err := url.Parse(*dst.URI)
		if err != nil || !u.IsAbs() || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return out, "DeadLetterSinkInvalid", fmt.Errorf("uri %q is not an absolute http or https URL", *dst.URI)
		}
		out.URI = u.String()
		return out, "", nil
	}
	base, ca, aud, reason, err := r.resolveRef(ctx, namespace, dst.Ref)
	if err != nil {
		return out, reason, err
	}
	if out.CACerts == nil {
		out.CACerts = ca
	}
	if out.Audience == nil {
		out.Audience = aud
	}
	if dst.URI != nil && *dst.URI != "" {
		rel, err := url.Parse(*dst.URI)
		if err != nil {
			return out, "DeadLetterSinkInvalid", fmt.Errorf("uri %q: %w", *dst.URI, err)
		}
		base = base.ResolveReference(rel)
	}
	out.URI = base.String()
	return out, "", nil
}

func (r *KafkaChannelReconciler) resolveRef(ctx context.Context, namespace string, ref *v1beta1.KReference) (*url.URL, *string, *string, string, error) {
	ns := ref.Namespace
	if ns == "" {
		ns = namespace
	}
	gv, err := schema.ParseGroupVersion(ref.APIVersion)
	if err != nil {
		return nil, nil, nil, "DeadLetterSinkInvalid", fmt.Errorf("ref apiVersion %q: %w", ref.APIVersion, err)
	}
	if ref.APIVersion == "" {
		gv.Group = ref.Group
	}
	gk := schema.GroupKind{Group: gv.Group, Kind: ref.Kind}
	desc := fmt.Sprintf("%s %s/%s", gk.String(), ns, ref.Name)

	// A plain Service is addressable by its cluster DNS name, as in Knative.
	if gk.Group == "" && ref.Kind == "Service" {
		obj := &unstructured.Unstructured{}
		obj.SetGroupVersionKind(schema.GroupVersionKind{Version: "v1", Kind: "Service"})
		if err := r.reader().Get(ctx, client.ObjectKey{Namespace: ns, Name: ref.Name}, obj); err != nil {
			return nil, nil, nil, refReason(err), fmt.Errorf("reading %s: %w", desc, err)
		}
		return &url.URL{Scheme: "http", Host: fmt.Sprintf("%s.%s.svc.cluster.local", ref.Name, ns), Path: "/"}, nil, nil, "", nil
	}

	version := gv.Version
	if version == "" {
		m, err := r.RESTMapper().RESTMapping(gk)
		if err != nil {
			return nil, nil, nil, "DeadLetterSinkNotFound", fmt.Errorf("kind %s is not served by this cluster: %w", gk, err)
		}
		version = m.GroupVersionKind.Version
	}
	obj := &unstructured.Unstructured{}
	obj.SetGroupVersionKind(gk.WithVersion(version))
	if err := r.reader().Get(ctx, client.ObjectKey{Namespace: ns, Name: ref.Name}, obj); err != nil {
		return nil, nil, nil, refReason(err), fmt.Errorf("reading %s: %w", desc, err)
	}
	addr, found, _ := unstructured.NestedMap(obj.Object, "status", "address")
	if ref.Address != nil {
		// A named address picks one of status.addresses.
		found = false
		list, _, _ := unstructured.NestedSlice(obj.Object, "status", "addresses")
		for _, a := range list {
			if m, ok := a.(map[string]any); ok && m["name"] == *ref.Address {
				addr, found = m, true
			}
		}
	}
	raw, _ := addr["url"].(string)
	if !found || raw == "" {
		return nil, nil, nil, "DeadLetterSinkNotAddressable", fmt.Errorf("%s has no status.address.url yet", desc)
	}
	u, err := url.Parse(raw)
	if err != nil || !u.IsAbs() {
		return nil, nil, nil, "DeadLetterSinkNotAddressable", fmt.Errorf("%s has an invalid address %q", desc, raw)
	}
	var ca, aud *string
	if v, ok := addr["CACerts"].(string); ok && v != "" {
		ca = &v
	}
	if v, ok := addr["audience"].(string); ok && v != "" {
		aud = &v
	}
	return u, ca, aud, "", nil
}

func (r *KafkaChannelReconciler) reader() client.Reader {
	if r.APIReader != nil {
		return r.APIReader
	}
	return r.Client
}

func refReason(err error) string {
	switch {
	case apierrors.IsNotFound(err):
		return "DeadLetterSinkNotFound"
	case apierrors.IsForbidden(err):
		return "DeadLetterSinkForbidden"
	}
	return "DeadLetterSinkUnresolved"
}
