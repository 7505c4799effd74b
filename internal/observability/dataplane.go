package observability

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/go-logr/logr"
	"github.com/kafkachannel/kafkachannel/internal/version"
	"go.uber.org/zap/zapcore"
)

// StartDataPlane is Start as the dispatcher and receiver binaries use it: the level from their
// --log-level flag (config-logging overrides it live), a logger carrying the pod's name and
// namespace, and a stop function that flushes spans within 10 s. Call stop last, so the spans
// of the final requests are exported. The admin server answers /healthz while the process
// serves, and /readyz fails as soon as ctx ends, so a terminating pod leaves its Service's
// endpoints before it stops serving.
func StartDataPlane(ctx context.Context, component, logLevel string) (*Observability, logr.Logger, func(), error) {
	var level zapcore.Level
	if err := level.UnmarshalText([]byte(logLevel)); err != nil {
		return nil, logr.Discard(), nil, fmt.Errorf("--log-level: %w", err)
	}
	obs, err := Start(ctx, Options{Component: component, DefaultLogLevel: level})
	if err != nil {
		return nil, logr.Discard(), nil, err
	}
	obs.Admin.AddLivenessCheck("process", func() error { return nil })
	obs.Admin.AddReadinessCheck("shutdown", func() error {
		if ctx.Err() != nil {
			return errors.New("shutting down")
		}
		return nil
	})
	stop := func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = obs.Shutdown(sctx)
	}
	log := obs.Log.WithValues("pod", os.Getenv("POD_NAME"), "namespace", os.Getenv("POD_NAMESPACE"))
	// The version the Makefile and Dockerfile stamp in: what a user reads first in `kubectl logs`
	// when asking which build a pod runs.
	log.Info("starting", "component", component, "version", version.Version)
	return obs, log, stop, nil
}
