package receiver

import (
	"context"
	"errors"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/cache"

	"github.com/kafkachannel/kafkachannel/api/v1beta1"
	"github.com/kafkachannel/kafkachannel/internal/kubecache"
)

// SyncTimeout bounds the wait for the first list of KafkaChannels.
var SyncTimeout = 2 * time.Minute

// WatchChannels starts a read-only controller-runtime cache of the KafkaChannels of all
// namespaces and keeps idx in step with it until ctx ends. It returns once the cache has
// synced, so the receiver never answers 404 for a channel merely not listed yet; the returned
// func reports whether the cache is (still) synced, for readiness.
func WatchChannels(ctx context.Context, cfg *rest.Config, idx *Index) (func() error, error) {
	scheme := runtime.NewScheme()
	if err := v1beta1.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("building the scheme of the channel cache: %w", err)
	}
	c, err := cache.New(cfg, cache.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("creating the KafkaChannel cache: %w", err)
	}
	inf, err := c.GetInformer(ctx, &v1beta1.KafkaChannel{})
	if err != nil {
		return nil, fmt.Errorf("getting the KafkaChannel informer: %w", err)
	}
	if err := idx.Watch(inf); err != nil {
		return nil, err
	}
	if err := kubecache.Start(ctx, c, SyncTimeout, "KafkaChannel",
		"the receiver's RBAC (get, list, watch kafkachannels) and that the CRD is installed"); err != nil {
		return nil, err
	}
	synced := func() error {
		if !inf.HasSynced() {
			return errors.New("the KafkaChannel cache is not synced")
		}
		return nil
	}
	return synced, nil
}
