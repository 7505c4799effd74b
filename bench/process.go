package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/kafkachannel/kafkachannel/api/v1beta1"
	"github.com/kafkachannel/kafkachannel/dispatcher"
	"github.com/kafkachannel/kafkachannel/internal/naming"
)

// ChildCommand is the argument that makes the bench binary run as P5's dispatcher process.
const ChildCommand = "dispatcher-child"

// ChildMain runs a dispatcher with many subscribers in this process until stdin closes, prints
// "ready" once every subscriber is Ready, and answers the commands of serveCommands. Kafka and
// the subscribers live in the parent, so this process's RSS is the dispatcher's alone.
func ChildMain(args []string) error {
	fs := flag.NewFlagSet(ChildCommand, flag.ContinueOnError)
	brokers := fs.String("brokers", "", "bootstrap servers")
	name := fs.String("name", "", "channel name")
	sink := fs.String("sink", "", "subscriber base URL")
	subs := fs.Int("subscribers", 100, "subscribers")
	if err := fs.Parse(args); err != nil {
		return err
	}
	d, err := dispatcher.New(dispatcher.Config{
		Brokers: strings.Split(*brokers, ","), ChannelNamespace: Namespace, ChannelName: *name,
		Log: ProductionLog(),
		// The production defaults (session, drain, fetch wait), as the dispatcher binary runs.
	})
	if err != nil {
		return err
	}
	var specs []v1beta1.SubscriberSpec
	for i := range *subs {
		specs = append(specs, Subscriber(fmt.Sprintf("sub-%03d", i), fmt.Sprintf("%ssub-%03d", *sink, i)))
	}
	d.Update(dispatcher.Channel{Subscribers: specs})
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		// The parent closes stdin to stop us (and we die with it if it is killed); until
		// then it may ask for goroutines, memstats and profiles (child.go).
		serveCommands(os.Stdin, os.Stdout)
		cancel()
	}()
	go func() {
		for ctx.Err() == nil {
			ready := 0
			for _, s := range d.States() {
				if s.Ready == dispatcher.ReadyTrue {
					ready++
				}
			}
			if ready == *subs {
				fmt.Println("ready")
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	return d.Run(ctx)
}

// RSSResult is P5.
type RSSResult struct {
	IdleMB, LoadMB float64
	Subscribers    int
	Partitions     int
	Deliveries     int
	ReadyAfter     time.Duration
	// NotReady says that not every subscriber was Ready within the budget (DispatcherIdleRSS):
	// ReadyAfter is then the budget and IdleMB the RSS at its end.
	NotReady bool
	// Idle is the Go runtime's split of the idle process's memory.
	Idle Memstats
	// LoadTook is how long the deliveries under load took, LoadCores the CPU the process
	// used meanwhile (1 = one core busy; -1 unknown).
	LoadTook  time.Duration
	LoadCores float64
}

// DispatcherRSS starts the bench binary as a dispatcher process with `subs` subscribers on a
// channel of `partitions`, reads its VmRSS once all are Ready and idle, then the peak while
// `events` records go to every subscriber.
func (e *Env) DispatcherRSS(self string, subs, partitions, events int) (RSSResult, error) {
	return e.dispatcherRSS(self, subs, partitions, events, e.Within(90*time.Second))
}

// DispatcherIdleRSS is DispatcherRSS without the load: how long `subs` subscribers take to be
// Ready in one process and its VmRSS idle after. It waits up to readyBudget, so a slow start is
// a figure to compare with its target rather than an error.
func (e *Env) DispatcherIdleRSS(self string, subs, partitions int, readyBudget time.Duration) (RSSResult, error) {
	return e.dispatcherRSS(self, subs, partitions, 0, e.Within(readyBudget))
}

func (e *Env) dispatcherRSS(self string, subs, partitions, events int, readyBudget time.Duration) (RSSResult, error) {
	res := RSSResult{Subscribers: subs, Partitions: partitions}
	ch, err := e.NewChannel("rss", partitions)
	if err != nil {
		return res, err
	}
	var delivered atomic.Int64
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return res, err
	}
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		delivered.Add(1)
		w.WriteHeader(http.StatusAccepted)
	})}
	go func() { _ = srv.Serve(ln) }()
	defer func() { _ = srv.Close() }()

	start := time.Now()
	k, err := e.startChild(self, ch, "http://"+ln.Addr().String()+"/", subs)
	if err != nil {
		return res, err
	}
	defer func() { _ = k.stdin.Close(); k.wait() }()
	label := fmt.Sprintf("p5-%d-", subs)
	if err := k.expectLine("ready", readyBudget); err != nil {
		if events > 0 {
			return res, fmt.Errorf("dispatcher process with %d subscribers: %w", subs, err)
		}
		// Without load to deliver, a slow start is the figure itself: the RSS it reached.
		res.NotReady, res.ReadyAfter = true, time.Since(start)
		if res.IdleMB, err = vmRSS(k.cmd.Process.Pid); err != nil {
			return res, err
		}
		res.Idle, err = k.snapshot(e.ChildProfiles, label+"not-ready", e.Within(30*time.Second))
		return res, err
	}
	res.ReadyAfter = time.Since(start)
	// Let start-up garbage be collected the way it would in a long-running pod.
	time.Sleep(e.Settle)
	if res.IdleMB, err = vmRSS(k.cmd.Process.Pid); err != nil {
		return res, err
	}
	if res.Idle, err = k.snapshot(e.ChildProfiles, label+"idle", e.Within(30*time.Second)); err != nil {
		return res, err
	}
	if events == 0 {
		return res, nil
	}
	if err := e.Fill(ch, "rss", events); err != nil {
		return res, err
	}
	want := int64(events * subs)
	load := startProgress(k.cmd.Process.Pid)
	deadline := time.Now().Add(e.Within(60 * time.Second))
	profiled := e.ChildProfiles == ""
	for delivered.Load() < want && time.Now().Before(deadline) {
		if mb, err := vmRSS(k.cmd.Process.Pid); err == nil && mb > res.LoadMB {
			res.LoadMB = mb
		}
		load.observe(delivered.Load())
		if !profiled && load.took() > slowLoad {
			// Where a slow process spends its CPU (the RSS samples pause meanwhile).
			profiled = true
			if err := k.profileCPU(e.ChildProfiles, label+"slow", 5*time.Second); err != nil {
				fmt.Fprintln(os.Stderr, "profiling the slow dispatcher process:", err)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	res.Deliveries = int(delivered.Load())
	res.LoadTook, res.LoadCores = load.took(), load.cores()
	if int64(res.Deliveries) < want {
		// A starved process delivers slowly to the end; a stalled one stops. Its goroutines
		// say where it waits.
		why := load.summary(int64(res.Deliveries))
		_, serr := k.snapshot(e.ChildProfiles, label+"short", e.Within(30*time.Second))
		return res, errors.Join(fmt.Errorf("dispatcher process delivered %d of %d: %s", res.Deliveries, want, why), serr)
	}
	return res, nil
}

// slowLoad is how long P5's load may take before the child's CPU is profiled (with
// ChildProfiles): it takes 3-6 s on the bench machine, under load averages up to 25.
const slowLoad = 15 * time.Second

// progress follows deliveries under load and the child's CPU time, to tell a starved
// process (slow but steady, its CPU share small) from a stalled one (no delivery for long).
type progress struct {
	pid      int
	start    time.Time
	cpu0     float64
	last     int64
	lastAt   time.Time
	longest  time.Duration
	cpuError error
}

func startProgress(pid int) *progress {
	now := time.Now()
	p := &progress{pid: pid, start: now, lastAt: now}
	p.cpu0, p.cpuError = procCPUSeconds(pid)
	return p
}

// observe notes the delivery count now: the longest time without a delivery.
func (p *progress) observe(delivered int64) {
	now := time.Now()
	if delivered != p.last {
		p.last, p.lastAt = delivered, now
		return
	}
	p.longest = max(p.longest, now.Sub(p.lastAt))
}

// took is the time since the load started.
func (p *progress) took() time.Duration { return time.Since(p.start) }

// cores is the CPU the child used since the load started, in cores (1 = one core busy); -1
// where /proc cannot tell.
func (p *progress) cores() float64 {
	c, err := procCPUSeconds(p.pid)
	if err != nil || p.cpuError != nil {
		return -1
	}
	return (c - p.cpu0) / p.took().Seconds()
}

// summary is the diagnosis of a short run: the rate, the longest gap, the CPU the child got.
func (p *progress) summary(delivered int64) string {
	p.observe(delivered)
	wall := p.took()
	return fmt.Sprintf("%.0f deliveries/s over %s, longest gap without a delivery %s, the process used %.0f%% of a core, load average %s",
		float64(delivered)/wall.Seconds(), wall.Round(time.Second), p.longest.Round(100*time.Millisecond), 100*p.cores(), loadAverage())
}

// procCPUSeconds is a process's user and system CPU time from /proc/PID/stat.
func procCPUSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces; the fields after its ')' are fixed.
	_, rest, ok := strings.Cut(string(b), ") ")
	f := strings.Fields(rest)
	if !ok || len(f) < 13 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	// utime and stime are fields 14 and 15 of the line, 12 and 13 after the name, in clock
	// ticks of 1/100 s (USER_HZ on Linux).
	var ticks float64
	for _, v := range f[11:13] {
		n, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return 0, err
		}
		ticks += n
	}
	return ticks / 100, nil
}

// loadAverage is /proc/loadavg's three figures, "unknown" without it.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return "unknown"
}

// vmRSS reads a process's resident set size in MB from /proc.
func vmRSS(pid int) (float64, error) { return procStatusMB(pid, "VmRSS") }

// procStatusMB reads one kB field of /proc/PID/status (VmRSS, VmHWM, RssAnon, RssFile) in MB.
func procStatusMB(pid int, field string) (float64, error) { return procFileMB(pid, "status", field) }

// procFileMB reads one kB field of /proc/PID/<file> (status, smaps_rollup) in MB.
func procFileMB(pid int, file, field string) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, file))
	if err != nil {
		return 0, fmt.Errorf("reading the %s of %d: %w", file, pid, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			if err != nil {
				return 0, fmt.Errorf("parsing %s %q: %w", field, v, err)
			}
			return kb / 1024, nil
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/%s", field, pid, file)
}

// Timings are P6.
type Timings struct {
	SubscriberReady time.Duration
	Rebalanced      time.Duration
}

// ReadyAndRebalance measures P6: with a dispatcher running one Ready subscriber, the time from
// Update adding a second subscriber to that one being Ready; then the time from a second
// dispatcher replica starting to the group having two members that both own partitions.
func (e *Env) ReadyAndRebalance(partitions int) (Timings, error) {
	var t Timings
	ch, err := e.NewChannel("p6", partitions)
	if err != nil {
		return t, err
	}
	sink, err := StartSink(0)
	if err != nil {
		return t, err
	}
	defer sink.Close()
	first := Subscriber("p6-first", sink.URL)
	c := dispatcher.Channel{Subscribers: []v1beta1.SubscriberSpec{first}}
	d, stop, err := e.RunDispatcher(ch, c)
	if err != nil {
		return t, err
	}
	defer stop()
	if err := waitReady(d, first.UID, e.Within(60*time.Second)); err != nil {
		return t, err
	}
	second := Subscriber("p6-second", sink.URL)
	start := time.Now()
	d.Update(dispatcher.Channel{Subscribers: []v1beta1.SubscriberSpec{first, second}})
	if err := waitReady(d, second.UID, e.Within(60*time.Second)); err != nil {
		return t, err
	}
	t.SubscriberReady = time.Since(start)

	start = time.Now()
	_, stop2, err := e.RunDispatcher(ch, dispatcher.Channel{Subscribers: []v1beta1.SubscriberSpec{first, second}})
	if err != nil {
		return t, err
	}
	defer stop2()
	group := naming.GroupID(Namespace, ch.Name, first.UID)
	deadline := time.Now().Add(e.Within(60 * time.Second))
	for {
		if n, err := e.membersOwning(group); err == nil && n == 2 {
			break
		}
		if time.Now().After(deadline) {
			return t, fmt.Errorf("group %s not rebalanced over 2 replicas after 60 s", group)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Rebalanced = time.Since(start)
	return t, nil
}

// membersOwning counts the members of a stable group that were assigned partitions.
func (e *Env) membersOwning(group string) (int, error) {
	res, err := e.client.DescribeGroups(context.Background(), &kafka.DescribeGroupsRequest{GroupIDs: []string{group}})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, g := range res.Groups {
		if g.GroupState != "Stable" {
			return 0, nil
		}
		for _, m := range g.Members {
			for _, tp := range m.MemberAssignments.Topics {
				if len(tp.Partitions) > 0 {
					n++
					break
				}
			}
		}
	}
	return n, nil
}
