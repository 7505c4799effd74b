// Package observability is the one place for what every binary (manager, dispatcher, receiver)
// needs to be operated: logging, the admin HTTP server (Prometheus metrics and health checks),
// and the ports it listens on.
package observability

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Ports the data plane containers declare. The manager writes them into pod templates, the
// binaries listen on them.
const (
	// MetricsPort serves /metrics, /healthz and /readyz.
	MetricsPort = 8081
	// IngressPort is the receiver's event endpoint.
	IngressPort = 8080
	// IngressTLSPort is the receiver's event endpoint over https (config-features'
	// transport-encryption permissive or strict).
	IngressTLSPort = 8443
	// ProfilingPort serves /debug/pprof while config-observability enables it.
	ProfilingPort = 8008
)

// PortMapEnv lets a host that runs several replicas as plain processes (the local node of
// `make demo`) give each one its own host ports: "8081=41234,8008=41235". In a cluster it is
// unset and every port is what the container declares.
const PortMapEnv = "KAFKACHANNEL_PORT_MAP"

// Addr is the listen address for a container port, after the local node's port map.
func Addr(containerPort int) string {
	for _, pair := range strings.Split(os.Getenv(PortMapEnv), ",") {
		from, to, ok := strings.Cut(strings.TrimSpace(pair), "=")
		if ok && from == strconv.Itoa(containerPort) {
			return ":" + to
		}
	}
	return ":" + strconv.Itoa(containerPort)
}

// NewRegistry is a Prometheus registry with the Go runtime and process collectors.
func NewRegistry() *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return r
}

// Check reports whether a component is healthy; nil means yes.
type Check func() error

// AdminServer serves /metrics, /healthz (liveness) and /readyz (readiness).
type AdminServer struct {
	Addr     string
	Registry *prometheus.Registry
	Log      logr.Logger

	mu        sync.Mutex
	liveness  map[string]Check
	readiness map[string]Check
	srv       *http.Server
}

// AddLivenessCheck adds a check to /healthz. A failing liveness check gets the pod restarted.
func (s *AdminServer) AddLivenessCheck(name string, c Check) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.liveness == nil {
		s.liveness = map[string]Check{}
	}
	s.liveness[name] = c
}

// AddReadinessCheck adds a check to /readyz.
func (s *AdminServer) AddReadinessCheck(name string, c Check) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.readiness == nil {
		s.readiness = map[string]Check{}
	}
	s.readiness[name] = c
}

// Handler is the admin mux, for tests and for embedding.
func (s *AdminServer) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(s.Registry, promhttp.HandlerOpts{Registry: s.Registry}))
	mux.HandleFunc("/healthz", s.serveChecks(func() map[string]Check { return s.liveness }))
	mux.HandleFunc("/readyz", s.serveChecks(func() map[string]Check { return s.readiness }))
	return mux
}

func (s *AdminServer) serveChecks(checks func() map[string]Check) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		s.mu.Lock()
		cs := checks()
		var failed []string
		for name, c := range cs {
			if err := c(); err != nil {
				failed = append(failed, fmt.Sprintf("%s: %v", name, err))
			}
		}
		s.mu.Unlock()
		if len(failed) > 0 {
			http.Error(w, strings.Join(failed, "\n"), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	}
}

// Start listens and serves in the background; it returns once the port is bound, so a port
// conflict is an error here rather than a log line later.
func (s *AdminServer) Start() error {
	ln, err := net.Listen("tcp", s.Addr)
	if err != nil {
		return fmt.Errorf("admin server on %s: %w", s.Addr, err)
	}
	s.Addr = ln.Addr().String()
	s.srv = &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.Log.Error(err, "admin server stopped")
		}
	}()
	return nil
}

// Shutdown stops the server, waiting for in-flight scrapes until ctx ends.
func (s *AdminServer) Shutdown(ctx context.Context) error {
	if s.srv == nil {
		return nil
	}
	return s.srv.Shutdown(ctx)
}
