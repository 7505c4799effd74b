package dispatcher

import (
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// spinsUntilOwned runs kafka-go's Conn.waitResponse loop (lock, set the read deadline, peek a
// buffered response that is another goroutine's, unlock) on conn with one CPU, and counts its
// turns until that other goroutine, waiting for the same mutex, got it.
func spinsUntilOwned(conn net.Conn) int {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	var rlock sync.Mutex
	var owned atomic.Bool
	done := make(chan struct{})
	rlock.Lock()
	go func() {
		defer close(done)
		rlock.Lock()
		owned.Store(true)
		rlock.Unlock()
	}()
	deadline := time.Now().Add(time.Minute)
	turns := 0
	for ; turns < 10_000_000; turns++ {
		_ = conn.SetReadDeadline(deadline)
		rlock.Unlock()
		if owned.Load() {
			break
		}
		rlock.Lock()
	}
	<-done
	return turns
}

// A goroutine that sets read deadlines over and over without reading is kafka-go waiting for a
// response another goroutine owns: it must let that goroutine run rather than spin until the
// scheduler preempts it.
func TestSpinningReaderYieldsToTheResponsesOwner(t *testing.T) {
	a, b := net.Pipe()
	defer func() { _ = a.Close(); _ = b.Close() }()
	w := &brokerWatch{down: map[string]bool{}, done: make(chan struct{})}
	turns := spinsUntilOwned(&watchedConn{Conn: a, address: "broker:9092", w: w})
	// Yielding, the owner gets the mutex within its 1 ms of waiting and a few turns; spinning,
	// not before a preemption, some 10 ms of turns (about 100,000 on a pipe).
	if turns > 1000 {
		t.Errorf("the spinning goroutine turned %d times before the response's owner ran", turns)
	}
	t.Logf("%d turns", turns)
}
