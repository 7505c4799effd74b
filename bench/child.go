package bench

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"
)

// The parent talks to a dispatcher process (ChildMain) over its stdin and stdout, one line each
// way: "ready" comes by itself once every subscriber is Ready; every other line answers a
// command, and starts with the command's name.
const (
	// cmdGoroutines answers "goroutines N".
	cmdGoroutines = "goroutines"
	// cmdMemstats answers "memstats " and memstatsLine: where the runtime's memory goes.
	cmdMemstats = "memstats"
	// cmdProfiles PREFIX writes PREFIX.heap.pprof and PREFIX.goroutines.txt and answers
	// "profiles PREFIX" (or "profiles error: ...").
	cmdProfiles = "profiles"
	// cmdCPU PREFIX SECONDS profiles the CPU for SECONDS into PREFIX.cpu.pprof and answers
	// "cpu PREFIX" (or "cpu error: ...").
	cmdCPU = "cpu"
)

// serveCommands answers the parent's commands from in on out until in closes, out fails or in
// sends a line it does not know: the parent closes stdin to stop the process.
func serveCommands(in io.Reader, out io.Writer) {
	lines := bufio.NewScanner(in)
	for lines.Scan() {
		cmd, arg, _ := strings.Cut(strings.TrimSpace(lines.Text()), " ")
		a, ok := answer(cmd, arg)
		if !ok {
			return
		}
		if _, err := fmt.Fprintf(out, "%s %s\n", cmd, a); err != nil {
			return
		}
	}
}

// answer is what the child answers to a command, without the command's name; false for a
// command it does not know.
func answer(cmd, arg string) (string, bool) {
	switch cmd {
	case cmdGoroutines:
		return strconv.Itoa(runtime.NumGoroutine()), true
	case cmdMemstats:
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return memstatsLine(&ms), true
	case cmdProfiles, cmdCPU:
		write := writeProfiles
		if cmd == cmdCPU {
			write = writeCPUProfile
		}
		if err := write(arg); err != nil {
			return "error: " + strings.ReplaceAll(err.Error(), "\n", " "), true
		}
		return strings.Fields(arg)[0], true
	}
	return "", false
}

// writeProfiles writes this process's heap profile (in-use and allocated space, for go tool
// pprof) and a text dump of every goroutine's stack, which shows where each one waits.
func writeProfiles(prefix string) error {
	if prefix == "" {
		return errors.New("no file prefix")
	}
	// The heap profile is as of the last GC; collect so it is as of now.
	runtime.GC()
	for _, p := range []struct {
		name, suffix string
		debug        int
	}{{"heap", ".heap.pprof", 0}, {"goroutine", ".goroutines.txt", 1}} {
		f, err := os.Create(prefix + p.suffix)
		if err != nil {
			return err
		}
		err = pprof.Lookup(p.name).WriteTo(f, p.debug)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("writing the %s profile: %w", p.name, err)
		}
	}
	return nil
}

// writeCPUProfile profiles the CPU for the seconds after the prefix ("PREFIX SECONDS").
func writeCPUProfile(arg string) error {
	prefix, secs, ok := strings.Cut(arg, " ")
	d, err := time.ParseDuration(secs + "s")
	if !ok || err != nil || d <= 0 {
		return fmt.Errorf("want PREFIX SECONDS, got %q", arg)
	}
	f, err := os.Create(prefix + ".cpu.pprof")
	if err != nil {
		return err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		return err
	}
	time.Sleep(d)
	pprof.StopCPUProfile()
	return f.Close()
}

// Memstats is a process's memory as its Go runtime sees it, in MB: Sys, what it took from the
// OS, split into the heap's live spans, the heap's free spans still mapped, goroutine stacks,
// and the runtime's own share (span and cache metadata, GC bitmaps, profiling buckets,
// other). RSS can be below Sys (pages never touched or returned) but not far above it, so the
// split says which part an RSS figure comes from.
type Memstats struct {
	SysMB, HeapInuseMB, HeapFreeMB, StackMB, RuntimeMB float64
	// HeapObjects are the live objects; NumGC the collections so far.
	HeapObjects, NumGC uint64
}

const mb = 1 << 20

// memstatsFrom splits ms into Memstats. HeapSys is HeapInuse plus HeapIdle (free spans, mapped
// or released); what is released to the OS is no longer resident, so it counts in no share.
func memstatsFrom(ms *runtime.MemStats) Memstats {
	return Memstats{
		SysMB:       float64(ms.Sys-ms.HeapReleased) / mb,
		HeapInuseMB: float64(ms.HeapInuse) / mb,
		HeapFreeMB:  float64(ms.HeapIdle-ms.HeapReleased) / mb,
		StackMB:     float64(ms.StackSys) / mb,
		RuntimeMB:   float64(ms.MSpanSys+ms.MCacheSys+ms.BuckHashSys+ms.GCSys+ms.OtherSys) / mb,
		HeapObjects: ms.HeapObjects,
		NumGC:       uint64(ms.NumGC),
	}
}

// memstatsLine is the one-line form of memstatsFrom(ms) that the child sends.
func memstatsLine(ms *runtime.MemStats) string {
	m := memstatsFrom(ms)
	return fmt.Sprintf("sys=%.1f heap_inuse=%.1f heap_free=%.1f stacks=%.1f runtime=%.1f objects=%d gcs=%d",
		m.SysMB, m.HeapInuseMB, m.HeapFreeMB, m.StackMB, m.RuntimeMB, m.HeapObjects, m.NumGC)
}

// parseMemstats reads memstatsLine.
func parseMemstats(line string) (Memstats, error) {
	var m Memstats
	floats := map[string]*float64{"sys": &m.SysMB, "heap_inuse": &m.HeapInuseMB, "heap_free": &m.HeapFreeMB, "stacks": &m.StackMB, "runtime": &m.RuntimeMB}
	ints := map[string]*uint64{"objects": &m.HeapObjects, "gcs": &m.NumGC}
	seen := 0
	for _, f := range strings.Fields(line) {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			return m, fmt.Errorf("memstats field %q has no value", f)
		}
		var err error
		switch {
		case floats[k] != nil:
			*floats[k], err = strconv.ParseFloat(v, 64)
		case ints[k] != nil:
			*ints[k], err = strconv.ParseUint(v, 10, 64)
		default:
			continue
		}
		if err != nil {
			return m, fmt.Errorf("memstats field %s: %w", k, err)
		}
		seen++
	}
	if seen != len(floats)+len(ints) {
		return m, fmt.Errorf("memstats line %q lacks fields", line)
	}
	return m, nil
}

// String is the split as a reader wants it: the parts of Sys.
func (m Memstats) String() string {
	return fmt.Sprintf("Go runtime %.0f MB: heap in use %.0f, heap free %.0f, stacks %.0f, runtime %.0f (%d objects, %d GCs)",
		m.SysMB, m.HeapInuseMB, m.HeapFreeMB, m.StackMB, m.RuntimeMB, m.HeapObjects, m.NumGC)
}

// child is the bench binary running as a dispatcher process (ChildMain).
type child struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	// lines has every line the child writes, read by one goroutine, so a wait that timed out
	// leaves its line to the next one.
	lines <-chan string
}

// startChild starts a dispatcher process for ch with subs subscribers at sinkURL + "sub-NNN".
func (e *Env) startChild(self string, ch Channel, sinkURL string, subs int) (*child, error) {
	cmd := exec.Command(self, ChildCommand, "--brokers", joinBrokers(e.Brokers), "--name", ch.Name,
		"--sink", sinkURL, "--subscribers", strconv.Itoa(subs))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the dispatcher process: %w", err)
	}
	return &child{cmd: cmd, stdin: stdin, lines: linesOf(stdout)}, nil
}

// linesOf reads r's lines into a channel, closed when r ends.
func linesOf(r io.Reader) <-chan string {
	c := make(chan string, 16)
	go func() {
		defer close(c)
		s := bufio.NewScanner(r)
		for s.Scan() {
			c <- strings.TrimSpace(s.Text())
		}
	}()
	return c
}

// wait waits for a child whose stdin was closed to stop, and kills it after 20 s.
func (k *child) wait() {
	done := make(chan struct{})
	go func() { _ = k.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = k.cmd.Process.Kill()
		<-done
	}
}

// readLine returns the child's next line, waiting up to budget.
func (k *child) readLine(budget time.Duration) (string, error) {
	select {
	case l, ok := <-k.lines:
		if !ok {
			return "", errors.New("the dispatcher process closed its output")
		}
		return l, nil
	case <-time.After(budget):
		return "", fmt.Errorf("no answer after %s", budget)
	}
}

func (k *child) expectLine(want string, budget time.Duration) error {
	line, err := k.readLine(budget)
	if err != nil {
		return err
	}
	if line != want {
		return fmt.Errorf("unexpected output %q", line)
	}
	return nil
}

// ask sends a command and returns its answer without the command's name. Lines that answer
// nothing asked ("ready" arriving late) are skipped.
func (k *child) ask(command string, budget time.Duration) (string, error) {
	if _, err := io.WriteString(k.stdin, command+"\n"); err != nil {
		return "", fmt.Errorf("asking the dispatcher process %q: %w", command, err)
	}
	name, _, _ := strings.Cut(command, " ")
	deadline := time.Now().Add(budget)
	for {
		line, err := k.readLine(time.Until(deadline))
		if err != nil {
			return "", fmt.Errorf("asking the dispatcher process %q: %w", command, err)
		}
		if answer, ok := strings.CutPrefix(line, name+" "); ok {
			return answer, nil
		}
	}
}

// profileCPU has the child profile its CPU for d into dir/label.cpu.pprof.
func (k *child) profileCPU(dir, label string, d time.Duration) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	prefix, err := filepath.Abs(filepath.Join(dir, label))
	if err != nil {
		return err
	}
	answer, err := k.ask(fmt.Sprintf("%s %s %d", cmdCPU, prefix, int(d.Seconds())), d+time.Minute)
	if err != nil {
		return err
	}
	if strings.HasPrefix(answer, "error:") {
		return fmt.Errorf("CPU profile of the dispatcher process: %s", answer)
	}
	return nil
}

// snapshot asks the child for its memstats and, with dir set, its heap and goroutine profiles
// (dir/label.*), and reports the memstats on stderr: where its RSS goes at that moment.
func (k *child) snapshot(dir, label string, budget time.Duration) (Memstats, error) {
	line, err := k.ask(cmdMemstats, budget)
	if err != nil {
		return Memstats{}, err
	}
	m, err := parseMemstats(line)
	if err != nil {
		return m, err
	}
	fmt.Fprintf(os.Stderr, "%s: %s\n", label, m)
	if dir == "" {
		return m, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return m, err
	}
	prefix, err := filepath.Abs(filepath.Join(dir, label))
	if err != nil {
		return m, err
	}
	if err := os.WriteFile(prefix+".memstats.txt", []byte(line+"\n"), 0o644); err != nil {
		return m, err
	}
	answer, err := k.ask(cmdProfiles+" "+prefix, budget)
	if err != nil {
		return m, err
	}
	if strings.HasPrefix(answer, "error:") {
		return m, fmt.Errorf("profiles of the dispatcher process: %s", answer)
	}
	return m, nil
}
