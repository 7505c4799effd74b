package bench

import (
	"sync"
	"testing"
	"time"
)

// A system that takes 10 ms per event, one at a time, cannot keep up with 1,000 events a second:
// the open loop must show the backlog as latency (every event counted from its due time) and
// report the pacer falling behind, not measure each event from when a sender got to it.
func TestOpenLoopCountsFromTheDueTime(t *testing.T) {
	const service = 10 * time.Millisecond
	var serial sync.Mutex
	loop := newOpenLoop(Schedule{Rate: 1000, N: 20, MaxSenders: 1})
	res, err := loop.run(func(i int) error {
		serial.Lock()
		defer serial.Unlock()
		time.Sleep(service)
		loop.arrive(i, time.Now())
		return nil
	}, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// Event i waits for the i before it: at least i x 10 ms of service minus the i ms it was
	// due later, whatever the machine's load. The last event's latency is at least 19 x 9 ms.
	if floor := 19 * (service - time.Millisecond); res.Max < floor {
		t.Errorf("max latency %s, want >= %s: the backlog behind one sender is not counted", res.Max, floor)
	}
	if floor := 18 * (service - time.Millisecond); res.PacerLagMax < floor {
		t.Errorf("pacer lag %s, want >= %s: a pacer at its sender cap must report how late it started events", res.PacerLagMax, floor)
	}
	if res.Senders != 1 {
		t.Errorf("senders = %d, want the cap 1", res.Senders)
	}
	if res.Achieved >= res.Offered {
		t.Errorf("achieved %.0f/s >= offered %.0f/s for a system taking 10 ms per event", res.Achieved, res.Offered)
	}
}

// Without a cap the pacer starts a sender for every event that finds none free, so a slow
// answer does not delay the events due after it.
func TestOpenLoopAddsSendersInsteadOfQueueing(t *testing.T) {
	release := make(chan struct{})
	loop := newOpenLoop(Schedule{Rate: 1000, N: 10, Warm: 2})
	done := make(chan LoopResult, 1)
	errs := make(chan error, 1)
	go func() {
		res, err := loop.run(func(i int) error {
			<-release
			loop.arrive(i, time.Now())
			return nil
		}, 10*time.Second)
		done <- res
		errs <- err
	}()
	// Every send blocks until released, so the loop can only get through its 12 events by
	// starting a sender for each.
	deadline := time.Now().Add(10 * time.Second)
	for loop.startedSenders() < 12 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	close(release)
	res := <-done
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	if res.Senders != 12 {
		t.Errorf("senders = %d, want 12 (one per event, each blocked)", res.Senders)
	}
	if res.N != 10 {
		t.Errorf("%d events counted, want 10 (the 2 warm-up events are not)", res.N)
	}
}

func TestOpenLoopFailsWhenEventsDoNotArrive(t *testing.T) {
	loop := newOpenLoop(Schedule{Rate: 1000, N: 5})
	_, err := loop.run(func(i int) error {
		if i != 3 {
			loop.arrive(i, time.Now())
		}
		return nil
	}, 50*time.Millisecond)
	if err == nil {
		t.Fatal("a run with an event that never arrived must fail, not report percentiles of the others")
	}
}
