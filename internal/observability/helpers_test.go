package observability

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

// writeConfigMap lays out data the way kubelet's atomic writer does: the files live in a hidden
// timestamped directory, "..data" is a symlink to it, and each key is a symlink through
// "..data". An update writes a new directory and renames a fresh symlink over "..data", so
// readers see the old or the new version, never a mix.
func writeConfigMap(t *testing.T, root, name string, data map[string]string) {
	t.Helper()
	dir := filepath.Join(root, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	version, err := os.MkdirTemp(dir, ".."+time.Now().Format("2006_01_02_15_04_05.")) // hidden
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range data {
		if err := os.WriteFile(filepath.Join(version, k), []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tmp := filepath.Join(dir, "..data_tmp")
	_ = os.Remove(tmp)
	if err := os.Symlink(filepath.Base(version), tmp); err != nil {
		t.Fatal(err)
	}
	var old string
	if target, err := os.Readlink(filepath.Join(dir, "..data")); err == nil {
		old = filepath.Join(dir, target)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if _, keep := data[e.Name()]; !keep && e.Name()[0] != '.' {
			_ = os.Remove(filepath.Join(dir, e.Name()))
		}
	}
	for k := range data {
		link := filepath.Join(dir, k)
		if _, err := os.Lstat(link); err == nil {
			continue
		}
		if err := os.Symlink(filepath.Join("..data", k), link); err != nil {
			t.Fatal(err)
		}
	}
	if old != "" {
		_ = os.RemoveAll(old)
	}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// freePort finds a port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// syncBuffer is a log sink that tests read while the component writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startForTest starts the package the way a main does, on loopback ports, polling fast.
func startForTest(t *testing.T, opts Options) *Observability {
	t.Helper()
	if opts.Component == "" {
		opts.Component = ComponentReceiver
	}
	if opts.ConfigDir == "" {
		opts.ConfigDir = t.TempDir()
	}
	if opts.MetricsAddr == "" {
		opts.MetricsAddr = "127.0.0.1:0"
	}
	if opts.ProfilingAddr == "" {
		opts.ProfilingAddr = "127.0.0.1:" + strconv.Itoa(freePort(t))
	}
	if opts.PollInterval == 0 {
		opts.PollInterval = 50 * time.Millisecond
	}
	if opts.LogWriter == nil {
		opts.LogWriter = t.Output() // shown with the test's own output, on failure or with -v
	}
	o, err := Start(context.Background(), opts)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := o.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return o
}

func mustf(t *testing.T, err error, format string, args ...any) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", fmt.Sprintf(format, args...), err)
	}
}
