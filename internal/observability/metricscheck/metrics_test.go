package metricscheck

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/yaml"

	"github.com/kafkachannel/kafkachannel/dispatcher"
	"github.com/kafkachannel/kafkachannel/internal/observability"
	"github.com/kafkachannel/kafkachannel/receiver"

	// Registers controller-runtime's reconcile metrics, and whatever the controllers package
	// registers when it is loaded, on ctrlmetrics.Registry, as in the manager binary.
	_ "github.com/kafkachannel/kafkachannel/controllers"
)

// documentedOnly are manager metrics that no package registers when loaded (they may be
// registered in main or SetupWithManager); they are checked against docs/observability.md's
// list instead, with the labels documented there.
var documentedOnly = map[string][]string{
	"kafkachannel_channels": {"ready"},
}

// targetLabels are attached by Prometheus or the ServiceMonitors, not by the components.
var targetLabels = []string{"namespace", "pod", "service", "job", "instance", "container", "endpoint",
	"channel_namespace", "channel_name", "component", "le", "quantile"}

// exported maps each metric name the components register to its label names.
func exported(t *testing.T) map[string][]string {
	t.Helper()
	names := map[string][]string{}
	describe := func(c prometheus.Collector) {
		ch := make(chan *prometheus.Desc)
		go func() { c.Describe(ch); close(ch) }()
		for d := range ch {
			name, labels := parseDesc(t, d.String())
			names[name] = labels
		}
	}

	dreg := observability.NewRegistry()
	if _, err := dispatcher.New(dispatcher.Config{Brokers: []string{"127.0.0.1:1"}, ChannelNamespace: "ns", ChannelName: "ch", Registry: dreg}); err != nil {
		t.Fatalf("building a dispatcher: %v", err)
	}
	describe(dreg)
	rreg := observability.NewRegistry()
	if _, err := receiver.New(receiver.Config{Channels: receiver.NewIndex(), Writer: &kafka.Writer{Addr: kafka.TCP("127.0.0.1:1")}, Registry: rreg}); err != nil {
		t.Fatalf("building a receiver: %v", err)
	}
	describe(rreg)
	if c, ok := ctrlmetrics.Registry.(prometheus.Collector); ok {
		describe(c)
	} else {
		t.Fatalf("controller-runtime's registry %T cannot list its metrics", ctrlmetrics.Registry)
	}

	for name, labels := range documentedOnly {
		if _, ok := names[name]; ok {
			continue
		}
		t.Logf("%s is not registered by any package when loaded; checking it against the documented labels %v", name, labels)
		names[name] = labels
	}
	return names
}

var descRE = regexp.MustCompile(`fqName: "([^"]+)".*variableLabels: \{([^}]*)\}`)

func parseDesc(t *testing.T, s string) (string, []string) {
	m := descRE.FindStringSubmatch(s)
	if m == nil {
		t.Fatalf("cannot read metric descriptor %s", s)
	}
	var labels []string
	for _, l := range strings.Split(m[2], ",") {
		if l = strings.TrimSpace(l); l != "" {
			labels = append(labels, l)
		}
	}
	return m[1], labels
}

// selectorRE finds metric names of this project's families, with their label matchers if any.
var selectorRE = regexp.MustCompile(`\b((?:kafkachannel|eventing_kafka|controller_runtime|workqueue)_[a-zA-Z0-9_]+)(\{[^}]*\})?`)
var matcherRE = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)`)

// checkExpr reports metric names and matcher labels in a PromQL expression that no component exports.
func checkExpr(t *testing.T, where, expr string, names map[string][]string) int {
	t.Helper()
	found := 0
	for _, m := range selectorRE.FindAllStringSubmatch(expr, -1) {
		name := m[1]
		labels, ok := names[name]
		if !ok {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if base, cut := strings.CutSuffix(name, suffix); cut {
					if labels, ok = names[base]; ok {
						break
					}
				}
			}
		}
		if !ok {
			t.Errorf("%s uses %s, which no component exports (expr: %s)", where, name, expr)
			continue
		}
		found++
		for _, lm := range matcherRE.FindAllStringSubmatch(m[2], -1) {
			if !slices.Contains(labels, lm[1]) && !slices.Contains(targetLabels, lm[1]) {
				t.Errorf("%s selects %s by label %q, which it does not have (has %v)", where, name, lm[1], labels)
			}
		}
	}
	return found
}

func TestAlertsAndDashboardUseExportedMetrics(t *testing.T) {
	names := exported(t)
	for _, want := range []string{"eventing_kafka_consumed_msg_count", "kafkachannel_receiver_events_total", "controller_runtime_reconcile_total"} {
		if _, ok := names[want]; !ok {
			t.Fatalf("%s is not exported; the registries were not populated (have %d names)", want, len(names))
		}
	}

	raw, err := os.ReadFile("../../../config/prometheus/rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var rule struct {
		Spec struct {
			Groups []struct {
				Rules []struct {
					Alert string `json:"alert"`
					Expr  string `json:"expr"`
				} `json:"rules"`
			} `json:"groups"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(raw, &rule); err != nil {
		t.Fatalf("parsing rules.yaml: %v", err)
	}
	alerts := map[string]bool{}
	for _, g := range rule.Spec.Groups {
		for _, r := range g.Rules {
			if checkExpr(t, "alert "+r.Alert, r.Expr, names) == 0 {
				t.Errorf("alert %s uses none of the components' metrics: %s", r.Alert, r.Expr)
			}
			alerts[r.Alert] = true
		}
	}
	for _, want := range []string{"KafkaChannelSubscriberNotReady", "KafkaChannelConsumerLagGrowing", "KafkaChannelDeadLetterRate",
		"KafkaChannelEventsDiscarded", "KafkaChannelNotReady"} {
		if !alerts[want] {
			t.Errorf("rules.yaml lacks alert %s", want)
		}
	}

	raw, err = os.ReadFile("../../../config/grafana/kafkachannel-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name       string `json:"name"`
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("parsing the dashboard: %v", err)
	}
	used := map[string]bool{}
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			if checkExpr(t, "panel "+p.Title, tg.Expr, names) == 0 {
				t.Errorf("panel %q query uses none of the components' metrics: %s", p.Title, tg.Expr)
			}
			for _, m := range selectorRE.FindAllStringSubmatch(tg.Expr, -1) {
				used[strings.TrimSuffix(m[1], "_bucket")] = true
			}
		}
	}
	for _, v := range dash.Templating.List {
		if v.Definition != "" {
			checkExpr(t, "variable "+v.Name, v.Definition, names)
		}
	}
	// Every metric of the data plane is on the dashboard: a metric nobody looks at is a gap.
	var missing []string
	for name := range names {
		if (strings.HasPrefix(name, "kafkachannel_") || strings.HasPrefix(name, "eventing_kafka_")) && !used[name] {
			missing = append(missing, name)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("metrics not on the dashboard: %v", missing)
	}
}

// The receiver's metrics, as its admin server serves them after a request, parse and lint clean.
func TestReceiverScrapeLints(t *testing.T) {
	reg := observability.NewRegistry()
	r, err := receiver.New(receiver.Config{Channels: receiver.NewIndex(), Writer: &kafka.Writer{Addr: kafka.TCP("127.0.0.1:1")}, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	r.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "http://nowhere.default.svc.cluster.local/", strings.NewReader("{}")))
	admin := &observability.AdminServer{Addr: "127.0.0.1:0", Registry: reg}
	if err := admin.Start(); err != nil {
		t.Fatal(err)
	}
	defer admin.Shutdown(t.Context())
	lint(t, "receiver", "http://"+admin.Addr+"/metrics", "kafkachannel_receiver_events_total", "kafkachannel_receiver_request_duration_seconds")
}
