package apachekafka

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/kafkachannel/kafkachannel/internal/testlog"
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
	c, err := Start(context.Background(), Options{Version: testVersion(), Brokers: brokers, Dir: t.TempDir(), Log: testlog.New(t)})
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
	w := &kafka.Writer{Addr: kafka.TCP(c.Brokers()...), Topic: topic, RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond}
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
