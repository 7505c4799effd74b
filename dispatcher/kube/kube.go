// Package kube connects a dispatcher to the API server: it watches the one KafkaChannel the
// dispatcher serves and reports each subscriber's state into status.subscribers.
package kube

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kafkachannel/kafkachannel/api/v1beta1"
	"github.com/kafkachannel/kafkachannel/dispatcher"
	"github.com/kafkachannel/kafkachannel/internal/kubecache"
)

// NewScheme is a scheme with the KafkaChannel types.
func NewScheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	if err := v1beta1.AddToScheme(s); err != nil {
		return nil, fmt.Errorf("building the scheme: %w", err)
	}
	return s, nil
}

// SyncTimeout bounds the wait for the first list of the KafkaChannel.
var SyncTimeout = 2 * time.Minute

// Watch starts a cache that holds only the named KafkaChannel (a field selector, so the
// dispatcher neither lists nor needs permission for other channels) and calls onChange with
// every version of it, nil when it is deleted. It returns once the cache has synced, or an
// error when the cache fails to start or does not sync within SyncTimeout (missing RBAC or
// CRD): the caller exits with it and is restarted, rather than hang never ready.
func Watch(ctx context.Context, cfg *rest.Config, scheme *runtime.Scheme, namespace, name string, onChange func(*v1beta1.KafkaChannel)) (cache.Cache, error) {
	c, err := cache.New(cfg, cache.Options{
		Scheme: scheme,
		ByObject: map[client.Object]cache.ByObject{
			&v1beta1.KafkaChannel{}: {
				Namespaces: map[string]cache.Config{namespace: {}},
				Field:      fields.OneTermEqualSelector("metadata.name", name),
			},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("creating the KafkaChannel cache: %w", err)
	}
	inf, err := c.GetInformer(ctx, &v1beta1.KafkaChannel{})
	if err != nil {
		return nil, fmt.Errorf("getting the KafkaChannel informer: %w", err)
	}
	_, err = inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if kc, ok := obj.(*v1beta1.KafkaChannel); ok {
				onChange(kc)
			}
		},
		UpdateFunc: func(_, obj any) {
			if kc, ok := obj.(*v1beta1.KafkaChannel); ok {
				onChange(kc)
			}
		},
		DeleteFunc: func(any) { onChange(nil) },
	})
	if err != nil {
		return nil, fmt.Errorf("watching the KafkaChannel: %w", err)
	}
	if err := kubecache.Start(ctx, c, SyncTimeout, "KafkaChannel",
		fmt.Sprintf("the dispatcher's RBAC (get, list, watch kafkachannels in %s) and that the CRD is installed", namespace)); err != nil {
		return nil, err
	}
	return c, nil
}

// StateSource is what a Reporter reports: a dispatcher's subscriber states.
type StateSource interface {
	States() []dispatcher.SubscriberState
}

// Reporter writes one replica's subscriber states into status.subscribers. Several replicas
// report at once: each write is a merge patch guarded by resourceVersion (retried on conflict
// with a fresh read, so no replica's update is lost), and Merge is monotonic per generation (a
// replica never takes a True entry back to Unknown), so replicas converge instead of fighting.
// It never touches the rest of the status, which the manager owns.
type Reporter struct {
	// Client writes the status subresource.
	Client client.Client
	// Reader reads the channel fresh for each attempt (an uncached client, or Client).
	Reader    client.Reader
	Namespace string
	Name      string
	Source    StateSource
	Log       logr.Logger
	// Resync re-checks the status even without changes (another writer may have dropped an
	// entry); default one minute.
	Resync time.Duration
}

// reportBackoff spaces the Reporter's retries: 100 ms, doubling up to 10 s.
var reportBackoff = wait.Backoff{Duration: 100 * time.Millisecond, Factor: 2, Cap: 10 * time.Second, Steps: math.MaxInt32}

// Run reports on every change signalled by changed, and every Resync, until ctx ends.
func (r *Reporter) Run(ctx context.Context, changed <-chan struct{}) {
	resync := r.Resync
	if resync <= 0 {
		resync = time.Minute
	}
	t := time.NewTicker(resync)
	defer t.Stop()
	for {
		// Each round retries until one sync lands; the backoff starts afresh every round.
		err := reportBackoff.DelayFunc().Until(ctx, true, false, func(ctx context.Context) (bool, error) {
			if err := r.Sync(ctx); err != nil {
				if ctx.Err() == nil {
					r.Log.Error(err, "reporting subscriber status failed, retrying")
				}
				return false, nil
			}
			return true, nil
		})
		if err != nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-t.C:
		}
	}
}

// Sync brings status.subscribers in line with this replica's states once.
func (r *Reporter) Sync(ctx context.Context) error {
	reader := r.Reader
	if reader == nil {
		reader = r.Client
	}
	key := types.NamespacedName{Namespace: r.Namespace, Name: r.Name}
	return retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		kc := &v1beta1.KafkaChannel{}
		if err := reader.Get(ctx, key, kc); err != nil {
			if apierrors.IsNotFound(err) {
				return nil
			}
			return fmt.Errorf("reading KafkaChannel %s: %w", key, err)
		}
		next := Merge(kc.Status.Subscribers, kc.Spec.Subscribers, r.Source.States())
		if equality.Semantic.DeepEqual(next, kc.Status.Subscribers) {
			return nil
		}
		base := kc.DeepCopy()
		kc.Status.Subscribers = next
		if err := r.Client.Status().Patch(ctx, kc, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})); err != nil {
			return fmt.Errorf("patching status.subscribers of %s: %w", key, err)
		}
		r.Log.V(1).Info("reported subscriber status", "subscribers", len(next))
		return nil
	})
}

// rank orders readiness within one generation: a replica may only raise it.
func rank(ready string) int {
	switch ready {
	case dispatcher.ReadyTrue:
		return 2
	case dispatcher.ReadyFalse:
		return 1
	}
	return 0
}

// Merge computes status.subscribers from the entries already there, the spec, and one
// replica's states. Entries follow the spec's order; entries of removed subscribers go. For a
// subscriber, the entry with the higher generation wins; at the same generation readiness only
// rises (Unknown < False < True): readiness is a fact about the group (joined, start offsets
// committed), so one replica knowing it is enough and a replica still starting must not hide it.
func Merge(current []v1beta1.SubscriberStatus, spec []v1beta1.SubscriberSpec, mine []dispatcher.SubscriberState) []v1beta1.SubscriberStatus {
	cur := make(map[string]v1beta1.SubscriberStatus, len(current))
	for _, s := range current {
		cur[s.UID] = s
	}
	own := make(map[string]dispatcher.SubscriberState, len(mine))
	for _, s := range mine {
		own[s.UID] = s
	}
	var out []v1beta1.SubscriberStatus
	for _, sp := range spec {
		c, hasCur := cur[sp.UID]
		m, hasMine := own[sp.UID]
		if hasMine && m.Generation > sp.Generation {
			// The spec read now is older than what this replica applied: leave the entry.
			hasMine = false
		}
		mineEntry := v1beta1.SubscriberStatus{UID: sp.UID, ObservedGeneration: m.Generation, Ready: m.Ready, Message: m.Message}
		if mineEntry.Ready == "" {
			mineEntry.Ready = dispatcher.ReadyUnknown
		}
		if mineEntry.Ready == dispatcher.ReadyTrue {
			mineEntry.Message = ""
		}
		switch {
		case !hasMine && hasCur:
			out = append(out, c)
		case !hasMine:
			// Not applied here yet, nothing known: no entry rather than a guess.
		case !hasCur, m.Generation > c.ObservedGeneration:
			out = append(out, mineEntry)
		case m.Generation < c.ObservedGeneration:
			out = append(out, c)
		case rank(mineEntry.Ready) > rank(c.Ready):
			out = append(out, mineEntry)
		default:
			out = append(out, c)
		}
	}
	return out
}
