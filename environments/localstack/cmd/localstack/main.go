// Command localstack runs the whole system on this machine (see environments/localstack).
//
//	localstack demo [flags]   start the stack, tell the story, stay up until Ctrl-C
//	                          (DEMO_EXIT=1: exit after the story, 0 on success)
//	localstack up [flags]     start the stack only and stay up until Ctrl-C
//	localstack kafka [flags] -- COMMAND [ARGS]
//	                          start Apache Kafka (KAFKA_VERSION, KAFKA_BROKERS), run COMMAND
//	                          with KAFKA_BOOTSTRAP_SERVERS set to it, stop Kafka, exit as COMMAND did
//
// KAFKA=apache (with KAFKA_VERSION, KAFKA_BROKERS) makes demo and up run on real Apache Kafka
// brokers instead of the embedded kfake.
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-logr/zapr"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/kafkachannel/kafkachannel/api/v1alpha1"
	v1beta1 "github.com/kafkachannel/kafkachannel/api/v1beta1"
	"github.com/kafkachannel/kafkachannel/environments/apachekafka"
	"github.com/kafkachannel/kafkachannel/environments/localstack"
	"github.com/kafkachannel/kafkachannel/environments/proc"
	"github.com/kafkachannel/kafkachannel/internal/naming"
)

type config struct {
	bin, dir                string
	kafkaPort, receiverPort int
	sinkPort                int
	namespace, channel      string
	partitions              int
	events                  int
	exit                    bool
}

func main() {
	if len(os.Args) < 2 || (os.Args[1] != "demo" && os.Args[1] != "up" && os.Args[1] != "kafka") {
		fmt.Fprintln(os.Stderr, "usage: localstack demo|up [flags]   (localstack demo -h lists the flags)\n       localstack kafka [--dir DIR] -- COMMAND [ARGS]")
		os.Exit(2)
	}
	cmd := os.Args[1]
	if cmd == "kafka" {
		os.Exit(runKafka(os.Args[2:]))
	}
	var c config
	fs := flag.NewFlagSet(cmd, flag.ExitOnError)
	fs.StringVar(&c.bin, "bin", "bin", "directory with the built manager, dispatcher, receiver and eventdisplay")
	fs.StringVar(&c.dir, "dir", ".demo", "state directory: kubeconfig, env, pods, logs, Kafka data")
	fs.IntVar(&c.kafkaPort, "kafka-port", 9092, "port of the embedded Kafka (ignored with KAFKA_BOOTSTRAP_SERVERS)")
	fs.IntVar(&c.receiverPort, "receiver-port", 8080, "local port of the receiver Service")
	fs.IntVar(&c.sinkPort, "sink-port", 8090, "port of the demo's event-display subscriber")
	fs.StringVar(&c.namespace, "namespace", "default", "namespace of the demo channel")
	fs.StringVar(&c.channel, "channel", "demo", "name of the demo channel")
	fs.IntVar(&c.partitions, "partitions", 4, "partitions of the demo channel")
	fs.IntVar(&c.events, "events", 5, "events the demo sends")
	_ = fs.Parse(os.Args[2:])
	c.exit = os.Getenv("DEMO_EXIT") == "1"

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	if err := run(ctx, cmd, c); err != nil {
		if errors.Is(err, localstack.ErrUsage) {
			fmt.Fprintf(os.Stderr, "\n✗ %v\n", err)
		} else {
			fmt.Fprintf(os.Stderr, "\n✗ %s failed: %v\n", cmd, err)
		}
		os.Exit(1)
	}
}

func step(format string, args ...any) {
	fmt.Printf("==> "+format+"\n", args...)
}

func run(ctx context.Context, cmd string, c config) error {
	if err := os.MkdirAll(c.dir, 0o755); err != nil {
		return err
	}
	// The stack's own logs go to a file: the terminal is for the story.
	logPath := filepath.Join(c.dir, "localstack.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return fmt.Errorf("creating %s: %w", logPath, err)
	}
	defer func() { _ = logFile.Close() }()
	core := zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(logFile), zap.InfoLevel)
	log := zapr.NewLogger(zap.New(core))
	ctrllog.SetLogger(log)

	if cmd == "demo" {
		// Found before the stack starts, not a minute later as events that never arrive.
		l, err := net.Listen("tcp", fmt.Sprintf(":%d", c.sinkPort))
		if err != nil {
			return fmt.Errorf("%wport %d for the demo's event display is in use: stop that process or pick another port with --sink-port",
				localstack.ErrUsage, c.sinkPort)
		}
		_ = l.Close()
	}
	apache, err := localstack.ApacheFromEnv()
	if err != nil {
		return err
	}
	kafkaName := "Kafka (embedded kfake)"
	if apache != nil {
		kafkaName = fmt.Sprintf("Apache Kafka %s (%d broker(s), JVMs; logs in %s/kafka-apache)", apache.Version, apache.Brokers, c.dir)
	}
	step("starting kube-apiserver + etcd, %s, the manager and the local node (logs: %s)", kafkaName, c.dir)
	start := time.Now()
	s, err := localstack.Start(ctx, localstack.Options{
		Dir: c.dir, BinDir: c.bin, KafkaPort: c.kafkaPort, KafkaPersist: true, ReceiverPort: c.receiverPort, Log: log,
		Apache: apache,
	})
	if err != nil {
		return err
	}
	defer func() {
		step("shutting down: manager, data plane processes, receiver Service, kube-apiserver, etcd, %s", kafkaName)
		s.Stop()
		step("stopped")
	}()
	step("stack up in %s: kube-apiserver (kubeconfig %s), Kafka %s, receiver Service %s",
		time.Since(start).Round(100*time.Millisecond), s.Kubeconfig, strings.Join(s.Brokers, ","), s.ReceiverURL)

	if cmd == "demo" {
		if err := story(ctx, s, c); err != nil {
			return fmt.Errorf("%w\n  logs: %s/logs/manager.log, %s/run/<pod>/container.log, %s", err, c.dir, c.dir, logPath)
		}
	}
	if err := s.WriteEnv(true); err != nil {
		return err
	}
	step("ready: %s holds KUBECONFIG, KAFKA_BOOTSTRAP_SERVERS, RECEIVER_URL, OPERATOR_NAMESPACE", s.EnvFile())
	if c.exit {
		return nil
	}
	printCommands(s, c)
	<-ctx.Done()
	fmt.Println()
	return nil
}

// runKafka starts Apache Kafka, runs a command against it and stops it: make test-kafka runs
// the test suites through it with KAFKA_BOOTSTRAP_SERVERS.
func runKafka(args []string) int {
	fs := flag.NewFlagSet("kafka", flag.ExitOnError)
	dir := fs.String("dir", ".demo/kafka-test", "directory of the brokers' configuration, data and logs")
	_ = fs.Parse(args)
	argv := fs.Args()
	if len(argv) == 0 {
		fmt.Fprintln(os.Stderr, "usage: localstack kafka [--dir DIR] -- COMMAND [ARGS]")
		return 2
	}
	o, err := localstack.ApacheOptionsFromEnv()
	if err != nil {
		fmt.Fprintf(os.Stderr, "✗ %v\n", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	o.Dir = *dir
	if _, err := apachekafka.EnsureDist(ctx, o.Version, os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "✗ %v\n", err)
		return 1
	}
	step("starting Apache Kafka %s (%d broker(s)) in %s", o.Version, o.Brokers, *dir)
	start := time.Now()
	c, err := apachekafka.Start(ctx, *o)
	if err != nil {
		fmt.Fprintf(os.Stderr, "✗ %v\n", err)
		return 1
	}
	defer func() {
		step("stopping Apache Kafka")
		c.Close()
	}()
	step("Apache Kafka %s up in %s at %s", o.Version, time.Since(start).Round(100*time.Millisecond), c.BootstrapServers())
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), "KAFKA_BOOTSTRAP_SERVERS="+c.BootstrapServers(), "KAFKA_VERSION="+o.Version)
	// The command may be a test run that reads KAFKA: it gets the brokers, not a second cluster.
	cmd.Env = append(cmd.Env, "KAFKA=")
	if err := cmd.Run(); err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return exit.ExitCode()
		}
		fmt.Fprintf(os.Stderr, "✗ %s: %v\n", argv[0], err)
		return 1
	}
	return 0
}

func printCommands(s *localstack.Stack, c config) {
	topic := naming.Topic(c.namespace, c.channel)
	fmt.Printf(`
The system is running; Ctrl-C stops everything. Try:

  set -a; source %[1]s; set +a     # KUBECONFIG, KAFKA_BOOTSTRAP_SERVERS, RECEIVER_URL, OPERATOR_NAMESPACE
  kubectl --kubeconfig %[2]s get kafkachannels -A
  kubectl --kubeconfig %[2]s get deployments -n %[3]s
  curl -i -X POST "%[4]s/%[5]s/%[6]s" -H "Ce-Id: $RANDOM" -H "Ce-Specversion: 1.0" \
    -H "Ce-Type: dev.example" -H "Ce-Source: curl" -H "Content-Type: application/json" -d '{"msg":"hello"}'
  kcat -b %[7]s -t %[8]s -C -J -e
  cat %[9]s/pods        # one line per running replica: namespace deployment pod pid metrics health

A KafkaChannel you create with kubectl gets its dispatcher on the local node; subscribers can be
any http://127.0.0.1:PORT/ URL (e.g. %[10]s/eventdisplay --port 8091).
`, s.EnvFile(), s.Kubeconfig, s.Opts.OperatorNamespace, s.ReceiverURL, c.namespace, c.channel,
		strings.Join(s.Brokers, ","), topic, c.dir, c.bin)
}

// sink runs bin/eventdisplay and remembers the event ids it printed.
type sink struct {
	mu   sync.Mutex
	seen map[string]int // event id -> deliveries
	cmd  *exec.Cmd
}

func startSink(bin string, port int) (*sink, error) {
	sk := &sink{seen: map[string]int{}}
	sk.cmd = exec.Command(filepath.Join(bin, "eventdisplay"), fmt.Sprintf("--port=%d", port))
	out, err := sk.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	sk.cmd.Stderr = sk.cmd.Stdout
	if err := sk.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s (run `make build`): %w", sk.cmd.Path, err)
	}
	go func() {
		// The first event is shown in full, the others by their summary line.
		sc := bufio.NewScanner(out)
		events := 0
		for sc.Scan() {
			line := sc.Text()
			summary := strings.HasPrefix(line, "received event id=")
			if summary {
				events++
			}
			if summary || events <= 1 {
				fmt.Println("    [event-display] " + line)
			}
			if rest, ok := strings.CutPrefix(line, "received event id="); ok {
				id, _, _ := strings.Cut(rest, " ")
				sk.mu.Lock()
				sk.seen[id]++
				sk.mu.Unlock()
			}
		}
	}()
	return sk, nil
}

// has counts the ids the sink received at least times times.
func (sk *sink) has(ids []string, times int) int {
	sk.mu.Lock()
	defer sk.mu.Unlock()
	n := 0
	for _, id := range ids {
		if sk.seen[id] >= times {
			n++
		}
	}
	return n
}

func (sk *sink) stop() {
	_ = sk.cmd.Process.Signal(syscall.SIGTERM)
	_ = sk.cmd.Wait()
}

func poll(ctx context.Context, timeout time.Duration, f func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		ok, err := f()
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = ctx.Err()
			}
			return err
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func story(ctx context.Context, s *localstack.Stack, c config) error {
	sinkURL := fmt.Sprintf("http://127.0.0.1:%d/", c.sinkPort)
	step("starting the event-display subscriber at %s", sinkURL)
	sk, err := startSink(c.bin, c.sinkPort)
	if err != nil {
		return err
	}
	defer sk.stop()

	step("creating KafkaChannel %s/%s (%d partitions) with the event display as its subscriber", c.namespace, c.channel, c.partitions)
	ch := &v1beta1.KafkaChannel{
		ObjectMeta: metav1.ObjectMeta{Name: c.channel, Namespace: c.namespace},
		Spec: v1beta1.KafkaChannelSpec{
			NumPartitions: int32(c.partitions),
			Subscribers:   []v1beta1.SubscriberSpec{{Name: "event-display", UID: uid(), Generation: 1, SubscriberURI: &sinkURL}},
		},
	}
	if err := s.Client.Create(ctx, ch); err != nil {
		return fmt.Errorf("creating the KafkaChannel: %w", err)
	}
	key := client.ObjectKeyFromObject(ch)
	step("waiting for the channel to become Ready (topic, dispatcher and receiver on the local node)")
	last := ""
	err = poll(ctx, 3*time.Minute, func() (bool, error) {
		if err := s.Client.Get(ctx, key, ch); err != nil {
			return false, err
		}
		var parts []string
		ready := false
		for _, cnd := range ch.Status.Conditions {
			parts = append(parts, fmt.Sprintf("%s=%s", cnd.Type, cnd.Status))
			if cnd.Type == v1beta1.ConditionReady && cnd.Status == metav1.ConditionTrue {
				ready = true
			}
		}
		if now := strings.Join(parts, " "); now != last && now != "" {
			fmt.Println("    " + now)
			last = now
		}
		subReady := len(ch.Status.Subscribers) == 1 && ch.Status.Subscribers[0].Ready == "True"
		return ready && subReady, nil
	})
	if err != nil {
		return fmt.Errorf("the channel did not become Ready with a ready subscriber within 3 minutes (%v): %s\n%s", err, conditions(ch), podSummary(s))
	}
	step("channel Ready; subscriber ready in status.subscribers")

	url := fmt.Sprintf("%s/%s/%s", s.ReceiverURL, c.namespace, c.channel)
	step("sending %d CloudEvents (binary mode) to %s", c.events, url)
	var ids []string
	for i := 1; i <= c.events; i++ {
		id := fmt.Sprintf("demo-%s-%d", uid()[:8], i)
		ids = append(ids, id)
		fmt.Printf("    curl -X POST %s -H 'Ce-Id: %s' -H 'Ce-Specversion: 1.0' -H 'Ce-Type: dev.example' -H 'Ce-Source: localstack-demo' -H 'Content-Type: application/json' -d '{\"msg\":\"hello %d\"}'\n", url, id, i)
		code, body, err := postEvent(ctx, url, id, fmt.Sprintf(`{"msg":"hello %d"}`, i))
		if err != nil {
			return err
		}
		fmt.Printf("      -> %d\n", code)
		if code != http.StatusAccepted {
			return fmt.Errorf("the receiver answered %d, want 202: %s", code, body)
		}
	}
	step("waiting for the events at the event display")
	if err := poll(ctx, time.Minute, func() (bool, error) { return sk.has(ids, 1) == len(ids), nil }); err != nil {
		return fmt.Errorf("only %d of %d events reached the subscriber within a minute\n%s", sk.has(ids, 1), len(ids), podSummary(s))
	}
	step("all %d events arrived", len(ids))

	step("kubectl get kafkachannels -A")
	kc := exec.CommandContext(ctx, "kubectl", "--kubeconfig", s.Kubeconfig, "get", "kafkachannels", "-A")
	kc.Stdout, kc.Stderr = os.Stdout, os.Stderr
	if err := kc.Run(); err != nil {
		fmt.Printf("    (kubectl failed: %v; Ready=%s)\n", err, conditions(ch))
	}

	step("eventing_kafka_consumed_msg_count from the dispatcher's /metrics")
	disp := naming.DispatcherName(c.namespace, c.channel)
	var lines []string
	_ = poll(ctx, 20*time.Second, func() (bool, error) {
		lines = nil
		for _, p := range s.Node.Pods() {
			if p.Deployment != disp || p.MetricsURL == "" {
				continue
			}
			for _, l := range scrape(p.MetricsURL) {
				if strings.HasPrefix(l, "eventing_kafka_consumed_msg_count") {
					lines = append(lines, l)
				}
			}
		}
		return len(lines) > 0, nil
	})
	if len(lines) == 0 {
		return fmt.Errorf("no eventing_kafka_consumed_msg_count in the dispatcher's /metrics\n%s", podSummary(s))
	}
	for _, l := range lines {
		fmt.Println("    " + l)
	}
	return replayStory(ctx, s, c, ch.Spec.Subscribers[0].UID, sk, ids)
}

// replayStory moves the subscriber back to the earliest event with a ResetOffset applied by
// kubectl, and waits for the events to reach the event display a second time.
func replayStory(ctx context.Context, s *localstack.Stack, c config, subscriberUID string, sk *sink, ids []string) error {
	manifest := fmt.Sprintf(`apiVersion: kafka.eventing.knative.dev/v1alpha1
kind: ResetOffset
metadata:
  name: %s-replay
  namespace: %s
spec:
  ref:
    kafkaChannel: %s
    subscriberUid: %s
  offset:
    time: earliest
`, c.channel, c.namespace, c.channel, subscriberUID)
	step("replay: kubectl apply a ResetOffset that moves the subscriber back to the earliest event")
	fmt.Println(indent(strings.TrimRight(manifest, "\n")))
	apply := exec.CommandContext(ctx, "kubectl", "--kubeconfig", s.Kubeconfig, "apply", "-f", "-")
	apply.Stdin, apply.Stdout, apply.Stderr = strings.NewReader(manifest), os.Stdout, os.Stderr
	if err := apply.Run(); err != nil {
		return fmt.Errorf("kubectl apply of the ResetOffset: %w", err)
	}
	ro := &v1alpha1.ResetOffset{}
	key := client.ObjectKey{Namespace: c.namespace, Name: c.channel + "-replay"}
	var outcome *metav1.Condition
	err := poll(ctx, 2*time.Minute, func() (bool, error) {
		if err := s.Client.Get(ctx, key, ro); err != nil {
			return false, err
		}
		outcome = meta.FindStatusCondition(ro.Status.Conditions, v1alpha1.ConditionSucceeded)
		return outcome != nil && outcome.Status != metav1.ConditionUnknown, nil
	})
	if err != nil || outcome.Status != metav1.ConditionTrue {
		return fmt.Errorf("the ResetOffset did not succeed (%v): %+v\n%s", err, ro.Status.Conditions, podSummary(s))
	}
	step("kubectl get resetoffsets -n %s -o wide", c.namespace)
	get := exec.CommandContext(ctx, "kubectl", "--kubeconfig", s.Kubeconfig, "get", "resetoffsets", "-n", c.namespace, "-o", "wide")
	get.Stdout, get.Stderr = os.Stdout, os.Stderr
	if err := get.Run(); err != nil {
		fmt.Printf("    (kubectl failed: %v)\n", err)
	}
	for _, p := range ro.Status.Partitions {
		fmt.Printf("    partition %d: offset %d -> %d\n", p.Partition, p.OldOffset, p.NewOffset)
	}
	step("waiting for the %d events to arrive again at the event display", len(ids))
	if err := poll(ctx, time.Minute, func() (bool, error) { return sk.has(ids, 2) == len(ids), nil }); err != nil {
		return fmt.Errorf("only %d of %d events were replayed within a minute\n%s", sk.has(ids, 2), len(ids), podSummary(s))
	}
	step("all %d events arrived a second time: replayed from Kafka", len(ids))
	return nil
}

func uid() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func postEvent(ctx context.Context, url, id, body string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Ce-Id", id)
	req.Header.Set("Ce-Specversion", "1.0")
	req.Header.Set("Ce-Type", "dev.example")
	req.Header.Set("Ce-Source", "localstack-demo")
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", fmt.Errorf("sending an event to %s: %w", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b)), nil
}

func scrape(url string) []string {
	resp, err := http.Get(url)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return strings.Split(string(b), "\n")
}

func conditions(ch *v1beta1.KafkaChannel) string {
	var parts []string
	for _, c := range ch.Status.Conditions {
		s := fmt.Sprintf("%s=%s", c.Type, c.Status)
		if c.Status != metav1.ConditionTrue && c.Message != "" {
			s += fmt.Sprintf(" (%s: %s)", c.Reason, c.Message)
		}
		parts = append(parts, s)
	}
	if len(parts) == 0 {
		return "no conditions yet (is the manager running? see its log)"
	}
	return strings.Join(parts, ", ")
}

func podSummary(s *localstack.Stack) string {
	var b strings.Builder
	b.WriteString("  local pods:\n")
	for _, p := range s.Node.Pods() {
		fmt.Fprintf(&b, "    %s pid=%d ready=%v restarts=%d %s\n", p.Name, p.PID, p.Ready, p.Restarts, p.Failure)
		if p.PID == 0 || !p.Ready {
			for _, l := range strings.Split(proc.Tail(p.LogFile, 8), "\n") {
				fmt.Fprintf(&b, "      | %s\n", l)
			}
		}
	}
	fmt.Fprintf(&b, "  manager log ends with:\n%s", indent(proc.Tail(s.ManagerLog(), 10)))
	return b.String()
}

func indent(s string) string {
	return "    | " + strings.ReplaceAll(s, "\n", "\n    | ")
}
