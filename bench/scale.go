package bench

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kafkachannel/kafkachannel/api/v1beta1"
	"github.com/kafkachannel/kafkachannel/dispatcher"
)

// countingSink answers 202 at once and counts every delivery, duplicates included: with many
// subscribers the same event id arrives once per subscriber.
type countingSink struct {
	srv  *http.Server
	URL  string
	n    atomic.Int64
	want int64
	mu   sync.Mutex
	t0   time.Time
	t1   time.Time
	done chan struct{}
}

func startCountingSink(want int64) (*countingSink, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listening for the sink: %w", err)
	}
	s := &countingSink{URL: "http://" + ln.Addr().String() + "/", want: want, done: make(chan struct{})}
	s.srv = &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		now := time.Now()
		n := s.n.Add(1)
		s.mu.Lock()
		if s.t0.IsZero() {
			s.t0 = now
		}
		s.t1 = now
		s.mu.Unlock()
		if n == s.want {
			close(s.done)
		}
		w.WriteHeader(http.StatusAccepted)
	})}
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

// FanOutRate is P8: one dispatcher, one channel, `subs` subscribers (each its own consumer
// group) on one instant sink; n records, so n x subs deliveries, per second from the first
// delivery to the last.
func (e *Env) FanOutRate(ch Channel, subs, n int, budget time.Duration) (float64, error) {
	sink, err := startCountingSink(int64(n * subs))
	if err != nil {
		return 0, err
	}
	defer func() { _ = sink.srv.Close() }()
	var specs []v1beta1.SubscriberSpec
	for i := range subs {
		specs = append(specs, Subscriber(fmt.Sprintf("fan-%d-%02d", e.seq.Add(1), i), sink.URL+strconv.Itoa(i)))
	}
	c := dispatcher.Channel{Subscribers: specs, Unordered: true}
	var uids []string
	for _, s := range specs {
		uids = append(uids, s.UID)
	}
	// As in P1: the records are in Kafka before the measured dispatcher starts.
	if err := e.Prime(ch, c, uids...); err != nil {
		return 0, err
	}
	if err := e.Fill(ch, "fan", n); err != nil {
		return 0, err
	}
	_, stop, err := e.RunDispatcher(ch, c)
	if err != nil {
		return 0, err
	}
	defer stop()
	if err := wait(sink.done, budget); err != nil {
		return 0, fmt.Errorf("fan-out delivered %d of %d: %w", sink.n.Load(), n*subs, err)
	}
	sink.mu.Lock()
	defer sink.mu.Unlock()
	return rate(n*subs, sink.t1.Sub(sink.t0)), nil
}

// IdleResult is S2: what one idle dispatcher process (one channel, one subscriber) costs.
type IdleResult struct {
	Channels   int
	Partitions int
	// RSSMB, Goroutines and KafkaConns are per process: the mean and the largest.
	RSSMB, MaxRSSMB float64
	// AnonMB is the mean anonymous memory of a process (smaps_rollup's Anonymous: heap and
	// stacks, what each further channel's process adds), MaxAnonMB the largest; FileMB the
	// mean file-backed RSS (the mapped binary).
	AnonMB, MaxAnonMB, FileMB float64
	// PSSMB is the mean proportional set size: shared pages (the binary, mapped by every
	// process of the sample) divided among their sharers. TotalPSSMB is their sum, what the
	// whole sample costs the node.
	PSSMB, TotalPSSMB     float64
	Goroutines, MaxGorout float64
	KafkaConns, MaxConns  float64
	// Window is how long requests were counted while every process was idle.
	Window time.Duration
	// Requests counts every request the broker got in the window, by API name.
	Requests map[string]int
	// Counted is false against an external Kafka, whose requests the bench cannot see.
	Counted bool
	n       int // processes sampled
}

// FetchPerPartitionSec is the idle fetch rate of one partition of one subscriber.
func (r IdleResult) FetchPerPartitionSec() float64 {
	return float64(r.Requests["Fetch"]) / r.Window.Seconds() / float64(r.Channels*r.Partitions)
}

// PerChannelSec is the rate of all requests one idle channel costs the broker.
func (r IdleResult) PerChannelSec() float64 {
	t := 0
	for _, n := range r.Requests {
		t += n
	}
	return float64(t) / r.Window.Seconds() / float64(r.Channels)
}

// sample adds one idle process to the sums: its memory from /proc, its established
// connections to the broker's port, and its goroutines as it reported them.
func (r *IdleResult) sample(pid int, brokerPort string, goroutines float64) error {
	rss, err := procStatusMB(pid, "VmRSS")
	if err != nil {
		return err
	}
	anon, err := procFileMB(pid, "smaps_rollup", "Anonymous")
	if err != nil {
		return err
	}
	file, err := procStatusMB(pid, "RssFile")
	if err != nil {
		return err
	}
	pss, err := procFileMB(pid, "smaps_rollup", "Pss")
	if err != nil {
		return err
	}
	conns, err := tcpConnsTo(pid, brokerPort)
	if err != nil {
		return err
	}
	r.n++
	r.RSSMB, r.AnonMB, r.FileMB, r.PSSMB = r.RSSMB+rss, r.AnonMB+anon, r.FileMB+file, r.PSSMB+pss
	r.MaxRSSMB, r.MaxAnonMB = max(r.MaxRSSMB, rss), max(r.MaxAnonMB, anon)
	r.TotalPSSMB += pss
	r.Goroutines += goroutines
	r.MaxGorout = max(r.MaxGorout, goroutines)
	r.KafkaConns += float64(conns)
	r.MaxConns = max(r.MaxConns, float64(conns))
	return nil
}

// average turns the sums of sample into means.
func (r *IdleResult) average() {
	if r.n == 0 {
		return
	}
	f := float64(r.n)
	r.RSSMB, r.AnonMB, r.FileMB, r.PSSMB = r.RSSMB/f, r.AnonMB/f, r.FileMB/f, r.PSSMB/f
	r.Goroutines, r.KafkaConns = r.Goroutines/f, r.KafkaConns/f
}

// countRequests counts every request the embedded Kafka handles, by API key, from reset on.
func (e *Env) countRequests() (counts func() map[string]int, reset func(), ok bool) {
	if e.cluster == nil {
		return func() map[string]int { return nil }, func() {}, false
	}
	counts, reset = countRequests(e.cluster)
	return counts, reset, true
}

// countRequests counts every request c handles, by API name, from reset on. It observes
// through kfake's control hook without answering.
func countRequests(c *kfake.Cluster) (counts func() map[string]int, reset func()) {
	var mu sync.Mutex
	byKey := map[int16]int{}
	on := atomic.Bool{}
	c.Control(func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if on.Load() {
			mu.Lock()
			byKey[req.Key()]++
			mu.Unlock()
		}
		// Not handled: the cluster answers as usual.
		return nil, nil, false
	})
	counts = func() map[string]int {
		mu.Lock()
		defer mu.Unlock()
		out := map[string]int{}
		for k, n := range byKey {
			out[kmsg.NameForKey(k)] += n
		}
		return out
	}
	reset = func() {
		mu.Lock()
		clear(byKey)
		mu.Unlock()
		on.Store(true)
	}
	return counts, reset
}

// IdleCost starts `channels` dispatcher processes (the bench binary as ChildCommand, one channel
// of `partitions` each with one subscriber), waits until all are Ready and settled, reads each
// process's RSS, goroutines and Kafka connections, and counts the broker's requests for window.
func (e *Env) IdleCost(self string, channels, partitions int, window time.Duration) (IdleResult, error) {
	res := IdleResult{Channels: channels, Partitions: partitions, Window: window}
	sink, err := startCountingSink(-1)
	if err != nil {
		return res, err
	}
	defer func() { _ = sink.srv.Close() }()
	counts, reset, counted := e.countRequests()
	res.Counted = counted
	var kids []*child
	defer func() {
		for _, k := range kids {
			_ = k.stdin.Close()
		}
		for _, k := range kids {
			k.wait()
		}
	}()
	for i := range channels {
		ch, err := e.NewChannel("idle", partitions)
		if err != nil {
			return res, err
		}
		k, err := e.startChild(self, ch, sink.URL, 1)
		if err != nil {
			return res, fmt.Errorf("dispatcher process %d: %w", i, err)
		}
		kids = append(kids, k)
	}
	for i, k := range kids {
		if err := k.expectLine("ready", e.Within(90*time.Second)); err != nil {
			return res, fmt.Errorf("dispatcher process %d: %w", i, err)
		}
	}
	// Start-up garbage collected, joins and first commits done: the steady idle state.
	time.Sleep(e.Settle)
	reset()
	time.Sleep(window)
	res.Requests = counts()
	port := ""
	if _, p, err := net.SplitHostPort(e.Brokers[0]); err == nil {
		port = p
	}
	for i, k := range kids {
		line, err := k.ask(cmdGoroutines, e.Within(10*time.Second))
		if err != nil {
			return res, fmt.Errorf("dispatcher process %d: %w", i, err)
		}
		g, err := strconv.Atoi(line)
		if err != nil {
			return res, fmt.Errorf("dispatcher process %d answered %q", i, line)
		}
		if err := res.sample(k.cmd.Process.Pid, port, float64(g)); err != nil {
			return res, err
		}
	}
	res.average()
	return res, nil
}

// tcpConnsTo counts the process's established TCP connections whose remote port is port: the
// socket inodes of /proc/PID/fd matched with /proc/PID/net/tcp and tcp6.
func tcpConnsTo(pid int, port string) (int, error) {
	p, err := strconv.Atoi(port)
	if err != nil {
		return 0, fmt.Errorf("broker port %q: %w", port, err)
	}
	fds, err := filepath.Glob(fmt.Sprintf("/proc/%d/fd/*", pid))
	if err != nil {
		return 0, err
	}
	inodes := map[string]bool{}
	for _, fd := range fds {
		if l, err := os.Readlink(fd); err == nil {
			if in, ok := strings.CutPrefix(l, "socket:["); ok {
				inodes[strings.TrimSuffix(in, "]")] = true
			}
		}
	}
	wantPort := fmt.Sprintf(":%04X", p)
	n := 0
	found := false
	for _, f := range []string{"tcp", "tcp6"} {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, f))
		if err != nil {
			continue
		}
		found = true
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fs := strings.Fields(line)
			// sl local rem st ... inode (field 9); st 01 is ESTABLISHED.
			if len(fs) > 9 && strings.HasSuffix(fs[2], wantPort) && fs[3] == "01" && inodes[fs[9]] {
				n++
			}
		}
	}
	if !found {
		return 0, errors.New("no /proc/PID/net/tcp: counting connections needs Linux")
	}
	return n, nil
}
