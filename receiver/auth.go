package receiver

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"

	"github.com/cloudevents/sdk-go/v2/event"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"

	"github.com/kafkachannel/kafkachannel/internal/eventpolicy"
	"github.com/kafkachannel/kafkachannel/internal/features"
	"github.com/kafkachannel/kafkachannel/internal/kubecache"
	"github.com/kafkachannel/kafkachannel/internal/naming"
	"github.com/kafkachannel/kafkachannel/internal/oidc"
)

// Auth is how the receiver authenticates and authorizes senders while config-features has
// authentication-oidc enabled.
type Auth struct {
	// Verifier checks bearer tokens; required for OIDC.
	Verifier *oidc.Verifier
	// Policies are the EventPolicies of the cluster; nil when Knative's EventPolicy API is not
	// installed, so every channel falls back to default-authorization-mode.
	Policies *PolicyIndex
}

// authenticate checks the request's token for the channel's audience. It returns 0 and the
// sender's identity, or the refusal.
func (r *Receiver) authenticate(ctx context.Context, req *http.Request, ch Channel) (oidc.Identity, int, string) {
	if r.cfg.Auth == nil || r.cfg.Auth.Verifier == nil {
		return oidc.Identity{}, http.StatusServiceUnavailable, "authentication-oidc is enabled but this receiver cannot verify tokens"
	}
	tok, err := oidc.BearerToken(req.Header)
	if err == nil {
		var id oidc.Identity
		if id, err = r.cfg.Auth.Verifier.Verify(ctx, tok, naming.ChannelAudience(ch.Namespace, ch.Name)); err == nil {
			return id, 0, ""
		}
	}
	if errors.Is(err, oidc.ErrKeysUnavailable) {
		return oidc.Identity{}, http.StatusServiceUnavailable, fmt.Sprintf("cannot verify the token now: %v", err)
	}
	return oidc.Identity{}, http.StatusUnauthorized, fmt.Sprintf("channel %s requires a service-account token for audience %s: %v",
		ch.Key(), naming.ChannelAudience(ch.Namespace, ch.Name), err)
}

// authorize applies the EventPolicies of the channel, or the default mode, to the sender and
// its event.
func (r *Receiver) authorize(id oidc.Identity, ch Channel, e *event.Event, f features.Flags) (int, string) {
	var applicable []*eventpolicy.Policy
	if r.cfg.Auth.Policies != nil {
		applicable = r.cfg.Auth.Policies.For(ch)
	}
	d := eventpolicy.Decide(applicable, f.DefaultAuthorization, ch.Namespace, id.Subject, id.Namespace, e)
	if !d.Allowed {
		return http.StatusForbidden, d.Reason
	}
	return 0, ""
}

// PolicyIndex holds the cluster's EventPolicies by namespace; safe for concurrent use.
type PolicyIndex struct {
	mu          sync.RWMutex
	byNamespace map[string]map[string]*eventpolicy.Policy
}

// NewPolicyIndex is empty.
func NewPolicyIndex() *PolicyIndex {
	return &PolicyIndex{byNamespace: map[string]map[string]*eventpolicy.Policy{}}
}

// Set adds or replaces a policy.
func (x *PolicyIndex) Set(p *eventpolicy.Policy) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.byNamespace[p.Namespace] == nil {
		x.byNamespace[p.Namespace] = map[string]*eventpolicy.Policy{}
	}
	x.byNamespace[p.Namespace][p.Name] = p
}

// Delete removes a policy.
func (x *PolicyIndex) Delete(namespace, name string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	delete(x.byNamespace[namespace], name)
}

// For lists the policies that apply to ch.
func (x *PolicyIndex) For(ch Channel) []*eventpolicy.Policy {
	x.mu.RLock()
	defer x.mu.RUnlock()
	var out []*eventpolicy.Policy
	for _, p := range x.byNamespace[ch.Namespace] {
		if p.AppliesTo(ch.Namespace, ch.Name, ch.Labels) {
			out = append(out, p)
		}
	}
	return out
}

// ErrNoEventPolicyAPI says the cluster does not serve Knative's EventPolicy API.
var ErrNoEventPolicyAPI = errors.New("the EventPolicy API (eventing.knative.dev/v1alpha1) is not installed")

// WatchPolicies keeps an index of the cluster's EventPolicies until ctx ends; it returns once
// the first list is in. Without the API it returns ErrNoEventPolicyAPI.
func WatchPolicies(ctx context.Context, cfg *rest.Config) (*PolicyIndex, error) {
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("discovering the EventPolicy API: %w", err)
	}
	res, err := dc.ServerResourcesForGroupVersion(eventpolicy.GVK.GroupVersion().String())
	switch {
	case apierrors.IsNotFound(err):
		return nil, ErrNoEventPolicyAPI
	case err != nil:
		// Not knowing would mean no policy applies anywhere, which may admit senders a
		// policy keeps out: fail, and let the pod restart.
		return nil, fmt.Errorf("discovering the EventPolicy API: %w", err)
	case !servesKind(res.APIResources, eventpolicy.GVK.Kind):
		return nil, ErrNoEventPolicyAPI
	}
	c, err := cache.New(cfg, cache.Options{Scheme: runtime.NewScheme()})
	if err != nil {
		return nil, fmt.Errorf("creating the EventPolicy cache: %w", err)
	}
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(eventpolicy.GVK)
	inf, err := c.GetInformer(ctx, u)
	if err != nil {
		return nil, fmt.Errorf("getting the EventPolicy informer: %w", err)
	}
	idx := NewPolicyIndex()
	set := func(obj any) {
		if u, ok := obj.(*unstructured.Unstructured); ok {
			if p, err := eventpolicy.FromUnstructured(u); err == nil {
				idx.Set(p)
			}
		}
	}
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    set,
		UpdateFunc: func(_, obj any) { set(obj) },
		DeleteFunc: func(obj any) {
			if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if o, ok := obj.(metaObject); ok {
				idx.Delete(o.GetNamespace(), o.GetName())
			}
		},
	}); err != nil {
		return nil, fmt.Errorf("watching EventPolicies: %w", err)
	}
	if err := kubecache.Start(ctx, c, SyncTimeout, "EventPolicy",
		"the receiver's RBAC (get, list, watch eventpolicies.eventing.knative.dev)"); err != nil {
		return nil, err
	}
	return idx, nil
}

type metaObject interface {
	GetNamespace() string
	GetName() string
}

func servesKind(resources []metav1.APIResource, kind string) bool {
	for _, r := range resources {
		if r.Kind == kind {
			return true
		}
	}
	return false
}
