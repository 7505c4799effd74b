package localstack

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/twmb/franz-go/pkg/kfake"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/kafkachannel/kafkachannel/api/v1alpha1"
	v1beta1 "github.com/kafkachannel/kafkachannel/api/v1beta1"
	"github.com/kafkachannel/kafkachannel/environments/apachekafka"
	"github.com/kafkachannel/kafkachannel/environments/envtestbin"
	"github.com/kafkachannel/kafkachannel/environments/kafkatest"
	"github.com/kafkachannel/kafkachannel/environments/proc"
	"github.com/kafkachannel/kafkachannel/internal/kafkaconn"
)

// Defaults of the stack.
const (
	DefaultOperatorNamespace = "knative-eventing"
	KafkaSecretName          = "kafka-secret"
)

// Options configure a stack.
type Options struct {
	// Dir holds the stack's state: kubeconfig, env, pods, logs, pod directories, Kafka data.
	Dir string
	// BinDir holds manager, dispatcher and receiver.
	BinDir string
	// RepoDir is the repository root (for config/crd/bases); found from the working directory
	// when empty.
	RepoDir string
	// KafkaPort is the embedded Kafka's port, 0 for any free port.
	KafkaPort int
	// KafkaPersist keeps the embedded Kafka's data under Dir/kafka across runs.
	KafkaPersist bool
	// Apache, when set, runs real Apache Kafka brokers (environments/apachekafka) instead of the
	// embedded kfake: a new cluster per Start, its nodes under Dir/kafka-apache unless
	// Apache.Dir says otherwise. ApacheFromEnv reads it from KAFKA=apache.
	Apache *apachekafka.Options
	// ReceiverPort is where the receiver Service is exposed on 127.0.0.1, 0 for any free port.
	ReceiverPort int
	// OperatorNamespace defaults to knative-eventing.
	OperatorNamespace string
	// ManagerEnv is added to the manager's environment (e.g. DISPATCHER_REPLICAS).
	ManagerEnv map[string]string
	// ManagerArgs are added to the manager's command line (e.g. --pprof-bind-address).
	ManagerArgs []string
	// FakeComponents are the components whose pods the local node marks Ready without running
	// them (Node.FakeComponents); empty: LOCALSTACK_FAKE_PODS, comma-separated.
	FakeComponents []string
	// Log receives the stack's own logs.
	Log logr.Logger
}

// Stack is a running local system.
type Stack struct {
	Opts Options
	// Config and Client reach the API server as an administrator.
	Config *rest.Config
	Client client.Client
	// Kubeconfig is the path of a kubeconfig file for kubectl and the processes.
	Kubeconfig string
	// Brokers are Kafka's bootstrap servers; Kafka is nil for an external cluster.
	Brokers []string
	Kafka   *kfake.Cluster
	// Apache is the real Apache Kafka cluster when Options.Apache asked for one.
	Apache *apachekafka.Cluster
	// KafkaSecret is the data of the Kafka Secret the stack applied.
	KafkaSecret map[string][]byte
	// ReceiverURL is the base URL of the receiver Service: channels at ReceiverURL/<ns>/<name>.
	ReceiverURL string
	// ReceiverTLSURL is the receiver Service's https port on 127.0.0.1; its certificate is
	// signed by the CA in ReceiverCAFile.
	ReceiverTLSURL string
	Node           *Node

	env            *envtest.Environment
	cancelNode     context.CancelFunc
	proxy          *http.Server
	tlsProxy       *tlsPassthrough
	managerMu      sync.Mutex
	manager        *supervised
	managerEnv     map[string]string
	managerMetrics string
}

// ErrUsage marks errors a user fixes by doing something (the message says what).
var ErrUsage = errors.New("")

func usageErr(format string, args ...any) error {
	return fmt.Errorf("%w"+format, append([]any{ErrUsage}, args...)...)
}

// Start brings the whole stack up: API server, Kafka, configuration, local node, receiver
// Service, manager. On error everything started so far is stopped again.
func Start(ctx context.Context, o Options) (s *Stack, err error) {
	if o.OperatorNamespace == "" {
		o.OperatorNamespace = DefaultOperatorNamespace
	}
	if o.RepoDir == "" {
		if o.RepoDir, err = FindRepo(); err != nil {
			return nil, err
		}
	}
	if o.Dir, err = filepath.Abs(o.Dir); err != nil {
		return nil, err
	}
	if o.BinDir, err = filepath.Abs(o.BinDir); err != nil {
		return nil, err
	}
	for _, b := range []string{"manager", "dispatcher", "receiver"} {
		if _, err := os.Stat(filepath.Join(o.BinDir, b)); err != nil {
			return nil, usageErr("%s is missing: run `make build` first", filepath.Join(o.BinDir, b))
		}
	}
	if err := claimDir(o.Dir); err != nil {
		return nil, err
	}
	if len(o.FakeComponents) == 0 {
		for _, c := range strings.Split(os.Getenv("LOCALSTACK_FAKE_PODS"), ",") {
			if c = strings.TrimSpace(c); c != "" {
				o.FakeComponents = append(o.FakeComponents, c)
			}
		}
	}
	s = &Stack{Opts: o, managerEnv: map[string]string{}}
	for k, v := range o.ManagerEnv {
		s.managerEnv[k] = v
	}
	defer func() {
		if err != nil {
			s.Stop()
			s = nil
		}
	}()
	if err := s.startKafka(ctx); err != nil {
		return s, err
	}
	if err := s.startAPIServer(); err != nil {
		return s, err
	}
	if err := s.applyConfig(ctx); err != nil {
		return s, err
	}
	if err := s.applyReceiverTLS(ctx); err != nil {
		return s, err
	}
	nodeCtx, cancel := context.WithCancel(context.Background())
	s.cancelNode = cancel
	s.Node = &Node{
		Config: s.Config, Namespace: o.OperatorNamespace, BinDir: o.BinDir, Dir: o.Dir,
		Kubeconfig: s.Kubeconfig, PodsFile: filepath.Join(o.Dir, "pods"), Log: o.Log.WithName("node"),
		FakeComponents: o.FakeComponents,
	}
	if err := s.Node.Start(nodeCtx); err != nil {
		return s, err
	}
	if err := s.startReceiverProxy(); err != nil {
		return s, err
	}
	if err := s.startReceiverTLSProxy(); err != nil {
		return s, err
	}
	if err := s.startManager(ctx); err != nil {
		return s, err
	}
	return s, s.WriteEnv(false)
}

// FindRepo walks up from the working directory to the repository root (config/crd/bases).
func FindRepo() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "config", "crd", "bases")); err == nil {
			if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
				return d, nil
			}
		}
		if filepath.Dir(d) == d {
			return "", usageErr("no config/crd/bases above %s: run from the repository's clone", dir)
		}
	}
}

// EnvtestAssets is where kube-apiserver and etcd are: KUBEBUILDER_ASSETS, else the place
// `make envtest` builds them below the Makefile's cache directory.
func EnvtestAssets() string {
	return envtestbin.Dir()
}

// claimDir makes Dir this stack's: it refuses while another stack runs there and clears what a
// crashed run left (the Kafka data stays).
func claimDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	pidFile := filepath.Join(dir, "stack.pid")
	if b, err := os.ReadFile(pidFile); err == nil {
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		if pid > 0 && pid != os.Getpid() && syscall.Kill(pid, 0) == nil {
			cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			if len(cmdline) == 0 || bytes.Contains(cmdline, []byte("localstack")) || bytes.Contains(cmdline, []byte(".test")) {
				return usageErr("another local stack (pid %d) is running in %s: stop it with Ctrl-C in its terminal or `kill %d`, or use another --dir", pid, dir, pid)
			}
		}
	}
	// A previous run that did not shut down cleanly: its pods, env and logs describe nothing.
	for _, stale := range []string{"pods", "run", "env", "kubeconfig", "logs"} {
		_ = os.RemoveAll(filepath.Join(dir, stale))
	}
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o755); err != nil {
		return err
	}
	return os.WriteFile(pidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644)
}

// checkPortFree explains a taken port before a component fails on it in a less clear way.
func checkPortFree(port int, what, flag string) error {
	if port == 0 {
		return nil
	}
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return usageErr("port %d for %s is in use (a demo still running? `ss -ltnp 'sport = :%d'` shows who): stop that process or pick another port with %s", port, what, port, flag)
	}
	return l.Close()
}

// ApacheFromEnv reads the Kafka the stack should run from the environment: KAFKA=apache asks for
// real Apache Kafka brokers (see ApacheOptionsFromEnv); KAFKA unset or kfake means the embedded
// kfake (nil).
func ApacheFromEnv() (*apachekafka.Options, error) {
	switch k := os.Getenv("KAFKA"); k {
	case "", "kfake":
		return nil, nil
	case "apache":
		return ApacheOptionsFromEnv()
	default:
		return nil, usageErr("KAFKA=%s: use KAFKA=apache for real Apache Kafka brokers, or kfake (the default) for the embedded one", k)
	}
}

// ApacheOptionsFromEnv reads KAFKA_VERSION (default the newest 4.x) and KAFKA_BROKERS (1, the
// default, or 3).
func ApacheOptionsFromEnv() (*apachekafka.Options, error) {
	o := &apachekafka.Options{Version: os.Getenv("KAFKA_VERSION"), Brokers: 1}
	if o.Version == "" {
		o.Version = apachekafka.DefaultVersion
	}
	if b := os.Getenv("KAFKA_BROKERS"); b != "" {
		n, err := strconv.Atoi(b)
		if err != nil || (n != 1 && n != 3) {
			return nil, usageErr("KAFKA_BROKERS=%s: 1 or 3", b)
		}
		o.Brokers = n
	}
	return o, nil
}

func (s *Stack) startKafka(ctx context.Context) error {
	if s.Opts.Apache != nil {
		return s.startApacheKafka(ctx)
	}
	if ext := os.Getenv("KAFKA_BOOTSTRAP_SERVERS"); ext != "" {
		s.Brokers = strings.Split(ext, ",")
		data, err := secretFromEnv(ext)
		if err != nil {
			return err
		}
		s.KafkaSecret = data
		s.Opts.Log.Info("using the Kafka cluster of KAFKA_BOOTSTRAP_SERVERS", "brokers", ext)
		return nil
	}
	if err := checkPortFree(s.Opts.KafkaPort, "Kafka", "--kafka-port (or set KAFKA_BOOTSTRAP_SERVERS to use that Kafka)"); err != nil {
		return err
	}
	var opts []kfake.Opt
	if s.Opts.KafkaPort != 0 {
		opts = append(opts, kfake.Ports(s.Opts.KafkaPort))
	}
	// Offsets of groups whose members died (a SIGKILLed dispatcher) are kept; the minimum session
	// timeout stays low so a replacement rejoins quickly.
	if s.Opts.KafkaPersist {
		dataDir := filepath.Join(s.Opts.Dir, "kafka")
		opts = append(opts, kfake.DataDir(dataDir))
	}
	c, err := kafkatest.NewCluster(opts...)
	if err != nil {
		if s.Opts.KafkaPersist {
			return usageErr("starting the embedded Kafka with the data of a previous run in %s failed (%v): remove it with `rm -rf %s` (its topics and records are lost)",
				filepath.Join(s.Opts.Dir, "kafka"), err, filepath.Join(s.Opts.Dir, "kafka"))
		}
		return fmt.Errorf("starting the embedded Kafka: %w", err)
	}
	s.Kafka = c
	s.Brokers = c.ListenAddrs()
	s.KafkaSecret = map[string][]byte{kafkaconn.KeyBrokers: []byte(strings.Join(s.Brokers, ","))}
	return nil
}

func (s *Stack) startApacheKafka(ctx context.Context) error {
	if os.Getenv("KAFKA_BOOTSTRAP_SERVERS") != "" {
		return usageErr("KAFKA=apache starts its own Kafka, and KAFKA_BOOTSTRAP_SERVERS names another: unset one of them")
	}
	o := *s.Opts.Apache
	if o.Version == "" {
		o.Version = apachekafka.DefaultVersion
	}
	if o.Dir == "" {
		o.Dir = filepath.Join(s.Opts.Dir, "kafka-apache")
	}
	if o.Log.GetSink() == nil {
		o.Log = s.Opts.Log.WithName("apachekafka")
	}
	home, err := apachekafka.EnsureDist(ctx, o.Version, os.Stderr)
	if errors.Is(err, apachekafka.ErrNoJava) {
		return usageErr("%v", err)
	}
	if err != nil {
		return err
	}
	o.Home = home
	s.Opts.Log.Info("starting Apache Kafka", "version", o.Version, "brokers", o.Brokers, "dir", o.Dir)
	c, err := apachekafka.Start(ctx, o)
	if err != nil {
		return fmt.Errorf("starting Apache Kafka %s: %w", o.Version, err)
	}
	s.Apache = c
	s.Brokers = c.Brokers()
	s.KafkaSecret = map[string][]byte{kafkaconn.KeyBrokers: []byte(c.BootstrapServers())}
	return nil
}

// secretFromEnv fills the Kafka Secret from KAFKA_* variables, for a real cluster.
func secretFromEnv(brokers string) (map[string][]byte, error) {
	data := map[string][]byte{kafkaconn.KeyBrokers: []byte(brokers)}
	for env, k := range map[string]string{
		"KAFKA_PROTOCOL": kafkaconn.KeyProtocol, "KAFKA_SASL_MECHANISM": kafkaconn.KeySASLMechanism,
		"KAFKA_USER": kafkaconn.KeyUser, "KAFKA_PASSWORD": kafkaconn.KeyPassword,
	} {
		if v := os.Getenv(env); v != "" {
			data[k] = []byte(v)
		}
	}
	if f := os.Getenv("KAFKA_CA_FILE"); f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, usageErr("KAFKA_CA_FILE: %v", err)
		}
		data[kafkaconn.KeyCACert] = b
	}
	if _, err := kafkaconn.Parse(data); err != nil {
		return nil, usageErr("the KAFKA_* variables do not make a valid Kafka Secret: %v", err)
	}
	return data, nil
}

// Scheme knows the types the stack and its users read and write.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	_ = corev1.AddToScheme(s)
	_ = appsv1.AddToScheme(s)
	_ = v1beta1.AddToScheme(s)
	_ = v1alpha1.AddToScheme(s)
	return s
}

func (s *Stack) startAPIServer() error {
	assets := EnvtestAssets()
	if _, err := os.Stat(filepath.Join(assets, "kube-apiserver")); err != nil {
		return usageErr("kube-apiserver is not in %s: run `make envtest` (it builds kube-apiserver and etcd once), or set KUBEBUILDER_ASSETS", assets)
	}
	s.env = &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join(s.Opts.RepoDir, "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		BinaryAssetsDirectory: assets,
		Scheme:                Scheme(),
	}
	// envtest's default service range is a /24: every channel's metrics Service takes a
	// ClusterIP, so more than ~250 channels would fail with "range is full" where a real
	// cluster (a /12 by default) would not.
	s.env.ControlPlane.GetAPIServer().Configure().Set("service-cluster-ip-range", "10.0.0.0/16")
	s.Opts.Log.Info("starting kube-apiserver and etcd", "assets", assets)
	cfg, err := s.env.Start()
	if err != nil {
		return fmt.Errorf("starting kube-apiserver and etcd from %s: %w", assets, err)
	}
	user, err := s.env.AddUser(envtest.User{Name: "kafkachannel-admin", Groups: []string{"system:masters"}}, cfg)
	if err != nil {
		return fmt.Errorf("adding the admin user: %w", err)
	}
	s.Config = user.Config()
	kc, err := user.KubeConfig()
	if err != nil {
		return fmt.Errorf("writing the kubeconfig: %w", err)
	}
	s.Kubeconfig = filepath.Join(s.Opts.Dir, "kubeconfig")
	if err := os.WriteFile(s.Kubeconfig, kc, 0o600); err != nil {
		return fmt.Errorf("writing the kubeconfig: %w", err)
	}
	s.Client, err = client.New(s.Config, client.Options{Scheme: Scheme()})
	if err != nil {
		return fmt.Errorf("creating a client: %w", err)
	}
	return nil
}

// DefaultConfigMaps are the data-plane ConfigMaps the stack applies, in Knative's formats.
func DefaultConfigMaps() map[string]map[string]string {
	return map[string]map[string]string{
		"config-tracing": {"backend": "none", "sample-rate": "0.1", "debug": "false"},
		"config-observability": {
			"profiling.enable":            "false",
			"metrics.backend-destination": "prometheus",
		},
		"config-logging": {
			"zap-logger-config":   `{"level": "info", "development": false, "outputPaths": ["stdout"], "errorOutputPaths": ["stderr"], "encoding": "json", "encoderConfig": {"timeKey": "ts", "levelKey": "level", "nameKey": "logger", "callerKey": "caller", "messageKey": "msg", "stacktraceKey": "stacktrace", "lineEnding": "", "levelEncoder": "", "timeEncoder": "iso8601", "durationEncoder": "", "callerEncoder": ""}}`,
			"loglevel.controller": "info",
			"loglevel.dispatcher": "info",
			"loglevel.receiver":   "info",
		},
	}
}

func (s *Stack) applyConfig(ctx context.Context) error {
	ns := s.Opts.OperatorNamespace
	objs := []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: KafkaSecretName, Namespace: ns}, Data: s.KafkaSecret},
	}
	for name, data := range DefaultConfigMaps() {
		objs = append(objs, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Data: data})
	}
	for _, o := range objs {
		if err := s.Client.Create(ctx, o); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("applying %T %s: %w", o, o.GetName(), err)
		}
	}
	return nil
}

// startReceiverProxy stands in for the receiver Service: a reverse proxy that spreads requests
// over the ready replicas of the shared receiver.
func (s *Stack) startReceiverProxy() error {
	if err := checkPortFree(s.Opts.ReceiverPort, "the receiver", "--receiver-port"); err != nil {
		return err
	}
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", s.Opts.ReceiverPort))
	if err != nil {
		return fmt.Errorf("listening for the receiver Service: %w", err)
	}
	s.ReceiverURL = "http://" + l.Addr().String()
	s.proxy = &http.Server{Handler: newServiceProxy(s.Node, receiverDeployment), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = s.proxy.Serve(l) }()
	return nil
}

// ManagerEnv is the manager's environment: the stack's settings, then what RestartManager set.
func (s *Stack) ManagerEnv() []string {
	env := []string{
		"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"),
		"KUBECONFIG=" + s.Kubeconfig,
		"OPERATOR_NAMESPACE=" + s.Opts.OperatorNamespace,
		"KAFKA_SECRET_NAME=" + KafkaSecretName,
		// Images mean nothing to the local node (it runs the containers' commands from bin/),
		// but they show in the Deployments, so they say where they come from.
		"DISPATCHER_IMAGE=localstack/kafkachannel-dispatcher:dev",
		"RECEIVER_IMAGE=localstack/kafkachannel-receiver:dev",
	}
	s.managerMu.Lock()
	defer s.managerMu.Unlock()
	for k, v := range s.managerEnv {
		env = append(env, k+"="+v)
	}
	return env
}

func (s *Stack) startManager(ctx context.Context) error {
	metrics, err := proc.FreePort()
	if err != nil {
		return err
	}
	health, err := proc.FreePort()
	if err != nil {
		return err
	}
	args := []string{
		"--leader-elect=false",
		// Plain http on localhost: ManagerMetricsURL is read without a token (the default,
		// --metrics-secure, serves https to authorized callers only).
		fmt.Sprintf("--metrics-bind-address=127.0.0.1:%d", metrics), "--metrics-secure=false",
		fmt.Sprintf("--health-probe-bind-address=127.0.0.1:%d", health),
	}
	args = append(args, s.Opts.ManagerArgs...)
	logFile := filepath.Join(s.Opts.Dir, "logs", "manager.log")
	m := &supervised{
		name: "manager", argv: append([]string{filepath.Join(s.Opts.BinDir, "manager")}, args...),
		env: s.ManagerEnv(), logFile: logFile, log: s.Opts.Log.WithName("manager"),
	}
	m.start()
	s.managerMu.Lock()
	s.manager = m
	s.managerMetrics = fmt.Sprintf("http://127.0.0.1:%d/metrics", metrics)
	s.managerMu.Unlock()
	// The manager is up when its readiness endpoint answers.
	url := fmt.Sprintf("http://127.0.0.1:%d/readyz", health)
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if m.exits() > 2 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("the manager did not become ready (%s); its log %s ends with:\n%s", url, logFile, proc.Tail(logFile, 20))
}

// RestartManager stops the manager and starts it again with env added to its environment, the
// way a changed manager Deployment rolls its pod.
func (s *Stack) RestartManager(ctx context.Context, env map[string]string) error {
	s.managerMu.Lock()
	m := s.manager
	for k, v := range env {
		s.managerEnv[k] = v
	}
	s.managerMu.Unlock()
	if m != nil {
		m.stop()
	}
	if err := s.startManager(ctx); err != nil {
		return err
	}
	return s.WriteEnv(false)
}

// ManagerMetricsURL is the running manager's Prometheus endpoint.
func (s *Stack) ManagerMetricsURL() string {
	s.managerMu.Lock()
	defer s.managerMu.Unlock()
	return s.managerMetrics
}

// ManagerPID is the manager process's id (the last one started), 0 before it started.
func (s *Stack) ManagerPID() int {
	s.managerMu.Lock()
	m := s.manager
	s.managerMu.Unlock()
	if m == nil {
		return 0
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd == nil || m.cmd.Process == nil {
		return 0
	}
	return m.cmd.Process.Pid
}

// ManagerLog is the manager's log file.
func (s *Stack) ManagerLog() string { return filepath.Join(s.Opts.Dir, "logs", "manager.log") }

// EnvFile is the path of the sourceable env file.
func (s *Stack) EnvFile() string { return filepath.Join(s.Opts.Dir, "env") }

// WriteEnv writes Dir/env: KEY=value lines a shell can source, READY=1 last when ready.
func (s *Stack) WriteEnv(ready bool) error {
	var b strings.Builder
	fmt.Fprintf(&b, "KUBECONFIG=%s\n", s.Kubeconfig)
	fmt.Fprintf(&b, "KAFKA_BOOTSTRAP_SERVERS=%s\n", strings.Join(s.Brokers, ","))
	fmt.Fprintf(&b, "RECEIVER_URL=%s\n", s.ReceiverURL)
	fmt.Fprintf(&b, "RECEIVER_TLS_URL=%s\n", s.ReceiverTLSURL)
	fmt.Fprintf(&b, "RECEIVER_CA_FILE=%s\n", s.ReceiverCAFile())
	fmt.Fprintf(&b, "OPERATOR_NAMESPACE=%s\n", s.Opts.OperatorNamespace)
	if ready {
		b.WriteString("READY=1\n")
	}
	tmp := s.EnvFile() + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", s.EnvFile(), err)
	}
	return os.Rename(tmp, s.EnvFile())
}

// Stop shuts everything down: manager first (so nothing is recreated), then the pods, the
// receiver Service, the API server and Kafka.
func (s *Stack) Stop() {
	s.managerMu.Lock()
	m := s.manager
	s.manager = nil
	s.managerMu.Unlock()
	if m != nil {
		m.stop()
	}
	if s.cancelNode != nil {
		s.cancelNode()
		s.Node.Wait()
	}
	if s.proxy != nil {
		_ = s.proxy.Close()
	}
	if s.tlsProxy != nil {
		s.tlsProxy.close()
	}
	if s.env != nil {
		if err := s.env.Stop(); err != nil {
			s.Opts.Log.Error(err, "stopping kube-apiserver and etcd")
		}
	}
	if s.Kafka != nil {
		s.Kafka.Close()
	}
	if s.Apache != nil {
		s.Apache.Close()
	}
	for _, f := range []string{"env", "pods", "stack.pid"} {
		_ = os.Remove(filepath.Join(s.Opts.Dir, f))
	}
}

// supervised is a process the stack restarts when it exits (the manager).
type supervised struct {
	name    string
	argv    []string
	env     []string
	logFile string
	log     logr.Logger

	mu       sync.Mutex
	cmd      *exec.Cmd
	stopping bool
	nexits   int
	done     chan struct{}
}

func (p *supervised) start() {
	p.done = make(chan struct{})
	go func() {
		defer close(p.done)
		backoff := time.Second
		for {
			f, err := os.OpenFile(p.logFile, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
			if err != nil {
				p.log.Error(err, "opening the log")
				return
			}
			cmd := exec.Command(p.argv[0], p.argv[1:]...)
			cmd.Env, cmd.Stdout, cmd.Stderr, cmd.SysProcAttr = p.env, f, f, proc.Attrs()
			p.mu.Lock()
			if p.stopping {
				p.mu.Unlock()
				_ = f.Close()
				return
			}
			err = cmd.Start()
			p.cmd = cmd
			p.mu.Unlock()
			if err == nil {
				err = cmd.Wait()
			}
			_ = f.Close()
			p.mu.Lock()
			p.nexits++
			stopping := p.stopping
			p.mu.Unlock()
			if stopping {
				return
			}
			p.log.Info("exited; restarting", "error", errString(err), "log", p.logFile)
			time.Sleep(backoff)
			backoff = min(2*backoff, 20*time.Second)
		}
	}()
}

func (p *supervised) exits() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.nexits
}

func (p *supervised) stop() {
	p.mu.Lock()
	p.stopping = true
	cmd := p.cmd
	p.mu.Unlock()
	if cmd != nil && cmd.Process != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(maxGracePeriod):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
		return
	}
	<-p.done
}
