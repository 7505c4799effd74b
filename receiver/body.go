package receiver

import (
	"errors"
	"io"
	"math"
	"net/http"
	"os"
	"runtime/debug"
	"sync/atomic"
	"time"
)

// Defaults of the limits on bodies in flight.
const (
	// DefaultBodyIdleTimeout is how long a body may go without a byte arriving: a sender that
	// announced a body and stalls gives back its connection and its share of the budget.
	DefaultBodyIdleTimeout = 10 * time.Second
	// defaultBodyBudgetUnknownLimit is the budget when the process has no memory limit to
	// derive one from (GOMEMLIMIT unset): an eighth of the receiver's default 512 Mi limit.
	defaultBodyBudgetUnknownLimit = 64 << 20
	// bodyTimeout bounds a whole body, however steadily it trickles in.
	bodyTimeout = time.Minute
	// firstChunk is all a request holds until its first body bytes arrive, so a connection
	// that sends headers only costs next to nothing.
	firstChunk = 512
	// smallBody is read into one buffer of its announced size from the start: little to
	// hold for an idle request, and most events are this small.
	smallBody = 4 << 10
	// growChunk is the buffer once bytes flow, or the whole body when smaller: the common
	// event (a few KiB to tens of KiB) is read into one allocation of its exact size.
	growChunk = 64 << 10
)

// DefaultBodyBudget is the default of Config.BodyBudgetBytes: a quarter of the Go memory limit
// (GOMEMLIMIT) when one is set, else 64 MiB; never less than one largest body.
func DefaultBodyBudget() int64 {
	budget := int64(defaultBodyBudgetUnknownLimit)
	// SetMemoryLimit with a negative value only reads the limit; MaxInt64 means none is set.
	if lim := debug.SetMemoryLimit(-1); lim > 0 && lim < math.MaxInt64 {
		budget = lim / 4
	}
	return max(budget, DefaultMaxBodyBytes)
}

// byteBudget bounds the bytes of request bodies held at once. It never blocks: a request
// that does not fit is answered 503 at once, so a flood of senders cannot queue up memory
// either.
type byteBudget struct {
	limit int64
	used  atomic.Int64
}

func (b *byteBudget) take(n int64) bool {
	for {
		cur := b.used.Load()
		if cur+n > b.limit {
			return false
		}
		if b.used.CompareAndSwap(cur, cur+n) {
			return true
		}
	}
}

func (b *byteBudget) give(n int64) { b.used.Add(-n) }

// idleReader gives each Read of the body its own deadline, so a stalled sender is cut off
// after the idle timeout instead of the server's whole read timeout.
type idleReader struct {
	r    io.Reader
	rc   *http.ResponseController
	idle time.Duration
	end  time.Time
}

func (d *idleReader) Read(p []byte) (int, error) {
	deadline := time.Now().Add(d.idle)
	if deadline.After(d.end) {
		deadline = d.end
	}
	// Not supported (a ResponseWriter without a connection, as in handler tests) leaves
	// the server's read timeout in force.
	_ = d.rc.SetReadDeadline(deadline)
	return d.r.Read(p)
}

// readBody reads the body as its bytes arrive, at most Config.MaxBodyBytes (more: 413). The
// buffer starts small and grows with what has arrived, never with what Content-Length
// announces, and every byte of it is taken from the receiver's body budget first: when the
// budget is spent the request gets 503 with Retry-After. It returns the body and the bytes
// taken, which the caller gives back once the event is done with.
func (r *Receiver) readBody(w http.ResponseWriter, req *http.Request) (body []byte, taken int64, rej *rejection) {
	limit := r.cfg.MaxBodyBytes
	if req.ContentLength > limit {
		return nil, 0, reject(http.StatusRequestEntityTooLarge,
			"the event is %d bytes, more than the limit of %d bytes", req.ContentLength, limit)
	}
	// The most bytes the body can have: net/http ends a body at its Content-Length.
	most := limit
	if req.ContentLength >= 0 {
		most = req.ContentLength
	}
	in := &idleReader{
		r:    http.MaxBytesReader(w, req.Body, limit),
		rc:   http.NewResponseController(w),
		idle: r.cfg.BodyIdleTimeout,
		end:  time.Now().Add(bodyTimeout),
	}
	r.metrics.bodiesReading.Inc()
	defer r.metrics.bodiesReading.Dec()
	for {
		if len(body) == cap(body) {
			if int64(len(body)) == most {
				if req.ContentLength >= 0 {
					return body, taken, nil
				}
				// A body of unknown length that filled the limit: it must end here.
				return r.endOfBody(in, body, taken)
			}
			size := nextSize(int64(cap(body)), most)
			if !r.budget.take(size - taken) {
				w.Header().Set("Retry-After", retryAfter)
				return nil, taken, reject(http.StatusServiceUnavailable,
					"the receiver holds as many event bodies as its memory allows (%d bytes); retry shortly", r.budget.limit)
			}
			taken = size
			grown := make([]byte, len(body), size)
			copy(grown, body)
			body = grown
		}
		n, err := in.Read(body[len(body):cap(body)])
		body = body[:len(body)+n]
		switch {
		case errors.Is(err, io.EOF):
			if req.ContentLength >= 0 && int64(len(body)) < req.ContentLength {
				err = io.ErrUnexpectedEOF
				return nil, taken, readFailure(err, limit, r.cfg.BodyIdleTimeout)
			}
			return body, taken, nil
		case err != nil:
			return nil, taken, readFailure(err, limit, r.cfg.BodyIdleTimeout)
		}
	}
}

// endOfBody checks that a body of unknown length that filled the limit ends there.
func (r *Receiver) endOfBody(in io.Reader, body []byte, taken int64) ([]byte, int64, *rejection) {
	var probe [1]byte
	for {
		n, err := in.Read(probe[:])
		switch {
		case n > 0:
			return nil, taken, readFailure(&http.MaxBytesError{Limit: r.cfg.MaxBodyBytes}, r.cfg.MaxBodyBytes, r.cfg.BodyIdleTimeout)
		case errors.Is(err, io.EOF):
			return body, taken, nil
		case err != nil:
			return nil, taken, readFailure(err, r.cfg.MaxBodyBytes, r.cfg.BodyIdleTimeout)
		}
	}
}

// nextSize is the buffer size after cur, for a body of at most most bytes.
func nextSize(cur, most int64) int64 {
	switch {
	case cur == 0 && most <= smallBody:
		return most
	case cur == 0:
		return min(firstChunk, most)
	case cur < growChunk:
		return min(growChunk, most)
	default:
		return min(2*cur, most)
	}
}

func readFailure(err error, limit int64, idle time.Duration) *rejection {
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		return reject(http.StatusRequestEntityTooLarge, "the event is larger than the limit of %d bytes", limit)
	case errors.Is(err, os.ErrDeadlineExceeded):
		return reject(http.StatusRequestTimeout, "the body stopped arriving (no byte for %s) or took longer than %s", idle, bodyTimeout)
	}
	return reject(http.StatusBadRequest, "reading the request body: %v", err)
}

// retryAfter (seconds) answers a full body budget: bodies in flight are read and written to
// Kafka within about a second, or cut off by the idle timeout.
const retryAfter = "1"
