// Package kubecache starts a controller-runtime cache of a data-plane process with a bounded
// wait for its first lists.
package kubecache

import (
	"context"
	"fmt"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/cache"
)

// Start runs c until ctx ends and waits at most timeout for it to sync. Without the bound a
// missing RBAC rule or CRD would leave the pod waiting forever, never ready and never saying
// why; instead the error names the cache (what) and what to check (check), and the process
// exits with it so the node restarts it.
func Start(ctx context.Context, c cache.Cache, timeout time.Duration, what, check string) error {
	errc := make(chan error, 1)
	go func() { errc <- c.Start(ctx) }()
	syncCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if c.WaitForCacheSync(syncCtx) {
		return nil
	}
	select {
	case err := <-errc:
		if err != nil {
			return fmt.Errorf("starting the %s cache: %w", what, err)
		}
	default:
	}
	if ctx.Err() != nil {
		return fmt.Errorf("the %s cache did not sync: %w", what, ctx.Err())
	}
	return fmt.Errorf("the %s cache did not sync within %s: check %s", what, timeout, check)
}
