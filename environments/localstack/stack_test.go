package localstack

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestSecretFromEnv(t *testing.T) {
	ca := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(ca, []byte("not checked here"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KAFKA_PROTOCOL", "SASL_PLAINTEXT")
	t.Setenv("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
	t.Setenv("KAFKA_USER", "alice")
	t.Setenv("KAFKA_PASSWORD", "pw")
	t.Setenv("KAFKA_CA_FILE", "")
	data, err := secretFromEnv("k1:9092,k2:9092")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"brokers": "k1:9092,k2:9092", "protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-512", "user": "alice", "password": "pw"}
	for k, v := range want {
		if string(data[k]) != v {
			t.Errorf("key %s = %q, want %q", k, data[k], v)
		}
	}
	t.Setenv("KAFKA_PASSWORD", "")
	if _, err := secretFromEnv("k1:9092"); err == nil || !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), "password") {
		t.Errorf("SASL without a password: %v", err)
	}
	t.Setenv("KAFKA_CA_FILE", filepath.Join(t.TempDir(), "missing"))
	if _, err := secretFromEnv("k1:9092"); err == nil || !strings.Contains(err.Error(), "KAFKA_CA_FILE") {
		t.Errorf("missing CA file: %v", err)
	}
}

func TestClaimDir(t *testing.T) {
	dir := t.TempDir()
	// A stale run: its pid is dead, its files describe nothing.
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"env", "pods"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("stale"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "kafka"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "stack.pid"), []byte(strconv.Itoa(dead.Process.Pid)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := claimDir(dir); err != nil {
		t.Fatalf("claiming a stale dir: %v", err)
	}
	for _, f := range []string{"env", "pods"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			t.Errorf("stale %s kept", f)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "kafka")); err != nil {
		t.Errorf("Kafka data removed: %v", err)
	}
	// A live stack owns the dir: a process whose command line names localstack.
	live := exec.Command("bash", "-c", "exec -a localstack sleep 60")
	if err := live.Start(); err != nil {
		t.Skipf("bash: %v", err)
	}
	defer func() { _ = live.Process.Kill(); _ = live.Wait() }()
	eventuallyCmdline(t, live.Process.Pid, "localstack")
	if err := os.WriteFile(filepath.Join(dir, "stack.pid"), []byte(strconv.Itoa(live.Process.Pid)), 0o644); err != nil {
		t.Fatal(err)
	}
	err := claimDir(dir)
	if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), "another local stack") {
		t.Errorf("dir of a running stack: %v", err)
	}
}

// eventuallyCmdline waits until bash has exec'ed into the renamed process.
func eventuallyCmdline(t *testing.T, pid int, want string) {
	t.Helper()
	for i := 0; i < 100; i++ {
		if b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline"); strings.HasPrefix(string(b), want) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Skip("no /proc cmdline to check")
}

func TestCheckPortFree(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	port := l.Addr().(*net.TCPAddr).Port
	err = checkPortFree(port, "Kafka", "--kafka-port")
	if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), "--kafka-port") || !strings.Contains(err.Error(), strconv.Itoa(port)) {
		t.Errorf("port in use: %v", err)
	}
	if err := checkPortFree(0, "Kafka", "--kafka-port"); err != nil {
		t.Errorf("port 0: %v", err)
	}
}
