package apachekafka

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/kafkachannel/kafkachannel/environments/testlog"
)

// testVersion is KAFKA_VERSION (make test-kafka runs both), else the newest 4.x.
func testVersion() string {
	if v := os.Getenv("KAFKA_VERSION"); v != "" {
		return v
	}
	return DefaultVersion
}

// requireKafka skips where Apache Kafka cannot run and makes sure its jars are there.
func requireKafka(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts Apache Kafka JVMs: not under -short")
	}
	if os.Getenv("KAFKACHANNEL_SKIP_APACHE") == "1" {
		t.Skip("KAFKACHANNEL_SKIP_APACHE=1")
	}
	if _, err := exec.LookPath("java"); err != nil {
		t.Skip("java is not installed: Apache Kafka needs a Java 17 runtime")
	}
	if _, err := EnsureDist(context.Background(), testVersion(), os.Stderr); err != nil {
		t.Fatal(err)
	}
}

func startCluster(t *testing.T, brokers int) *Cluster {
	t.Helper()
	requireKafka(t)
	start := time.Now()
	c, err := Start(context.Background(), Options{Version: testVersion(), Brokers: brokers, Dir: t.TempDir(), Log: testlog.New(t), RequestLog: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	t.Logf("Apache Kafka %s with %d broker(s) ready in %s at %s", c.Version(), brokers, time.Since(start).Round(100*time.Millisecond), c.BootstrapServers())
	return c
}

func TestMainClassPerVersion(t *testing.T) {
	for _, tc := range []struct{ version, tool, want string }{
		{"4.4.0", "kafka-console-producer", "org.apache.kafka.tools.ConsoleProducer"},
		{"3.9.2", "kafka-console-producer", "kafka.tools.ConsoleProducer"},
		{"4.4.0", "kafka-configs.sh", "org.apache.kafka.tools.ConfigCommand"},
		{"3.9.2", "kafka-configs", "kafka.admin.ConfigCommand"},
		{"3.9.2", "kafka-consumer-groups", "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand"},
		{"4.4.0", "kafka-producer-perf-test", "org.apache.kafka.tools.ProducerPerformance"},
		{"3.9.2", "kafka-producer-perf-test.sh", "org.apache.kafka.tools.ProducerPerformance"},
		{"4.4.0", "kafka-consumer-perf-test", "org.apache.kafka.tools.ConsumerPerformance"},
		{"3.9.2", "kafka-consumer-perf-test", "org.apache.kafka.tools.ConsumerPerformance"},
	} {
		got, err := MainClass(tc.version, tc.tool)
		if err != nil || got != tc.want {
			t.Errorf("MainClass(%s, %s) = %q, %v; want %q", tc.version, tc.tool, got, err, tc.want)
		}
	}
	if _, err := MainClass("4.4.0", "kafka-nonsense"); err == nil || !strings.Contains(err.Error(), "kafka-console-consumer") {
		t.Errorf("unknown tool: %v", err)
	}
}

func TestStartRejectsAnUnsupportedSize(t *testing.T) {
	if _, err := Start(context.Background(), Options{Brokers: 2, Dir: t.TempDir()}); err == nil || !strings.Contains(err.Error(), "1 or 3") {
		t.Errorf("Brokers 2: %v", err)
	}
}

// Every tool of the distribution this project uses runs from the same jars as the broker, and
// records survive a SIGKILL of the broker.
func TestBrokerToolsKillAndRestart(t *testing.T) {
	c := startCluster(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	bs := c.BootstrapServers()
	const topic = "apachekafka-test"

	if _, err := c.Tool(ctx, "kafka-topics", "--bootstrap-server", bs, "--create", "--topic", topic, "--partitions", "2"); err != nil {
		t.Fatal(err)
	}
	w := &kafka.Writer{Addr: kafka.TCP(c.Brokers()...), Topic: topic, RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond,
		Transport: &kafka.Transport{ClientID: "apachekafka-test"}}
	if err := w.WriteMessages(ctx, kafka.Message{Key: []byte("k1"), Value: []byte("v1"), Headers: []kafka.Header{{Key: "ce_id", Value: []byte("1")}}}); err != nil {
		t.Fatalf("producing with acks=all: %v", err)
	}
	_ = w.Close()

	prop := PropertyFlag(c.Version(), "kafka-console-consumer")
	consume := func() string {
		t.Helper()
		out, err := c.Tool(ctx, "kafka-console-consumer", "--bootstrap-server", bs, "--topic", topic, "--from-beginning",
			"--max-messages", "1", "--timeout-ms", "60000",
			prop, "print.key=true", prop, "print.headers=true")
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(out)
	}
	if got := consume(); got != "ce_id:1\tk1\tv1" {
		t.Errorf("console consumer printed %q, want headers, key and value", got)
	}

	out, err := c.Tool(ctx, "kafka-broker-api-versions", "--bootstrap-server", bs)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "JoinGroup(11)") || !strings.Contains(out, "OffsetFetch(9)") {
		t.Errorf("kafka-broker-api-versions lists no JoinGroup/OffsetFetch:\n%s", out)
	}
	if out, err := c.Tool(ctx, "kafka-configs", "--bootstrap-server", bs, "--entity-type", "topics", "--entity-name", topic, "--describe", "--all"); err != nil || !strings.Contains(out, "retention.ms=") {
		t.Errorf("kafka-configs --describe: %v\n%s", err, out)
	}
	if out, err := c.Tool(ctx, "kafka-consumer-groups", "--bootstrap-server", bs, "--list"); err != nil {
		t.Errorf("kafka-consumer-groups --list: %v\n%s", err, out)
	}

	// The request log names what kafka-go sent; a version the broker does not support shows
	// up in Refused (Kafka 4 removed Produce v0-v2, 3.9 still has them).
	reqs, err := c.Requests()
	if err != nil {
		t.Fatal(err)
	}
	var produce bool
	for _, r := range reqs {
		produce = produce || (r.API == "PRODUCE" && r.Client == "apachekafka-test")
	}
	if !produce {
		t.Errorf("no PRODUCE request from the kafka-go writer among %d logged requests: %+v", len(reqs), reqs)
	}
	if refused := c.Refused(); len(refused) > 0 {
		t.Errorf("requests refused before any old version was sent: %q", refused)
	}
	sendProduceV0(t, c.Brokers()[0])
	if strings.HasPrefix(c.Version(), "3.") {
		if refused := c.Refused(); len(refused) > 0 {
			t.Errorf("Kafka %s refused Produce v0: %q", c.Version(), refused)
		}
	} else {
		deadline := time.Now().Add(30 * time.Second)
		for len(c.Refused()) == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("Kafka %s accepted a Produce v0 request, or Refused does not find its refusal in the log", c.Version())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	pid := c.PID(0)
	if err := c.Kill(0); err != nil {
		t.Fatal(err)
	}
	if c.PID(0) != 0 {
		t.Fatal("node still running after Kill")
	}
	conn, err := kafka.DialContext(ctx, "tcp", c.Brokers()[0])
	if err == nil {
		_ = conn.Close()
		t.Fatalf("the killed broker (pid %d) still accepts connections", pid)
	}
	start := time.Now()
	if err := c.Restart(ctx, 0); err != nil {
		t.Fatal(err)
	}
	t.Logf("restarted after SIGKILL in %s", time.Since(start).Round(100*time.Millisecond))
	if got := consume(); got != "ce_id:1\tk1\tv1" {
		t.Errorf("after the restart the console consumer printed %q", got)
	}
}

// sendProduceV0 writes a Produce request of version 0 (no topics, acks=1) by hand: the oldest
// version, which KIP-896 removed in Kafka 4.0.
func sendProduceV0(t *testing.T, addr string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := "raw-produce-v0"
	body := binary.BigEndian.AppendUint16(nil, 0) // api key: Produce
	body = binary.BigEndian.AppendUint16(body, 0) // api version 0
	body = binary.BigEndian.AppendUint32(body, 1) // correlation id
	body = binary.BigEndian.AppendUint16(body, uint16(len(client)))
	body = append(body, client...)
	body = binary.BigEndian.AppendUint16(body, 1)    // acks
	body = binary.BigEndian.AppendUint32(body, 1000) // timeout ms
	body = binary.BigEndian.AppendUint32(body, 0)    // no topics
	if _, err := conn.Write(append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...)); err != nil {
		t.Fatal(err)
	}
	// Either an answer (3.9) or a closed connection (4.x): both end the read.
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, _ = conn.Read(make([]byte, 64))
}

// A broker must not outlive a test binary or stack that was SIGKILLed: it would hold its ports
// and a few hundred MiB until someone finds it.
func TestProcessesDieWithTheirParent(t *testing.T) {
	if dir := os.Getenv("APACHEKAFKA_CHILD_DIR"); dir != "" {
		// The child: start a broker, report its pid, wait to be killed.
		c, err := Start(context.Background(), Options{Version: testVersion(), Dir: dir})
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "pid"), []byte(strconv.Itoa(c.PID(0))), 0o644); err != nil {
			t.Fatal(err)
		}
		select {}
	}
	requireKafka(t)
	dir := t.TempDir()
	child := exec.Command(os.Args[0], "-test.run", "^TestProcessesDieWithTheirParent$", "-test.timeout", "10m")
	child.Env = append(os.Environ(), "APACHEKAFKA_CHILD_DIR="+dir)
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	var pid int
	deadline := time.Now().Add(3 * time.Minute)
	for pid == 0 {
		if time.Now().After(deadline) {
			_ = child.Process.Kill()
			t.Fatal("the child did not start its broker within 3 minutes")
		}
		if b, err := os.ReadFile(filepath.Join(dir, "pid")); err == nil {
			pid, _ = strconv.Atoi(string(b))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := child.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = child.Wait()
	deadline = time.Now().Add(30 * time.Second)
	for running(pid) {
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("the broker (pid %d) outlived its SIGKILLed parent", pid)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// running reports whether pid is a live process (a zombie waiting to be reaped is dead).
func running(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	_, rest, _ := strings.Cut(string(b), ") ")
	return !strings.HasPrefix(rest, "Z")
}

func TestParseQuorumLeader(t *testing.T) {
	status := `ClusterId:              a2Fma2FjaGFubmVsLXRzdA
LeaderId:               2
LeaderEpoch:            5
HighWatermark:          812
CurrentVoters:          [{"id": 1}, {"id": 2}, {"id": 3}]
`
	for _, tc := range []struct {
		name, out string
		want      int
		wantErr   bool
	}{
		{"leader 2 is index 1", status, 1, false},
		{"no leader line", "ClusterId: x\n", 0, true},
		{"leader outside the cluster", "LeaderId: 7\n", 0, true},
		{"no leader elected", "LeaderId: -1\n", 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseQuorumLeader(tc.out, 3)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("parseQuorumLeader = %d, %v; want %d, error %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}
