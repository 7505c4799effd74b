package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
)

// A broker that stops answering without closing its connections (a frozen process, a network
// dropping packets) stalls kafka-go's partition readers and consumer groups for far longer than
// a dead one, which refuses connections at once:
//   - a reader looks its partition's leader up from the configured brokers in order, and that
//     metadata request has no deadline, so with the first broker frozen every reader that
//     reconnects waits until the broker answers again;
//   - a group that lost its coordinator connects to the first broker that accepts a TCP
//     connection, and a frozen broker does (its kernel still completes the handshake): each
//     rejoin spends its 5 s request timeout there, and against a frozen coordinator its join
//     waits up to timeout + rebalance timeout (20 s), past the failover it waits for.
//
// brokerWatch fixes both from the dialer, the one hook kafka-go offers on those paths: a read
// that would otherwise wait for ever gets a deadline, a read that times out on a connection
// marks its broker as not answering, and while it is marked, dials to it fail at once so
// kafka-go moves on to the next broker. A probe (a fresh connection and an ApiVersions
// request) clears the mark as soon as the broker answers again, so a broker marked by a
// merely slow answer is back within a probe interval.
type brokerWatch struct {
	dial  func(ctx context.Context, network, address string) (net.Conn, error)
	probe func(ctx context.Context, address string) error

	mu   sync.Mutex
	down map[string]bool
	done chan struct{}
	wg   sync.WaitGroup
}

const (
	// unansweredAfter bounds a read kafka-go starts without a deadline (leader lookups): a
	// broker answers metadata in milliseconds.
	unansweredAfter = 3 * time.Second
	// probeInterval spaces the probes of a broker marked as not answering.
	probeInterval = 500 * time.Millisecond
	// probeTimeout bounds one probe, connection and ApiVersions together.
	probeTimeout = 2 * time.Second
)

// errNotAnswering fails a dial to a broker marked as not answering.
var errNotAnswering = errors.New("the broker stopped answering; trying another one until it answers a probe again")

// newBrokerWatch watches the brokers base dials.
func newBrokerWatch(base *kafka.Dialer) *brokerWatch {
	dial := base.DialFunc
	if dial == nil {
		dial = (&net.Dialer{LocalAddr: base.LocalAddr, FallbackDelay: base.FallbackDelay, KeepAlive: base.KeepAlive}).DialContext
	}
	prober := *base
	// The deadline covers the TLS and SASL handshakes too, which kafka-go reads without one.
	prober.DialFunc = func(ctx context.Context, network, address string) (net.Conn, error) {
		c, err := dial(ctx, network, address)
		if err != nil {
			return nil, err
		}
		if err := c.SetDeadline(time.Now().Add(probeTimeout)); err != nil {
			_ = c.Close()
			return nil, err
		}
		return c, nil
	}
	prober.Timeout = probeTimeout
	w := &brokerWatch{dial: dial, down: map[string]bool{}, done: make(chan struct{})}
	w.probe = func(ctx context.Context, address string) error {
		c, err := prober.DialContext(ctx, "tcp", address)
		if err != nil {
			return err
		}
		defer func() { _ = c.Close() }()
		if err := c.SetDeadline(time.Now().Add(probeTimeout)); err != nil {
			return err
		}
		_, err = c.ApiVersions()
		return err
	}
	return w
}

// dialer is base dialing through the watch.
func (w *brokerWatch) dialer(base *kafka.Dialer) *kafka.Dialer {
	d := *base
	d.DialFunc = w.dialContext
	return &d
}

func (w *brokerWatch) dialContext(ctx context.Context, network, address string) (net.Conn, error) {
	if w.isDown(address) {
		return nil, fmt.Errorf("dialing %s: %w", address, errNotAnswering)
	}
	c, err := w.dial(ctx, network, address)
	if err != nil {
		return nil, err
	}
	return &watchedConn{Conn: c, address: address, w: w}, nil
}

// transport is a Transport like base (when it is one) whose dials skip the brokers marked as
// not answering. Its connections are not watched: a Transport keeps them open and idle between
// requests, and bounds each request by its context instead.
func (w *brokerWatch) transport(base kafka.RoundTripper) *kafka.Transport {
	t := &kafka.Transport{}
	dial := w.dial
	if b, ok := base.(*kafka.Transport); ok {
		t.DialTimeout, t.IdleTimeout, t.MetadataTTL = b.DialTimeout, b.IdleTimeout, b.MetadataTTL
		t.MetadataTopics, t.ClientID, t.TLS, t.SASL, t.Resolver = b.MetadataTopics, b.ClientID, b.TLS, b.SASL, b.Resolver
		if b.Dial != nil {
			dial = b.Dial
		}
	}
	t.Dial = func(ctx context.Context, network, address string) (net.Conn, error) {
		if w.isDown(address) {
			return nil, fmt.Errorf("dialing %s: %w", address, errNotAnswering)
		}
		return dial(ctx, network, address)
	}
	return t
}

func (w *brokerWatch) isDown(address string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.down[address]
}

// markDown fails dials to address until a probe gets an answer from it.
func (w *brokerWatch) markDown(address string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.down[address] {
		return
	}
	select {
	case <-w.done:
		return
	default:
	}
	w.down[address] = true
	w.wg.Add(1)
	go w.probeUntilUp(address)
}

func (w *brokerWatch) probeUntilUp(address string) {
	defer w.wg.Done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-w.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	t := time.NewTicker(probeInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if w.probe(ctx, address) == nil {
			w.mu.Lock()
			delete(w.down, address)
			w.mu.Unlock()
			return
		}
	}
}

// close stops the probes.
func (w *brokerWatch) close() {
	w.mu.Lock()
	select {
	case <-w.done:
	default:
		close(w.done)
	}
	w.mu.Unlock()
	w.wg.Wait()
}

// watchedConn reports reads that time out to its brokerWatch, bounds reads started without a
// deadline, and makes a goroutine spinning on the connection yield (yieldIfSpinning).
type watchedConn struct {
	net.Conn
	address string
	w       *brokerWatch

	mu       sync.Mutex
	deadline time.Time // the read deadline the user of the connection set
	// unread counts the read deadlines set since the last Read.
	unread int
}

// A kafka-go Conn (v0.4.51) shared by several goroutines spins while one of them waits for a
// response that another owns. The consumer group's coordinator connection is shared so: the
// heartbeat, the commits of the partitions and of the commit ticker, the partition watch.
// Conn.waitResponse loops: lock the read mutex, set the read deadline (setConnReadDeadline),
// peek the next response's size and correlation id, and when the id is another goroutine's,
// unlock and loop again. The peek is served from the bufio.Reader, which already holds those 8
// bytes, so the loop never reads, never blocks and re-takes the mutex it just released before
// the owner, woken by the unlock, gets a CPU: sync.Mutex lets a running goroutine barge in. It
// spins until the scheduler preempts it (10 ms or more), or until the owner, after waiting
// over 1 ms, finds the mutex taken once more and switches it to starvation mode. On a process
// with hundreds of groups and a CPU share below its demand, every such collision burns its
// slice while the goroutines it waits for (the owner, heartbeats of other groups) queue.
//
// The only hook into that loop is SetReadDeadline, called on every turn, so a repeated call
// without a Read in between is the spin: it yields the CPU, and past spinSleepAfter turns it
// sleeps, which lets the owner run, find the mutex held and claim it at the next unlock.
// kafka-go's Conn.SetDeadline also sets the read deadline of a read in progress, from the
// goroutine starting the next request: such calls count too, and pay a yield or a 50 us sleep
// when several come during one blocked Read.
const (
	spinSleepAfter = 4
	spinPause      = 50 * time.Microsecond
)

// yieldIfSpinning yields after the n-th read deadline set without a Read.
func yieldIfSpinning(n int) {
	switch {
	case n >= spinSleepAfter:
		time.Sleep(spinPause)
	case n > 1:
		runtime.Gosched()
	}
}

func (c *watchedConn) SetDeadline(t time.Time) error {
	c.setReadDeadline(t)
	return c.Conn.SetDeadline(t)
}

func (c *watchedConn) SetReadDeadline(t time.Time) error {
	c.setReadDeadline(t)
	return c.Conn.SetReadDeadline(t)
}

func (c *watchedConn) setReadDeadline(t time.Time) {
	c.mu.Lock()
	c.deadline = t
	c.unread++
	n := c.unread
	c.mu.Unlock()
	yieldIfSpinning(n)
}

func (c *watchedConn) Read(b []byte) (int, error) {
	c.mu.Lock()
	unbounded := c.deadline.IsZero()
	c.unread = 0
	c.mu.Unlock()
	if unbounded {
		if err := c.Conn.SetReadDeadline(time.Now().Add(unansweredAfter)); err != nil {
			return 0, err
		}
	}
	n, err := c.Conn.Read(b)
	var nerr net.Error
	if n == 0 && errors.As(err, &nerr) && nerr.Timeout() {
		c.w.markDown(c.address)
	}
	return n, err
}
