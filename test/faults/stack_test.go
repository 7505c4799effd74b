package faults

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"github.com/twmb/franz-go/pkg/kfake"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/kafkachannel/kafkachannel/environments/envtestbin"
	"github.com/kafkachannel/kafkachannel/environments/kafkatest"
	"github.com/kafkachannel/kafkachannel/environments/localstack"
	"github.com/kafkachannel/kafkachannel/internal/kafkaconn"
)

// The suite's Kafka user; the password changes in the rotation scenario.
const (
	kafkaUser      = "kafkachannel"
	kafkaMechanism = kafkaconn.MechanismSCRAMSHA512
)

// full reports whether the whole suite runs (make test-faults), not only the quick part.
func full() bool { return os.Getenv("KAFKACHANNEL_FAULTS") == "full" }

func requireFull(t *testing.T) {
	t.Helper()
	if !full() {
		t.Skip("part of the full fault suite: KAFKACHANNEL_FAULTS=full (make test-faults)")
	}
}

// world is the stack shared by every scenario of the run: starting the API server, the manager
// and the receiver takes longer than most scenarios, and each scenario has its own channel.
type world struct {
	stack *localstack.Stack
	proxy *Proxy
	// Kafka is our own kfake behind the proxy: the stack uses it as an external cluster, so
	// the suite can restart it and cut the connection to it.
	kafkaMu   sync.Mutex
	kafka     *kfake.Cluster
	kafkaPort int
	kafkaDir  string
	password  string
	dir       string
}

var (
	worldOnce sync.Once
	shared    *world
	worldErr  error
)

// advertised makes kfake tell clients to connect to the proxy: Kafka clients connect to the
// addresses in metadata answers, not to their bootstrap address, so a proxy only in front of
// the bootstrap would be bypassed.
type advertised struct {
	net.Listener
	addr net.Addr
}

func (a advertised) Addr() net.Addr { return a.addr }

// startKafka (re)starts the broker on its fixed port with its data directory.
func (w *world) startKafka() error {
	proxyAddr, err := net.ResolveTCPAddr("tcp", w.proxy.Addr())
	if err != nil {
		return err
	}
	var c *kfake.Cluster
	// The port of a just-closed broker can take a moment to be free again.
	for i := 0; i < 50; i++ {
		c, err = kafkatest.NewCluster(
			kfake.Ports(w.kafkaPort), kfake.DataDir(w.kafkaDir),
			kfake.EnableSASL(), kfake.Superuser(kafkaMechanism, kafkaUser, w.password),
			kfake.ListenFn(func(network, address string) (net.Listener, error) {
				ln, err := net.Listen(network, address)
				if err != nil {
					return nil, err
				}
				return advertised{Listener: ln, addr: proxyAddr}, nil
			}),
		)
		if err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("starting kfake on port %d: %w", w.kafkaPort, err)
	}
	w.kafkaMu.Lock()
	w.kafka = c
	w.kafkaMu.Unlock()
	return nil
}

func (w *world) stopKafka() {
	w.kafkaMu.Lock()
	defer w.kafkaMu.Unlock()
	if w.kafka != nil {
		w.kafka.Close()
		w.kafka = nil
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// getWorld starts the shared stack on first use.
func getWorld(t *testing.T) *world {
	t.Helper()
	if testing.Short() {
		t.Skip("fault suite: needs kube-apiserver, etcd and the built binaries")
	}
	if os.Getenv("KAFKA_BOOTSTRAP_SERVERS") != "" {
		t.Skip("fault suite: needs the embedded Kafka (it restarts and cuts it)")
	}
	if apacheMode() {
		t.Skip("KAFKA=apache runs the scenarios on real brokers (TestApache*); this one is for the embedded Kafka")
	}
	envtestbin.Require(t)
	worldOnce.Do(func() { shared, worldErr = startWorld() })
	if worldErr != nil {
		t.Fatalf("starting the local stack: %v", worldErr)
	}
	return shared
}

func startWorld() (*world, error) {
	dir, err := os.MkdirTemp("", "kafkachannel-faults-")
	if err != nil {
		return nil, err
	}
	w := &world{dir: dir, kafkaDir: filepath.Join(dir, "kafka-data"), password: "first-password"}
	bin, err := buildBinaries(filepath.Join(dir, "bin"))
	if err != nil {
		return nil, err
	}
	if w.kafkaPort, err = freePort(); err != nil {
		return nil, err
	}
	if w.proxy, err = NewProxy("127.0.0.1:0", fmt.Sprintf("127.0.0.1:%d", w.kafkaPort)); err != nil {
		return nil, err
	}
	if err := w.startKafka(); err != nil {
		return nil, err
	}
	// The stack treats our broker as an external cluster reached through the proxy.
	for k, v := range map[string]string{
		"KAFKA_BOOTSTRAP_SERVERS": w.proxy.Addr(), "KAFKA_SASL_MECHANISM": kafkaMechanism,
		"KAFKA_USER": kafkaUser, "KAFKA_PASSWORD": w.password,
	} {
		_ = os.Setenv(k, v)
	}
	log := suiteLogger()
	ctrllog.SetLogger(log)
	w.stack, err = localstack.Start(context.Background(), localstack.Options{
		Dir: filepath.Join(dir, "stack"), BinDir: bin, Log: log,
		ManagerEnv: map[string]string{"TOPIC_DELETE_TIMEOUT": "30s"},
	})
	for _, k := range []string{"KAFKA_BOOTSTRAP_SERVERS", "KAFKA_SASL_MECHANISM", "KAFKA_USER", "KAFKA_PASSWORD"} {
		_ = os.Unsetenv(k)
	}
	if err != nil {
		w.stop()
		return nil, err
	}
	return w, nil
}

func (w *world) stop() {
	if w.stack != nil {
		w.stack.Stop()
	}
	if w.proxy != nil {
		w.proxy.Close()
	}
	w.stopKafka()
	if os.Getenv("KAFKACHANNEL_FAULTS_KEEP") == "" {
		_ = os.RemoveAll(w.dir)
	}
}

// suiteLogger keeps the stack's own logs out of the test output unless asked for: the
// scenario tables and failures are what a reader needs.
func suiteLogger() logr.Logger {
	if os.Getenv("KAFKACHANNEL_FAULTS_VERBOSE") == "" {
		return logr.Discard()
	}
	return funcr.New(func(prefix, args string) { fmt.Fprintln(os.Stderr, prefix, args) }, funcr.Options{})
}

func buildBinaries(dir string) (string, error) {
	repo, err := localstack.FindRepo()
	if err != nil {
		return "", err
	}
	for name, pkg := range map[string]string{"manager": ".", "dispatcher": "./cmd/dispatcher", "receiver": "./cmd/receiver"} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, name), pkg)
		cmd.Dir = repo
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
		}
	}
	return dir, nil
}

// result is one scenario's line of the table.
type result struct {
	Scenario   string
	Sent       int
	Delivered  int
	Duplicates int
	Lost       int
	Notes      string
	// Kafka is the Apache Kafka version of a scenario on real brokers, empty on kfake: such
	// rows go to their own table.
	Kafka string
	// AckGap and DeliveryGap are the longest stretches without a 202 and without a delivery
	// (real-broker scenarios).
	AckGap, DeliveryGap time.Duration
}

var (
	resultsMu sync.Mutex
	results   []result
)

func report(t *testing.T, r result) {
	t.Helper()
	t.Logf("%s: sent %d, delivered unique %d, duplicates %d, lost %d %s", r.Scenario, r.Sent, r.Delivered, r.Duplicates, r.Lost, r.Notes)
	resultsMu.Lock()
	results = append(results, r)
	resultsMu.Unlock()
}

func table(rs []result) string {
	var b strings.Builder
	if len(rs) > 0 && rs[0].Kafka != "" {
		fmt.Fprintf(&b, "| scenario | Kafka | sent (202) | delivered unique | duplicates | lost | longest gap without a 202 | longest gap without a delivery | delivery later by (at most %s) | notes |\n|---|---|---|---|---|---|---|---|---|---|\n", maxDeliveryLag)
		for _, r := range rs {
			lag := (r.DeliveryGap - r.AckGap).Round(100 * time.Millisecond)
			sign := "+"
			if lag < 0 {
				sign = ""
			}
			fmt.Fprintf(&b, "| %s | %s | %d | %d | %d | %d | %s | %s | %s%s | %s |\n", r.Scenario, r.Kafka, r.Sent, r.Delivered, r.Duplicates, r.Lost,
				r.AckGap.Round(100*time.Millisecond), r.DeliveryGap.Round(100*time.Millisecond), sign, lag, strings.ReplaceAll(r.Notes, "|", "\\|"))
		}
		return b.String()
	}
	b.WriteString("| scenario | sent (202) | delivered unique | duplicates | lost | notes |\n|---|---|---|---|---|---|\n")
	for _, r := range rs {
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %d | %s |\n", r.Scenario, r.Sent, r.Delivered, r.Duplicates, r.Lost, strings.ReplaceAll(r.Notes, "|", "\\|"))
	}
	return b.String()
}

// Markers in docs/reliability.md between which a run writes its table: one for the kfake
// scenarios, one for those on three Apache Kafka brokers.
const (
	beginMarker = "<!-- fault table: begin -->"
	endMarker   = "<!-- fault table: end -->"
)

// apacheMarkers delimit the table of the real-cluster scenarios on one Kafka version.
func apacheMarkers(version string) (begin, end string) {
	return "<!-- apache fault table " + version + ": begin -->", "<!-- apache fault table " + version + ": end -->"
}

// writeDoc replaces the table between beginMarker and endMarker in the document named by
// KAFKACHANNEL_FAULTS_DOC.
func writeDoc(path, beginMarker, endMarker string, rs []result, elapsed time.Duration, failed bool) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	doc := string(b)
	i, j := strings.Index(doc, beginMarker), strings.Index(doc, endMarker)
	if i < 0 || j < i {
		return fmt.Errorf("%s has no %q ... %q section", path, beginMarker, endMarker)
	}
	mode := "quick part (`go test ./test/faults`)"
	cmd := "go test ./test/faults -count=1 -v"
	if full() {
		mode = "full suite"
		cmd = "make test-faults"
	}
	if apacheMode() {
		mode = "three Apache Kafka brokers"
		cmd = "make test-faults KAFKA=apache KAFKA_BROKERS=3"
		if len(rs) > 0 {
			cmd += " KAFKA_VERSION=" + rs[0].Kafka
		}
	}
	status := "all scenarios passed"
	if failed {
		status = "SOME SCENARIOS FAILED (see the test output)"
	}
	section := fmt.Sprintf("%s\nLatest run: `%s` (%s), %s, took %s; %s; nproc %d, %s.\n\n%s%s",
		beginMarker, cmd, mode, time.Now().UTC().Format("2006-01-02 15:04 MST"), elapsed.Round(time.Second),
		status, runtime.NumCPU(), runtime.Version(), table(rs), endMarker)
	doc = doc[:i] + section + doc[j+len(endMarker):]
	return os.WriteFile(path, []byte(doc), 0o644)
}

func TestMain(m *testing.M) {
	start := time.Now()
	code := m.Run()
	if shared != nil {
		shared.stop()
	}
	if apacheShared != nil {
		apacheShared.stop()
	}
	resultsMu.Lock()
	var kfakeRows, apacheRows []result
	for _, r := range results {
		if r.Kafka != "" {
			apacheRows = append(apacheRows, r)
		} else {
			kfakeRows = append(kfakeRows, r)
		}
	}
	type part struct {
		rows       []result
		begin, end string
	}
	parts := []part{{kfakeRows, beginMarker, endMarker}}
	if len(apacheRows) > 0 {
		// One run is on one Kafka version: it rewrites that version's table only.
		b, e := apacheMarkers(apacheRows[0].Kafka)
		parts = append(parts, part{apacheRows, b, e})
	}
	for _, part := range parts {
		if len(part.rows) == 0 {
			continue
		}
		fmt.Printf("\nfault suite results:\n%s", table(part.rows))
		if path := os.Getenv("KAFKACHANNEL_FAULTS_DOC"); path != "" {
			if err := writeDoc(path, part.begin, part.end, part.rows, time.Since(start), code != 0); err != nil {
				fmt.Fprintln(os.Stderr, "writing", path, ":", err)
			}
		}
	}
	resultsMu.Unlock()
	os.Exit(code)
}
