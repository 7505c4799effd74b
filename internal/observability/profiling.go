package observability

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"time"

	"github.com/go-logr/logr"
)

// profiler serves /debug/pprof on its own port, and listens only while config-observability's
// profiling.enable is true: a closed port is the safest profiler.
type profiler struct {
	addr string
	log  logr.Logger

	mu    sync.Mutex
	srv   *http.Server
	bound string
}

// pprofHandler is a mux of its own: registering on http.DefaultServeMux (as importing
// net/http/pprof does) would expose profiles on any server that uses the default mux.
func pprofHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// set starts or stops the server; it is idempotent.
func (p *profiler) set(enabled bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case enabled && p.srv == nil:
		ln, err := net.Listen("tcp", p.addr)
		if err != nil {
			return fmt.Errorf("starting the profiling server on %s: %w", p.addr, err)
		}
		// No write timeout: a CPU profile or trace streams for as long as the caller asks.
		srv := &http.Server{Handler: pprofHandler(), ReadHeaderTimeout: 10 * time.Second}
		p.srv, p.bound = srv, ln.Addr().String()
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				p.log.Error(err, "profiling server stopped")
			}
		}()
		p.log.Info("profiling enabled", "address", p.bound)
	case !enabled && p.srv != nil:
		// Close, not Shutdown: a running 30 s CPU profile would otherwise keep the port open.
		err := p.srv.Close()
		p.srv, p.bound = nil, ""
		p.log.Info("profiling disabled")
		if err != nil {
			return fmt.Errorf("stopping the profiling server: %w", err)
		}
	}
	return nil
}

// address is where the server listens, or "" while disabled.
func (p *profiler) address() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.bound
}
