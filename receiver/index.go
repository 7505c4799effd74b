package receiver

import (
	"fmt"
	"net"
	"strings"
	"sync"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	toolscache "k8s.io/client-go/tools/cache"

	"github.com/kafkachannel/kafkachannel/api/v1beta1"
	"github.com/kafkachannel/kafkachannel/internal/naming"
)

// Channel is what the receiver needs to know about one KafkaChannel.
type Channel struct {
	Namespace string
	Name      string
	// Topic is where the channel's events are written.
	Topic string
	// Labels are the channel's labels, which EventPolicies may select it by.
	Labels map[string]string
	// Ready is true when the topic exists (the TopicReady condition is True) and the channel is
	// not being deleted; events for a channel that is not ready get 503 and NotReadyReason.
	Ready          bool
	NotReadyReason string
}

// Key is the channel's "namespace/name", the value of its metric label.
func (c Channel) Key() string { return c.Namespace + "/" + c.Name }

// Index maps channel addresses to channels. It is filled from an informer on KafkaChannels
// (Watch), or by hand (Set, Delete) when there is no cluster, as in benchmarks. It is safe for
// concurrent use.
type Index struct {
	mu     sync.RWMutex
	byName map[string]Channel // "namespace/name"
	byHost map[string]string  // "<service>.<namespace>" -> "namespace/name"
	// forgotten are told of every channel deleted, by key, so what is kept per channel
	// elsewhere (metric series) goes with it.
	forgotten map[int]func(key string)
	nextID    int
}

// NewIndex returns an empty index.
func NewIndex() *Index {
	return &Index{byName: map[string]Channel{}, byHost: map[string]string{}}
}

// ChannelFromObject derives the receiver's view of a KafkaChannel from its status.
func ChannelFromObject(kc *v1beta1.KafkaChannel) Channel {
	ch := Channel{
		Namespace: kc.Namespace,
		Name:      kc.Name,
		Topic:     naming.Topic(kc.Namespace, kc.Name),
		Labels:    kc.Labels,
	}
	cond := meta.FindStatusCondition(kc.Status.Conditions, v1beta1.ConditionTopicReady)
	switch {
	case kc.DeletionTimestamp != nil:
		ch.NotReadyReason = "the channel is being deleted"
	case cond == nil:
		ch.NotReadyReason = "the channel's topic is not ready yet (condition TopicReady not reported)"
	case cond.Status != metav1.ConditionTrue:
		ch.NotReadyReason = fmt.Sprintf("the channel's topic is not ready (TopicReady=%s, %s: %s)",
			cond.Status, cond.Reason, cond.Message)
	default:
		ch.Ready = true
	}
	return ch
}

// Set adds or updates a channel.
func (x *Index) Set(kc *v1beta1.KafkaChannel) {
	x.SetChannel(ChannelFromObject(kc))
}

// SetChannel adds or updates a channel given directly, for callers without KafkaChannel objects.
func (x *Index) SetChannel(ch Channel) {
	x.mu.Lock()
	defer x.mu.Unlock()
	key := ch.Key()
	x.byName[key] = ch
	x.byHost[hostKey(naming.ChannelHost(ch.Namespace, ch.Name))] = key
}

// Delete removes a channel, and tells those registered with OnDelete.
func (x *Index) Delete(namespace, name string) {
	key := namespace + "/" + name
	x.mu.Lock()
	_, known := x.byName[key]
	delete(x.byName, key)
	hk := hostKey(naming.ChannelHost(namespace, name))
	if x.byHost[hk] == key {
		delete(x.byHost, hk)
	}
	listeners := make([]func(string), 0, len(x.forgotten))
	for _, f := range x.forgotten {
		listeners = append(listeners, f)
	}
	x.mu.Unlock()
	if !known {
		return
	}
	for _, f := range listeners {
		f(key)
	}
}

// OnDelete has f called with the key ("namespace/name") of every channel deleted from now
// on, outside the index's lock; the returned func stops it.
func (x *Index) OnDelete(f func(key string)) (stop func()) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.forgotten == nil {
		x.forgotten = map[int]func(string){}
	}
	id := x.nextID
	x.nextID++
	x.forgotten[id] = f
	return func() {
		x.mu.Lock()
		defer x.mu.Unlock()
		delete(x.forgotten, id)
	}
}

// has reports whether the channel with this key ("namespace/name") is known.
func (x *Index) has(key string) bool {
	x.mu.RLock()
	defer x.mu.RUnlock()
	_, ok := x.byName[key]
	return ok
}

// ByName finds a channel by namespace and name.
func (x *Index) ByName(namespace, name string) (Channel, bool) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	ch, ok := x.byName[namespace+"/"+name]
	return ch, ok
}

// ByHost finds the channel whose address has this host: naming.ChannelHost, or the shorter
// forms a client inside the cluster may use ("<svc>.<ns>.svc", "<svc>.<ns>"), with or without a
// port.
func (x *Index) ByHost(host string) (Channel, bool) {
	hk := hostKey(host)
	if hk == "" {
		return Channel{}, false
	}
	x.mu.RLock()
	defer x.mu.RUnlock()
	key, ok := x.byHost[hk]
	if !ok {
		return Channel{}, false
	}
	ch, ok := x.byName[key]
	return ch, ok
}

// Len is the number of channels known.
func (x *Index) Len() int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return len(x.byName)
}

// hostKey reduces a Host header to "<svc>.<ns>", so every form of a channel's host name finds
// the same entry.
func hostKey(host string) string {
	host = strings.ToLower(strings.TrimSpace(host))
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(host, ".")
	host = strings.TrimSuffix(host, ".cluster.local")
	host = strings.TrimSuffix(host, ".svc")
	return host
}

// Informer is the part of a controller-runtime cache informer the index needs.
type Informer interface {
	AddEventHandler(handler toolscache.ResourceEventHandler) (toolscache.ResourceEventHandlerRegistration, error)
}

// Watch keeps the index in step with an informer on KafkaChannels (from a controller-runtime
// cache: cache.GetInformer(ctx, &v1beta1.KafkaChannel{})).
func (x *Index) Watch(inf Informer) error {
	_, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc: func(obj interface{}) {
			if kc, ok := obj.(*v1beta1.KafkaChannel); ok {
				x.Set(kc)
			}
		},
		UpdateFunc: func(_, obj interface{}) {
			if kc, ok := obj.(*v1beta1.KafkaChannel); ok {
				x.Set(kc)
			}
		},
		DeleteFunc: func(obj interface{}) {
			// A watch that missed the deletion hands over the last known state wrapped.
			if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if kc, ok := obj.(*v1beta1.KafkaChannel); ok {
				x.Delete(kc.Namespace, kc.Name)
			}
		},
	})
	if err != nil {
		return fmt.Errorf("watching KafkaChannels for the receiver's channel index: %w", err)
	}
	return nil
}
