package bench

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Schedule is an open-loop load: N events, event i due at Start + i/Rate, whatever happened to
// the events before it. A closed loop (send, wait, send) slows down with the system it measures
// and so never shows a backlog; here a backlog shows as latency, because every event's latency
// is counted from its due time, not from when a sender got to it.
type Schedule struct {
	// Rate is the offered rate, events per second.
	Rate int
	// N is how many events are measured.
	N int
	// Warm events go first at the same rate and are not counted: the first requests open
	// connections, fetch metadata and warm the broker's JIT.
	Warm int
	// MaxSenders caps the concurrent senders; the pacer starts a new one whenever an event is
	// due and none is free. At the cap the pacer waits, which it reports as its lag.
	MaxSenders int
}

// Bucket is the latency of the events due in one slice of the window.
type Bucket struct {
	// At is the start of the slice from the first measured event's due time.
	At            time.Duration
	P50, P99, Max time.Duration
	N             int
}

// LoopResult is one open-loop run.
type LoopResult struct {
	// Latencies are from each event's due time to its arrival.
	Latencies
	// Offered is the schedule's rate; Achieved is the events the system accepted per second,
	// from the first measured due time to the last acceptance: below Offered when it could not
	// keep up.
	Offered, Achieved float64
	// Senders is how many concurrent senders the run needed (started).
	Senders int
	// PacerLagMax and PacerLagP99 are how late a sender started an event after its due time:
	// the pacer's own backlog (scheduling, the sender cap), already inside the latencies.
	PacerLagMax, PacerLagP99 time.Duration
	// Accepted is from each event's due time to its send returning (the receiver's 202, the
	// producer's acknowledgement): the ingress half of Latencies.
	Accepted Latencies
	// CPUPerEvent is the CPU time the whole bench process (senders, and whatever of the path
	// runs in it) used per event during the run, Cores that time over the run's wall time: on a
	// shared machine a path whose CPU per event times the rate exceeds the cores it gets cannot
	// keep up, whatever its code does.
	CPUPerEvent time.Duration
	Cores       float64
	// Series is the latency over the window in slices of SeriesStep.
	Series []Bucket
}

// SeriesStep is the width of one bucket of LoopResult.Series.
const SeriesStep = 250 * time.Millisecond

// Describe is the row's text for the run: percentiles, offered and achieved rates, senders and
// the pacer's lag.
func (l LoopResult) Describe() string {
	return fmt.Sprintf("p50 %s / p99 %s / max %s ms; offered %.0f/s, achieved %.0f/s, %d senders, pacer lag p99 %s / max %s ms; accepted p50 %s / p99 %s ms; bench process CPU %.0f us/event (%.2f cores)",
		msf(l.P50), msf(l.P99), msf(l.Max), l.Offered, l.Achieved, l.Senders, msf(l.PacerLagP99), msf(l.PacerLagMax), msf(l.Accepted.P50), msf(l.Accepted.P99),
		float64(l.CPUPerEvent.Nanoseconds())/1000, l.Cores)
}

func msf(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d.Microseconds())/1000) }

// openLoop runs s: send(i) for every event in order of due time, i from 0 to Warm+N-1, each on
// a free sender. arrived(i) must be called (by the sink, from any goroutine) when event i
// arrives; openLoop waits for the measured events until budget ends.
type openLoop struct {
	s Schedule
	// start is the due time of event 0 in Unix ns, set when the run begins; arrivals can come
	// from other goroutines at any time, so it is atomic.
	start   atomic.Int64
	arrived []atomic.Int64 // ns after start, 0: not yet
	count   atomic.Int64
	all     chan struct{}
	senders atomic.Int64
}

// startedSenders is how many senders the run has started so far.
func (o *openLoop) startedSenders() int { return int(o.senders.Load()) }

func newOpenLoop(s Schedule) *openLoop {
	if s.MaxSenders <= 0 {
		s.MaxSenders = 1024
	}
	return &openLoop{s: s, arrived: make([]atomic.Int64, s.Warm+s.N), all: make(chan struct{})}
}

// due is when event i is to be sent.
func (o *openLoop) due(i int) time.Time {
	return time.Unix(0, o.start.Load()).Add(time.Duration(i) * time.Second / time.Duration(o.s.Rate))
}

// arrive records event i's arrival now; later arrivals of the same event (redeliveries) and
// unknown events are ignored.
func (o *openLoop) arrive(i int, at time.Time) {
	start := o.start.Load()
	if i < 0 || i >= len(o.arrived) || start == 0 {
		return
	}
	ns := max(at.UnixNano()-start, 1)
	if o.arrived[i].CompareAndSwap(0, ns) && i >= o.s.Warm {
		if o.count.Add(1) == int64(o.s.N) {
			close(o.all)
		}
	}
}

// run paces the events and waits for their arrival within budget after the last is due.
func (o *openLoop) run(send func(i int) error, budget time.Duration) (LoopResult, error) {
	total := o.s.Warm + o.s.N
	started := make([]time.Time, total)
	accepted := make([]time.Time, total)
	var failed atomic.Int64
	var firstErr atomic.Value
	jobs := make(chan int)
	var wg sync.WaitGroup
	senders := 0
	sender := func(i int) {
		defer wg.Done()
		for ok := true; ok; i, ok = <-jobs {
			started[i] = time.Now()
			if err := send(i); err != nil {
				if failed.Add(1) == 1 {
					firstErr.Store(err)
				}
				continue
			}
			accepted[i] = time.Now()
		}
	}
	cpu0, wall0 := processCPU(), time.Now()
	// The start is a little ahead so the first due time is not already past.
	o.start.Store(time.Now().Add(time.Millisecond).UnixNano())
	for i := range total {
		if d := time.Until(o.due(i)); d > 0 {
			time.Sleep(d)
		}
		select {
		case jobs <- i:
			continue
		default:
		}
		if senders < o.s.MaxSenders {
			senders++
			o.senders.Add(1)
			wg.Add(1)
			go sender(i)
			continue
		}
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	if f := failed.Load(); f > 0 {
		return LoopResult{}, fmt.Errorf("%d of %d sends failed, the first: %w", f, total, firstErr.Load().(error))
	}
	select {
	case <-o.all:
	case <-time.After(budget):
		return LoopResult{}, fmt.Errorf("%d of %d events arrived: %w", o.count.Load(), o.s.N, errTimeout)
	}
	res := o.result(started, accepted, senders)
	if cpu, wall := processCPU()-cpu0, time.Since(wall0); cpu > 0 && wall > 0 {
		res.CPUPerEvent = cpu / time.Duration(total)
		res.Cores = cpu.Seconds() / wall.Seconds()
	}
	return res, nil
}

// processCPU is the user and system CPU time this process has used; 0 where unknown.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func (o *openLoop) result(started, accepted []time.Time, senders int) LoopResult {
	w := o.s.Warm
	res := LoopResult{Offered: float64(o.s.Rate), Senders: senders}
	first := o.due(w)
	lat := make([]time.Duration, 0, o.s.N)
	lags := make([]time.Duration, 0, o.s.N)
	acc := make([]time.Duration, 0, o.s.N)
	var last time.Time
	buckets := map[int][]time.Duration{}
	for i := w; i < w+o.s.N; i++ {
		due := o.due(i)
		l := time.Unix(0, o.start.Load()+o.arrived[i].Load()).Sub(due)
		lat = append(lat, l)
		lags = append(lags, started[i].Sub(due))
		acc = append(acc, accepted[i].Sub(due))
		if accepted[i].After(last) {
			last = accepted[i]
		}
		b := int(due.Sub(first) / SeriesStep)
		buckets[b] = append(buckets[b], l)
	}
	res.Latencies = percentiles(lat)
	res.Accepted = percentiles(acc)
	lp := percentiles(lags)
	res.PacerLagP99, res.PacerLagMax = max(lp.P99, 0), max(lp.Max, 0)
	if el := last.Sub(first); el > 0 {
		res.Achieved = float64(o.s.N) / el.Seconds()
	}
	keys := make([]int, 0, len(buckets))
	for k := range buckets {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		p := percentiles(buckets[k])
		res.Series = append(res.Series, Bucket{At: time.Duration(k) * SeriesStep, P50: p.P50, P99: p.P99, Max: p.Max, N: p.N})
	}
	return res
}

// errNoSchedule is returned for a schedule that sends nothing.
var errNoSchedule = errors.New("a latency run needs a positive rate and event count")

func (s Schedule) check() error {
	if s.Rate <= 0 || s.N <= 0 || s.Warm < 0 {
		return errNoSchedule
	}
	return nil
}
