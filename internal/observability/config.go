package observability

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"go.uber.org/zap/zapcore"
)

// Names of the Knative ConfigMaps this package reads. In data plane pods they are mounted as
// directories (one file per key) under ConfigDirEnv; the manager may read them through the API
// and pass their data to Observability.Apply.
const (
	ConfigTracing       = "config-tracing"
	ConfigObservability = "config-observability"
	ConfigLogging       = "config-logging"
)

// ConfigDirEnv names the directory that holds one sub-directory per ConfigMap.
const ConfigDirEnv = "CONFIG_DIR"

// DefaultConfigDir is where the manager mounts the ConfigMaps into data plane pods.
const DefaultConfigDir = "/etc/config"

// Components, as config-logging's loglevel.<component> keys name them.
const (
	ComponentController = "controller"
	ComponentDispatcher = "dispatcher"
	ComponentReceiver   = "receiver"
)

// Tracing backends of config-tracing's "backend" key.
const (
	BackendNone   = "none"
	BackendZipkin = "zipkin"
	BackendOTLP   = "otlp"
)

// DefaultSampleRate is Knative's default for config-tracing's sample-rate.
const DefaultSampleRate = 0.1

// TracingConfig is config-tracing.
type TracingConfig struct {
	// Backend is BackendNone, BackendZipkin or BackendOTLP.
	Backend string
	// ZipkinEndpoint is the Zipkin v2 JSON spans URL, e.g. http://zipkin:9411/api/v2/spans.
	ZipkinEndpoint string
	// OTLPEndpoint is the OTLP/HTTP traces URL, e.g. http://otel-collector:4318/v1/traces.
	OTLPEndpoint string
	// SampleRate is the fraction of new traces that are sampled, 0 to 1.
	SampleRate float64
	// Debug samples every trace, whatever SampleRate says.
	Debug bool
}

// ParseTracing reads config-tracing's data. Missing keys take Knative's defaults; an invalid
// value is an error, so a typo is reported rather than silently turning tracing off.
func ParseTracing(data map[string]string) (TracingConfig, error) {
	c := TracingConfig{Backend: BackendNone, SampleRate: DefaultSampleRate}
	if v := strings.TrimSpace(data["backend"]); v != "" {
		c.Backend = strings.ToLower(v)
	}
	c.ZipkinEndpoint = strings.TrimSpace(data["zipkin-endpoint"])
	c.OTLPEndpoint = strings.TrimSpace(data["otlp-endpoint"])
	var errs []error
	if v := strings.TrimSpace(data["sample-rate"]); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f < 0 || f > 1 {
			errs = append(errs, fmt.Errorf("sample-rate %q: want a number from 0 to 1", v))
		} else {
			c.SampleRate = f
		}
	}
	if v := strings.TrimSpace(data["debug"]); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("debug %q: want true or false", v))
		}
		c.Debug = b
	}
	switch c.Backend {
	case BackendNone:
	case BackendZipkin:
		if c.ZipkinEndpoint == "" {
			errs = append(errs, errors.New("backend zipkin needs zipkin-endpoint"))
		}
	case BackendOTLP:
		if c.OTLPEndpoint == "" {
			errs = append(errs, errors.New("backend otlp needs otlp-endpoint"))
		}
	default:
		errs = append(errs, fmt.Errorf("backend %q: want none, zipkin or otlp", c.Backend))
	}
	if err := errors.Join(errs...); err != nil {
		return TracingConfig{}, fmt.Errorf("parsing %s: %w", ConfigTracing, err)
	}
	return c, nil
}

// ObservabilityConfig is config-observability.
type ObservabilityConfig struct {
	// ProfilingEnabled serves /debug/pprof on ProfilingPort.
	ProfilingEnabled bool
	// MetricsBackend is always "prometheus": the only backend, scraped on MetricsPort.
	MetricsBackend string
}

// ParseObservability reads config-observability's data.
func ParseObservability(data map[string]string) (ObservabilityConfig, error) {
	c := ObservabilityConfig{MetricsBackend: "prometheus"}
	var errs []error
	if v := strings.TrimSpace(data["profiling.enable"]); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("profiling.enable %q: want true or false", v))
		}
		c.ProfilingEnabled = b
	}
	if v := strings.ToLower(strings.TrimSpace(data["metrics.backend-destination"])); v != "" && v != "prometheus" {
		errs = append(errs, fmt.Errorf("metrics.backend-destination %q: only prometheus is supported", v))
	}
	if err := errors.Join(errs...); err != nil {
		return ObservabilityConfig{}, fmt.Errorf("parsing %s: %w", ConfigObservability, err)
	}
	return c, nil
}

// LoggingConfig is config-logging.
type LoggingConfig struct {
	// ZapConfig is zap-logger-config: a JSON zap.Config. Empty means the built-in JSON config.
	ZapConfig string
	// Levels are the loglevel.<component> keys.
	Levels map[string]zapcore.Level
}

// ParseLogging reads config-logging's data.
func ParseLogging(data map[string]string) (LoggingConfig, error) {
	c := LoggingConfig{ZapConfig: strings.TrimSpace(data["zap-logger-config"]), Levels: map[string]zapcore.Level{}}
	var errs []error
	for k, v := range data {
		comp, ok := strings.CutPrefix(k, "loglevel.")
		if !ok || strings.TrimSpace(v) == "" {
			continue
		}
		l, err := zapcore.ParseLevel(strings.TrimSpace(v))
		if err != nil {
			errs = append(errs, fmt.Errorf("%s %q: want debug, info, warn, error, dpanic, panic or fatal", k, v))
			continue
		}
		c.Levels[comp] = l
	}
	if c.ZapConfig != "" {
		if _, err := parseZapConfig(c.ZapConfig); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return LoggingConfig{}, fmt.Errorf("parsing %s: %w", ConfigLogging, err)
	}
	return c, nil
}

// ReadConfigDir reads a ConfigMap mounted as a directory: one file per key. kubelet's atomic
// writer keeps the real files in a hidden timestamped directory and swaps the "..data" symlink;
// the visible names are symlinks through it, so reading them always sees one consistent version.
// Hidden entries (starting with ".") are its bookkeeping and are skipped. A missing directory is
// no error: it reads as no data, and every key takes its default.
func ReadConfigDir(dir string) (map[string]string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading config directory %s: %w", dir, err)
	}
	data := map[string]string{}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			continue
		}
		p := filepath.Join(dir, e.Name())
		st, err := os.Stat(p) // follows the symlink to see what it points at
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue // swapped away between listing and reading; the next poll sees the new version
			}
			return nil, fmt.Errorf("reading config key %s: %w", p, err)
		}
		if st.IsDir() {
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return nil, fmt.Errorf("reading config key %s: %w", p, err)
		}
		data[e.Name()] = string(b)
	}
	return data, nil
}
