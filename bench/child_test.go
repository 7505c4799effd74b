package bench

import (
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// pipedChild is a child whose process is serveCommands in this test, over pipes; extra writes
// lines of its own to the child's stdout, as ChildMain's "ready" does.
func pipedChild(t *testing.T) (k *child, extra io.Writer) {
	t.Helper()
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	go func() { serveCommands(inR, outW); _ = outW.Close() }()
	t.Cleanup(func() { _ = inW.Close(); _ = outR.Close() })
	return &child{stdin: inW, lines: linesOf(outR)}, outW
}

// A wait for "ready" that times out must not eat the line that comes after it: P5 1k asks the
// process that was not Ready in time for its memstats.
func TestChildAnswersAfterATimedOutWait(t *testing.T) {
	k, extra := pipedChild(t)
	if _, err := k.readLine(20 * time.Millisecond); err == nil {
		t.Fatal("nothing was written, the wait must time out")
	}
	go func() { _, _ = io.WriteString(extra, "ready\n") }()
	if err := k.expectLine("ready", 5*time.Second); err != nil {
		t.Fatalf("the line after a timed-out wait: %v", err)
	}
}

// An answer comes back with its command's name; a "ready" that arrives in between is skipped.
func TestChildAnswersCommands(t *testing.T) {
	k, extra := pipedChild(t)
	go func() { _, _ = io.WriteString(extra, "ready\n") }()
	time.Sleep(10 * time.Millisecond)
	got, err := k.ask(cmdGoroutines, 5*time.Second)
	if err != nil || got == "" || strings.Contains(got, "ready") {
		t.Fatalf("goroutines: %q, %v", got, err)
	}
	dir := t.TempDir()
	m, err := k.snapshot(dir, "p5-test", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if m.SysMB <= 0 || m.HeapObjects == 0 {
		t.Errorf("memstats not read: %+v", m)
	}
	for _, f := range []string{"p5-test.memstats.txt", "p5-test.heap.pprof", "p5-test.goroutines.txt"} {
		if st, err := os.Stat(filepath.Join(dir, f)); err != nil || st.Size() == 0 {
			t.Errorf("%s: %v", f, err)
		}
	}
}

// The memstats line splits what the runtime holds (Sys, less what it released) into heap in
// use, free heap, stacks and the runtime's own share, with nothing left over, and reads back.
func TestMemstatsLineSplitsTheRuntimeShare(t *testing.T) {
	var real runtime.MemStats
	runtime.ReadMemStats(&real)
	for _, tc := range []struct {
		name string
		ms   runtime.MemStats
	}{
		{"made up", runtime.MemStats{
			HeapInuse: 40 * mb, HeapIdle: 30 * mb, HeapReleased: 10 * mb, HeapSys: 70 * mb, StackSys: 8 * mb,
			MSpanSys: 2 * mb, MCacheSys: mb / 2, BuckHashSys: mb / 2, GCSys: 4 * mb, OtherSys: 1 * mb,
			Sys: 70*mb + 8*mb + 2*mb + mb/2 + mb/2 + 4*mb + 1*mb, HeapObjects: 1234, NumGC: 7,
		}},
		{"this process", real},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := parseMemstats(memstatsLine(&tc.ms))
			if err != nil {
				t.Fatal(err)
			}
			want := memstatsFrom(&tc.ms)
			if m.HeapObjects != want.HeapObjects || m.NumGC != want.NumGC || math.Abs(m.RuntimeMB-want.RuntimeMB) > 0.05 {
				t.Errorf("read back %+v, sent %+v", m, want)
			}
			if parts := m.HeapInuseMB + m.HeapFreeMB + m.StackMB + m.RuntimeMB; math.Abs(parts-m.SysMB) > 0.3 {
				t.Errorf("the parts make %.1f MB of %.1f: %s", parts, m.SysMB, m)
			}
		})
	}
	if _, err := parseMemstats("sys=1 heap_inuse=x"); err == nil {
		t.Error("a broken line must not parse")
	}
}

// The child profiles its CPU on request, for the seconds asked.
func TestChildWritesACPUProfile(t *testing.T) {
	k, _ := pipedChild(t)
	dir := t.TempDir()
	if err := k.profileCPU(dir, "slow", time.Second); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(filepath.Join(dir, "slow.cpu.pprof")); err != nil || st.Size() == 0 {
		t.Errorf("no CPU profile: %v", err)
	}
	if got, err := k.ask(cmdCPU+" "+filepath.Join(dir, "x")+" zero", 5*time.Second); err != nil || !strings.HasPrefix(got, "error:") {
		t.Errorf("a bad duration must answer an error, got %q, %v", got, err)
	}
}
