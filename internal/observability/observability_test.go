package observability

import (
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/twmb/franz-go/pkg/kfake"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap/zapcore"

	"github.com/kafkachannel/kafkachannel/environments/kafkatest"
	"github.com/kafkachannel/kafkachannel/internal/kafkaconn"
)

// A request whose caller sampled it is still not exported at sample-rate 0; once the mounted
// file says 1, spans flow without a restart.
func TestSampleRateZeroExportsNothingUntilRaisedLive(t *testing.T) {
	collector := newZipkinCollector(t)
	dir := t.TempDir()
	tracing := map[string]string{"backend": "zipkin", "zipkin-endpoint": collector.URL(), "sample-rate": "0"}
	writeConfigMap(t, dir, ConfigTracing, tracing)
	o := startForTest(t, Options{ConfigDir: dir})

	srv := httptest.NewServer(otelhttp.NewHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, span := otel.Tracer("test").Start(r.Context(), "produce")
		span.End()
		w.WriteHeader(http.StatusAccepted)
	}), "receive", otelhttp.WithSpanNameFormatter(operationName)))
	defer srv.Close()
	send := func(name, traceparent string) {
		ctx, root := otel.Tracer("test").Start(context.Background(), name)
		defer root.End()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL, nil)
		// A caller that sampled the trace.
		req.Header.Set("traceparent", traceparent)
		resp, err := http.DefaultClient.Do(req)
		mustf(t, err, "posting")
		resp.Body.Close()
	}
	const sampledAtRate0 = "0af7651916cd43dd8448eb211c80319c"
	send("at-rate-0", "00-"+sampledAtRate0+"-b7ad6b7169203331-01")
	mustf(t, o.ForceFlush(context.Background()), "flushing")

	tracing["sample-rate"] = "1"
	writeConfigMap(t, dir, ConfigTracing, tracing)
	eventually(t, 10*time.Second, "sample-rate 1 in force", func() bool {
		_, span := otel.Tracer("test").Start(context.Background(), "probe")
		defer span.End()
		return span.SpanContext().IsSampled()
	})
	send("at-rate-1", "00-1bf7651916cd43dd8448eb211c80319d-b7ad6b7169203331-01")
	mustf(t, o.ForceFlush(context.Background()), "flushing")
	var spans []zipkinSpan
	eventually(t, 10*time.Second, "spans sent at rate 1", func() bool {
		spans, _ = collector.get()
		for _, s := range spans {
			if s.Name == "receive" {
				return true
			}
		}
		return false
	})
	for _, s := range spans {
		if s.Name == "at-rate-0" || s.TraceID == sampledAtRate0 {
			t.Errorf("span %q (trace %s) was exported at sample-rate 0", s.Name, s.TraceID)
		}
	}
}

// pprof listens on the profiling port (after KAFKACHANNEL_PORT_MAP) only while the mounted
// config-observability says so, and follows rewrites of the file.
func TestProfilingToggledLive(t *testing.T) {
	port := freePort(t)
	t.Setenv(PortMapEnv, "8008="+strconv.Itoa(port))
	dir := t.TempDir()
	writeConfigMap(t, dir, ConfigObservability, map[string]string{"profiling.enable": "false", "metrics.backend-destination": "prometheus"})
	o, err := Start(context.Background(), Options{Component: ComponentDispatcher, ConfigDir: dir, MetricsAddr: "127.0.0.1:0", PollInterval: 50 * time.Millisecond})
	mustf(t, err, "Start")
	defer func() { mustf(t, o.Shutdown(context.Background()), "Shutdown") }()

	url := "http://127.0.0.1:" + strconv.Itoa(port) + "/debug/pprof/"
	answers := func() bool {
		c := http.Client{Timeout: 2 * time.Second}
		resp, err := c.Get(url)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode == http.StatusOK && strings.Contains(string(body), "goroutine")
	}
	if answers() {
		t.Fatal("pprof answers while profiling.enable is false")
	}
	for i, enabled := range []bool{true, false, true} {
		writeConfigMap(t, dir, ConfigObservability, map[string]string{"profiling.enable": strconv.FormatBool(enabled)})
		eventually(t, 10*time.Second, "pprof enabled="+strconv.FormatBool(enabled)+" (step "+strconv.Itoa(i)+")", func() bool {
			return answers() == enabled
		})
		if got := o.ProfilingAddr() != ""; got != enabled {
			t.Errorf("ProfilingAddr set = %v, want %v", got, enabled)
		}
	}
}

// Levels follow config-logging while running: loglevel.<component> first, else the level in
// zap-logger-config.
func TestLogLevelChangesLive(t *testing.T) {
	dir := t.TempDir()
	zapCfg := `{"level": "warn", "encoding": "json", "encoderConfig": {"messageKey": "msg", "levelKey": "level"}}`
	writeConfigMap(t, dir, ConfigLogging, map[string]string{"zap-logger-config": zapCfg, "loglevel.dispatcher": "info", "loglevel.receiver": "error"})
	var buf syncBuffer
	o := startForTest(t, Options{Component: ComponentDispatcher, ConfigDir: dir, LogWriter: &buf})

	o.Log.V(1).Info("debug line one")
	o.Log.Info("info line one")
	writeConfigMap(t, dir, ConfigLogging, map[string]string{"zap-logger-config": zapCfg, "loglevel.dispatcher": "debug"})
	eventually(t, 10*time.Second, "debug level", func() bool { return o.Level.Level() == zapcore.DebugLevel })
	o.Log.V(1).Info("debug line two")
	// Without its own key the component falls back to zap-logger-config's level.
	writeConfigMap(t, dir, ConfigLogging, map[string]string{"zap-logger-config": zapCfg})
	eventually(t, 10*time.Second, "warn level", func() bool { return o.Level.Level() == zapcore.WarnLevel })
	o.Log.Info("info line two")
	// An invalid level changes nothing.
	writeConfigMap(t, dir, ConfigLogging, map[string]string{"zap-logger-config": zapCfg, "loglevel.dispatcher": "loud"})
	eventually(t, 10*time.Second, "the invalid level reported", func() bool { return strings.Contains(buf.String(), `loglevel.dispatcher \"loud\"`) })
	if o.Level.Level() != zapcore.WarnLevel {
		t.Errorf("level %s after an invalid value, want warn kept", o.Level.Level())
	}

	out := buf.String()
	for line, want := range map[string]bool{"debug line one": false, "info line one": true, "debug line two": true, "info line two": false} {
		if strings.Contains(out, line) != want {
			t.Errorf("log has %q = %v, want %v; log:\n%s", line, !want, want, out)
		}
	}
}

// The admin server's scrape parses as the Prometheus text format and passes promlint.
func TestAdminScrapeParsesAndLints(t *testing.T) {
	reg := NewRegistry()
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kafkachannel_test_events_total", Help: "Events seen by the test."}, []string{"code"})
	reg.MustRegister(c)
	c.WithLabelValues("202").Inc()
	o := startForTest(t, Options{Registry: reg})
	o.Admin.AddReadinessCheck("test", func() error { return errors.New("not yet") })

	body := get(t, "http://"+o.Admin.Addr+"/metrics", http.StatusOK)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(body))
	mustf(t, err, "parsing the scrape")
	for _, name := range []string{"kafkachannel_test_events_total", "go_goroutines", "process_cpu_seconds_total"} {
		if families[name] == nil {
			t.Errorf("scrape lacks %s", name)
		}
	}
	problems, err := promlint.New(strings.NewReader(body)).Lint()
	mustf(t, err, "linting the scrape")
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	get(t, "http://"+o.Admin.Addr+"/healthz", http.StatusOK)
	if b := get(t, "http://"+o.Admin.Addr+"/readyz", http.StatusServiceUnavailable); !strings.Contains(b, "not yet") {
		t.Errorf("/readyz body %q lacks the failing check", b)
	}
}

func get(t *testing.T, url string, wantCode int) string {
	t.Helper()
	resp, err := http.Get(url)
	mustf(t, err, "GET %s", url)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != wantCode {
		t.Fatalf("GET %s: %d, want %d: %s", url, resp.StatusCode, wantCode, b)
	}
	return string(b)
}

// A debug-level run through everything that handles the Kafka Secret (parsing, the connection
// description, a failed SASL login explained) never writes the password.
func TestSecretsNeverLogged(t *testing.T) {
	if kafkatest.External() {
		t.Skip("needs the in-process broker's SASL users")
	}
	const right, wrong = "r1ght-Pa55word-xyz", "wr0ng-Pa55word-abc"
	k := kafkatest.Start(t, kfake.EnableSASL(), kfake.Superuser(kafkaconn.MechanismPlain, "admin", right))
	dir := t.TempDir()
	writeConfigMap(t, dir, ConfigLogging, map[string]string{"loglevel.dispatcher": "debug"})
	var buf syncBuffer
	o := startForTest(t, Options{Component: ComponentDispatcher, ConfigDir: dir, LogWriter: &buf})
	if !o.Log.V(1).Enabled() {
		t.Fatal("debug logging is not on")
	}
	log := o.Log.WithValues("channel", "default/orders")

	for _, password := range []string{right, wrong} {
		secret := map[string][]byte{kafkaconn.KeyBrokers: []byte(k.BootstrapServers()), kafkaconn.KeySASLMechanism: []byte(kafkaconn.MechanismPlain),
			kafkaconn.KeyUser: []byte("admin"), kafkaconn.KeyPassword: []byte(password)}
		cfg, err := kafkaconn.Parse(secret)
		mustf(t, err, "parsing the Secret")
		log.V(1).Info("kafka connection", "kafka", cfg, "hash", cfg.Hash())
		log.Info("kafka connection", "kafka", cfg.String())
		// Whole structs by reflection: kafka-go's PLAIN mechanism exports its Password field.
		log.V(1).Info("kafka connection by value", "kafka", *cfg, "sasl", cfg.SASL)
		log.WithValues("secret", map[string]any{"data": secret}).V(1).Info("the Secret's data")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		conn, err := cfg.Dialer().DialContext(ctx, "tcp", k.Brokers[0])
		cancel()
		if err == nil {
			_, err = conn.ReadPartitions()
			conn.Close()
		}
		if err = cfg.Explain(err); err != nil {
			log.V(1).Info("connecting to Kafka failed", "error", err.Error())
			log.Error(err, "connecting to Kafka failed")
		} else {
			log.V(1).Info("connected to Kafka")
		}
		// A Secret that does not parse reports which key is wrong, not its value.
		delete(secret, kafkaconn.KeyUser)
		if _, err := kafkaconn.Parse(secret); err != nil {
			log.Error(err, "invalid Kafka Secret")
		}
	}
	out := buf.String()
	if !strings.Contains(out, "connecting to Kafka failed") || !strings.Contains(out, "connected to Kafka") ||
		!strings.Contains(out, `"User":"admin"`) || !strings.Contains(out, redacted) {
		t.Fatalf("the run did not log what it should have:\n%s", out)
	}
	for _, p := range []string{right, wrong, base64.StdEncoding.EncodeToString([]byte(right)), base64.StdEncoding.EncodeToString([]byte(wrong))} {
		if strings.Contains(out, p) {
			t.Errorf("a password is in the log:\n%s", out)
		}
	}
}

func TestReadConfigDirFollowsAtomicWrites(t *testing.T) {
	root := t.TempDir()
	writeConfigMap(t, root, ConfigTracing, map[string]string{"backend": "zipkin", "sample-rate": "0.5"})
	got, err := ReadConfigDir(filepath.Join(root, ConfigTracing))
	mustf(t, err, "reading")
	if len(got) != 2 || got["backend"] != "zipkin" || got["sample-rate"] != "0.5" {
		t.Errorf("first version read as %v", got)
	}
	writeConfigMap(t, root, ConfigTracing, map[string]string{"backend": "none"})
	got, err = ReadConfigDir(filepath.Join(root, ConfigTracing))
	mustf(t, err, "reading")
	if len(got) != 1 || got["backend"] != "none" {
		t.Errorf("second version read as %v", got)
	}
	if got, err := ReadConfigDir(filepath.Join(root, "absent")); err != nil || got != nil {
		t.Errorf("missing directory: %v, %v; want no data and no error", got, err)
	}
	entries, _ := os.ReadDir(filepath.Join(root, ConfigTracing))
	if len(entries) != 3 { // ..data, the version directory, the key
		t.Errorf("layout has %d entries, want 3 (old versions removed)", len(entries))
	}
}

func TestParseConfigMaps(t *testing.T) {
	for _, tc := range []struct {
		name    string
		data    map[string]string
		want    TracingConfig
		wantErr string
	}{
		{name: "defaults", data: nil, want: TracingConfig{Backend: BackendNone, SampleRate: DefaultSampleRate}},
		{name: "zipkin", data: map[string]string{"backend": "zipkin", "zipkin-endpoint": "http://z:9411/api/v2/spans", "sample-rate": "0.5", "debug": "true"},
			want: TracingConfig{Backend: BackendZipkin, ZipkinEndpoint: "http://z:9411/api/v2/spans", SampleRate: 0.5, Debug: true}},
		{name: "otlp", data: map[string]string{"backend": "OTLP", "otlp-endpoint": "http://c:4318/v1/traces", "sample-rate": "0"},
			want: TracingConfig{Backend: BackendOTLP, OTLPEndpoint: "http://c:4318/v1/traces"}},
		{name: "zipkin without endpoint", data: map[string]string{"backend": "zipkin"}, wantErr: "needs zipkin-endpoint"},
		{name: "rate above 1", data: map[string]string{"sample-rate": "1.5"}, wantErr: "from 0 to 1"},
		{name: "unknown backend", data: map[string]string{"backend": "stackdriver"}, wantErr: "want none, zipkin or otlp"},
		{name: "debug not a bool", data: map[string]string{"debug": "yes please"}, wantErr: "true or false"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseTracing(tc.data)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
	if _, err := ParseObservability(map[string]string{"metrics.backend-destination": "opencensus"}); err == nil {
		t.Error("opencensus metrics backend accepted; only prometheus exists")
	}
	if c, err := ParseObservability(map[string]string{"profiling.enable": "true"}); err != nil || !c.ProfilingEnabled {
		t.Errorf("profiling.enable true: %+v, %v", c, err)
	}
	if _, err := ParseLogging(map[string]string{"zap-logger-config": "{not json"}); err == nil {
		t.Error("invalid zap-logger-config accepted")
	}
	if c, err := ParseLogging(map[string]string{"loglevel.receiver": "debug"}); err != nil || c.Levels["receiver"] != zapcore.DebugLevel {
		t.Errorf("loglevel.receiver debug: %+v, %v", c, err)
	}
}

// The manager feeds ConfigMaps it read through the API to Apply; invalid data keeps what was in force.
func TestApplyFromData(t *testing.T) {
	o := startForTest(t, Options{Component: ComponentController, PollInterval: -1})
	mustf(t, o.Apply(ConfigLogging, map[string]string{"loglevel.controller": "debug"}), "applying config-logging")
	if o.Level.Level() != zapcore.DebugLevel {
		t.Errorf("level %s, want debug", o.Level.Level())
	}
	mustf(t, o.Apply(ConfigTracing, map[string]string{"backend": "zipkin", "zipkin-endpoint": "http://127.0.0.1:1/api/v2/spans", "debug": "true"}), "applying config-tracing")
	if err := o.Apply(ConfigTracing, map[string]string{"backend": "jaeger"}); err == nil {
		t.Error("unknown backend applied")
	}
	_, span := otel.Tracer("test").Start(context.Background(), "probe")
	span.End()
	if !span.SpanContext().IsSampled() {
		t.Error("invalid config-tracing replaced the valid one (debug sampling lost)")
	}
	if !trace.SpanContextFromContext(context.Background()).Equal(trace.SpanContext{}) {
		t.Error("background context has a span")
	}
	if err := o.Apply("config-network", nil); err == nil {
		t.Error("unknown ConfigMap accepted")
	}
}
