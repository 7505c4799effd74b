package observability

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// DefaultPollInterval is how often the mounted ConfigMaps are re-read. kubelet takes up to a
// minute to update them, so a few seconds more is invisible, and reading a handful of small
// files costs nothing.
const DefaultPollInterval = 2 * time.Second

// Options configure Start. Only Component is required.
type Options struct {
	// Component is ComponentController, ComponentDispatcher or ComponentReceiver: the logger's
	// name, the loglevel.<component> key of config-logging and, prefixed with "kafkachannel-",
	// the service name of its spans.
	Component string
	// ConfigDir holds the mounted ConfigMaps (ConfigDir/config-tracing/<key> ...). Default: the
	// CONFIG_DIR environment variable, else DefaultConfigDir. Missing directories read as empty,
	// so every key takes its default until Apply is called.
	ConfigDir string
	// PollInterval is how often ConfigDir is re-read; default DefaultPollInterval, negative
	// turns watching off (a manager that feeds Apply from the API instead).
	PollInterval time.Duration
	// DefaultLogLevel applies while config-logging sets no level; default info.
	DefaultLogLevel zapcore.Level
	// MetricsAddr is where the admin server (/metrics, /healthz, /readyz) listens; default
	// Addr(MetricsPort). DisableAdmin leaves it off (the manager serves its own).
	MetricsAddr  string
	DisableAdmin bool
	// ProfilingAddr is where pprof listens while enabled; default Addr(ProfilingPort).
	ProfilingAddr string
	// Registry receives the component's metrics; default NewRegistry().
	Registry *prometheus.Registry

	// LogWriter, when set, replaces zap-logger-config's outputs (tests capture logs).
	LogWriter io.Writer
	// SpanExporter, when set, replaces the configured backend's exporter while tracing is not
	// "none" (tests use the SDK's in-memory exporter). It is not shut down by Shutdown.
	SpanExporter sdktrace.SpanExporter
}

// Observability is a running component's logging, metrics, tracing and profiling.
type Observability struct {
	// Log is the component's logger; its level follows config-logging.
	Log logr.Logger
	// Level is Log's level; Apply and the file watcher change it.
	Level zap.AtomicLevel
	// Registry is what the admin server's /metrics serves.
	Registry *prometheus.Registry
	// Admin serves /metrics, /healthz and /readyz; nil with Options.DisableAdmin. Add checks
	// with Admin.AddReadinessCheck / AddLivenessCheck.
	Admin *AdminServer

	opts     Options
	tracing  *tracing
	profiler *profiler

	mu      sync.Mutex
	applied map[string]map[string]string // last data applied per ConfigMap
	logCfg  LoggingConfig

	cancel   context.CancelFunc
	watching sync.WaitGroup
	stopOnce sync.Once
}

// Start sets a component up: it reads the ConfigMaps under ConfigDir, builds the logger, sets
// the global OpenTelemetry TracerProvider and propagator, starts the admin server (and pprof if
// enabled), and keeps re-reading the ConfigMaps until ctx ends or Shutdown is called. An invalid
// ConfigMap is logged and its defaults used (or, later, the previous valid settings kept): a
// typo must not stop the data plane. Errors are for what the component cannot run without,
// such as a port already in use.
// ConfigDir is where this component's config-* ConfigMaps are mounted (Options.ConfigDir,
// else CONFIG_DIR, else DefaultConfigDir); other watchers of the same files (features) read
// them there.
func (o *Observability) ConfigDir() string { return o.opts.ConfigDir }

func Start(ctx context.Context, opts Options) (*Observability, error) {
	if opts.Component == "" {
		return nil, errors.New("observability: Options.Component is required")
	}
	if opts.ConfigDir == "" {
		opts.ConfigDir = os.Getenv(ConfigDirEnv)
	}
	if opts.ConfigDir == "" {
		opts.ConfigDir = DefaultConfigDir
	}
	if opts.PollInterval == 0 {
		opts.PollInterval = DefaultPollInterval
	}
	if opts.MetricsAddr == "" {
		opts.MetricsAddr = Addr(MetricsPort)
	}
	if opts.ProfilingAddr == "" {
		opts.ProfilingAddr = Addr(ProfilingPort)
	}
	if opts.Registry == nil {
		opts.Registry = NewRegistry()
	}

	o := &Observability{Registry: opts.Registry, opts: opts, applied: map[string]map[string]string{}}
	files, readErrs := o.readAll()

	// The logger comes first, so everything after it can report problems.
	lc, logErr := ParseLogging(files[ConfigLogging])
	o.Level = zap.NewAtomicLevelAt(levelFor(lc, opts.Component, opts.DefaultLogLevel))
	log, err := buildLogger(lc, opts.Component, o.Level, opts.LogWriter)
	if err != nil {
		logErr = errors.Join(logErr, err)
		lc = LoggingConfig{}
		log, _ = buildLogger(lc, opts.Component, o.Level, opts.LogWriter)
	}
	o.Log, o.logCfg = log, lc
	o.applied[ConfigLogging] = files[ConfigLogging]
	for _, err := range append(readErrs, logErr) {
		if err != nil {
			log.Error(err, "using defaults for invalid configuration")
		}
	}

	o.tracing = newTracing(opts.Component, log.WithName("tracing"), opts.SpanExporter)
	o.tracing.installGlobals()
	o.profiler = &profiler{addr: opts.ProfilingAddr, log: log.WithName("profiling")}
	for _, name := range []string{ConfigTracing, ConfigObservability} {
		if err := o.Apply(name, files[name]); err != nil {
			log.Error(err, "using defaults for invalid configuration", "configMap", name)
			o.applyDefaults(name, files[name])
		}
	}

	if !opts.DisableAdmin {
		o.Admin = &AdminServer{Addr: opts.MetricsAddr, Registry: opts.Registry, Log: log.WithName("admin")}
		if err := o.Admin.Start(); err != nil {
			_ = o.Shutdown(context.Background())
			return nil, err
		}
	}

	wctx, cancel := context.WithCancel(ctx)
	o.cancel = cancel
	if opts.PollInterval > 0 {
		o.watching.Go(func() { o.watch(wctx) })
	}
	return o, nil
}

// Apply applies one ConfigMap's data (name is ConfigTracing, ConfigObservability or
// ConfigLogging). The manager, which may read ConfigMaps through the API, calls it from its
// informer; data plane pods get it from the file watcher. Invalid data is an error and changes
// nothing, so the previous valid settings stay in force.
func (o *Observability) Apply(name string, data map[string]string) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	var err error
	switch name {
	case ConfigTracing:
		var c TracingConfig
		if c, err = ParseTracing(data); err == nil {
			err = o.tracing.apply(c)
		}
	case ConfigObservability:
		var c ObservabilityConfig
		if c, err = ParseObservability(data); err == nil {
			err = o.profiler.set(c.ProfilingEnabled)
		}
	case ConfigLogging:
		var c LoggingConfig
		if c, err = ParseLogging(data); err == nil {
			l := levelFor(c, o.opts.Component, o.opts.DefaultLogLevel)
			if l != o.Level.Level() {
				o.Log.Info("log level changed", "level", l.String())
				o.Level.SetLevel(l)
			}
			if c.ZapConfig != o.logCfg.ZapConfig {
				o.Log.Info("zap-logger-config changed: its level applies now, encoding and outputs on restart")
			}
			o.logCfg = c
		}
	default:
		return fmt.Errorf("observability: unknown ConfigMap %q", name)
	}
	if err != nil {
		return err
	}
	o.applied[name] = maps.Clone(data)
	return nil
}

// applyDefaults puts a ConfigMap's defaults in force after its data was found invalid at start.
func (o *Observability) applyDefaults(name string, invalid map[string]string) {
	if err := o.Apply(name, nil); err != nil {
		o.Log.Error(err, "applying default configuration", "configMap", name)
	}
	// Remember the invalid data as seen, so the watcher waits for it to change.
	o.mu.Lock()
	o.applied[name] = maps.Clone(invalid)
	o.mu.Unlock()
}

func (o *Observability) readAll() (map[string]map[string]string, []error) {
	files := map[string]map[string]string{}
	var errs []error
	for _, name := range []string{ConfigTracing, ConfigObservability, ConfigLogging} {
		data, err := ReadConfigDir(filepath.Join(o.opts.ConfigDir, name))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		files[name] = data
	}
	return files, errs
}

// watch re-reads the mounted ConfigMaps and applies those that changed. Polling, rather than
// inotify, is immune to kubelet's symlink swaps and to directories that appear late.
func (o *Observability) watch(ctx context.Context) {
	t := time.NewTicker(o.opts.PollInterval)
	defer t.Stop()
	reported := map[string]string{} // last error per ConfigMap, to log each problem once
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, name := range []string{ConfigTracing, ConfigObservability, ConfigLogging} {
			data, err := ReadConfigDir(filepath.Join(o.opts.ConfigDir, name))
			if err == nil {
				o.mu.Lock()
				same := maps.Equal(o.applied[name], data)
				o.mu.Unlock()
				if same {
					continue
				}
				if err = o.Apply(name, data); err == nil {
					o.Log.Info("configuration applied", "configMap", name)
					delete(reported, name)
					continue
				}
			}
			if reported[name] != err.Error() {
				reported[name] = err.Error()
				o.Log.Error(err, "keeping the previous configuration", "configMap", name)
			}
		}
	}
}

// ProfilingAddr is where pprof listens now, or "" while profiling is disabled.
func (o *Observability) ProfilingAddr() string { return o.profiler.address() }

// ForceFlush sends every ended span to the tracing backend now.
func (o *Observability) ForceFlush(ctx context.Context) error { return o.tracing.flush(ctx) }

// Shutdown stops watching, flushes spans, and stops the profiling and admin servers. Call it
// last, after the component stopped its own work, so its final spans are sent.
func (o *Observability) Shutdown(ctx context.Context) error {
	var err error
	o.stopOnce.Do(func() {
		if o.cancel != nil {
			o.cancel()
		}
		o.watching.Wait()
		err = errors.Join(
			o.tracing.shutdown(ctx),
			o.profiler.set(false),
		)
		if o.Admin != nil {
			err = errors.Join(err, o.Admin.Shutdown(ctx))
		}
		if s, ok := o.Log.GetSink().(interface{ GetUnderlying() *zap.Logger }); ok {
			_ = s.GetUnderlying().Sync() // stdout may not support fsync; nothing to do about it
		}
	})
	return err
}
