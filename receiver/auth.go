package receiver

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/go-logr/logr"
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
	// Policies are the EventPolicies of the cluster (WatchPolicies); nil means none, so every
	// channel falls back to default-authorization-mode.
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

// authorizeSender judges the sender before the body is read, with everything that does not
// need the event: the default mode when no EventPolicy applies, and the subjects of those that
// do. It returns 0 and the policies that still have to see the event (nil when the sender is
// admitted already), or the refusal.
func (r *Receiver) authorizeSender(id oidc.Identity, ch Channel, f features.Flags) ([]*eventpolicy.Policy, int, string) {
	var applicable []*eventpolicy.Policy
	if r.cfg.Auth != nil && r.cfg.Auth.Policies != nil {
		var err error
		if applicable, err = r.cfg.Auth.Policies.Lookup(ch); err != nil {
			return nil, http.StatusServiceUnavailable, fmt.Sprintf("cannot authorize senders now: %v", err)
		}
	}
	if len(applicable) == 0 {
		// The default mode looks at the sender only.
		if d := eventpolicy.Decide(nil, f.DefaultAuthorization, ch.Namespace, id.Subject, id.Namespace, nil); !d.Allowed {
			return nil, http.StatusForbidden, d.Reason
		}
		return nil, 0, ""
	}
	named := false
	for _, p := range applicable {
		if p.AdmitsSubject(id.Subject) {
			if !p.NeedsEvent() {
				return nil, 0, ""
			}
			named = true
		}
	}
	if !named {
		// No policy names the sender, so none admits any event of theirs; the empty event
		// only lets Decide word the refusal as it does after decoding.
		if d := eventpolicy.Decide(applicable, f.DefaultAuthorization, ch.Namespace, id.Subject, id.Namespace, &event.Event{}); !d.Allowed {
			return nil, http.StatusForbidden, d.Reason
		}
	}
	return applicable, 0, ""
}

// authorizeEvent applies policies (from authorizeSender) to the decoded event.
func authorizeEvent(policies []*eventpolicy.Policy, id oidc.Identity, ch Channel, e *event.Event, f features.Flags) (int, string) {
	if d := eventpolicy.Decide(policies, f.DefaultAuthorization, ch.Namespace, id.Subject, id.Namespace, e); !d.Allowed {
		return http.StatusForbidden, d.Reason
	}
	return 0, ""
}

// PolicyIndex holds the cluster's EventPolicies by namespace; safe for concurrent use. An index
// made by NewPolicyIndex is complete as filled by hand; one from WatchPolicies also knows
// whether the EventPolicy API is installed and whether its policies have been read.
type PolicyIndex struct {
	mu          sync.RWMutex
	byNamespace map[string]map[string]*eventpolicy.Policy
	// unknown, when set, is why the index cannot tell which policies exist: the API has
	// appeared and its first list is not in yet.
	unknown error
	// installed says whether the cluster serves the EventPolicy API (as last discovered).
	installed bool
}

// NewPolicyIndex is empty.
func NewPolicyIndex() *PolicyIndex {
	return &PolicyIndex{byNamespace: map[string]map[string]*eventpolicy.Policy{}, installed: true}
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

// Lookup is For, or an error while the index cannot tell (the API has just appeared and its
// policies are being read): a sender must then be neither admitted nor refused by a guess.
func (x *PolicyIndex) Lookup(ch Channel) ([]*eventpolicy.Policy, error) {
	x.mu.RLock()
	unknown := x.unknown
	x.mu.RUnlock()
	if unknown != nil {
		return nil, unknown
	}
	return x.For(ch), nil
}

// Ready is nil once the index can tell which policies apply: for readiness.
func (x *PolicyIndex) Ready() error {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.unknown
}

// Installed reports whether the cluster served the EventPolicy API when last asked.
func (x *PolicyIndex) Installed() bool {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.installed
}

func (x *PolicyIndex) setState(installed bool, unknown error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.installed, x.unknown = installed, unknown
}

// DefaultPolicyAPIRecheck is how often a receiver started without the EventPolicy API asks
// whether it has been installed since.
const DefaultPolicyAPIRecheck = 5 * time.Second

// WatchPolicies keeps an index of the cluster's EventPolicies until ctx ends. When the API is
// installed it returns once the first list is in. When it is not, every channel has no
// policies, and discovery is asked again every recheck (DefaultPolicyAPIRecheck when 0): once
// the API appears (a Knative upgrade), the index answers Lookup and Ready with an error until
// its first list is in, then follows the policies like an index started with the API. A
// failure of the first discovery is returned: not knowing could admit senders a policy keeps
// out.
func WatchPolicies(ctx context.Context, cfg *rest.Config, recheck time.Duration, log logr.Logger) (*PolicyIndex, error) {
	if recheck <= 0 {
		recheck = DefaultPolicyAPIRecheck
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("discovering the EventPolicy API: %w", err)
	}
	installed, err := servesPolicies(dc)
	if err != nil {
		return nil, err
	}
	idx := NewPolicyIndex()
	if installed {
		if err := idx.follow(ctx, cfg); err != nil {
			return nil, err
		}
		return idx, nil
	}
	idx.setState(false, nil)
	go func() {
		t := time.NewTicker(recheck)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			installed, err := servesPolicies(dc)
			if err != nil {
				// The apiserver may be briefly away; the API was not there when it last
				// answered, so the channels keep having no policies.
				log.V(1).Info("asking whether the EventPolicy API is installed", "error", err.Error())
				continue
			}
			if !installed {
				continue
			}
			log.Info("the EventPolicy API has been installed: reading its policies; until then senders to channels get 503")
			idx.setState(true, errors.New("the EventPolicy API has just been installed and its policies are being read"))
			for {
				err := idx.follow(ctx, cfg)
				if err == nil {
					break
				}
				if ctx.Err() != nil {
					return
				}
				log.Error(err, "reading the EventPolicies; trying again")
			}
			idx.setState(true, nil)
			log.Info("EventPolicies are enforced")
			return
		}
	}()
	return idx, nil
}

// servesPolicies asks discovery whether the cluster serves the EventPolicy kind.
func servesPolicies(dc discovery.DiscoveryInterface) (bool, error) {
	res, err := dc.ServerResourcesForGroupVersion(eventpolicy.GVK.GroupVersion().String())
	switch {
	case apierrors.IsNotFound(err):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("discovering the EventPolicy API: %w", err)
	}
	return servesKind(res.APIResources, eventpolicy.GVK.Kind), nil
}

// follow starts an informer on EventPolicies that keeps x in step, and returns once its first
// list is in.
func (x *PolicyIndex) follow(ctx context.Context, cfg *rest.Config) error {
	c, err := cache.New(cfg, cache.Options{Scheme: runtime.NewScheme()})
	if err != nil {
		return fmt.Errorf("creating the EventPolicy cache: %w", err)
	}
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(eventpolicy.GVK)
	inf, err := c.GetInformer(ctx, u)
	if err != nil {
		return fmt.Errorf("getting the EventPolicy informer: %w", err)
	}
	set := func(obj any) {
		if u, ok := obj.(*unstructured.Unstructured); ok {
			if p, err := eventpolicy.FromUnstructured(u); err == nil {
				x.Set(p)
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
				x.Delete(o.GetNamespace(), o.GetName())
			}
		},
	}); err != nil {
		return fmt.Errorf("watching EventPolicies: %w", err)
	}
	// A cache that did not sync is stopped, so a retry does not leave two behind; one that
	// did lives as long as ctx.
	cctx, cancel := context.WithCancel(ctx)
	context.AfterFunc(ctx, cancel)
	if err := kubecache.Start(cctx, c, SyncTimeout, "EventPolicy",
		"the receiver's RBAC (get, list, watch eventpolicies.eventing.knative.dev)"); err != nil {
		cancel()
		return err
	}
	return nil
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
