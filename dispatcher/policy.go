package dispatcher

import (
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/kafkachannel/kafkachannel/api/v1beta1"
	"github.com/kafkachannel/kafkachannel/internal/isoduration"
)

// Defaults applied when neither the subscriber's nor the channel's DeliverySpec says otherwise.
const (
	// DefaultAttemptTimeout bounds one HTTP attempt when no timeout is configured, so a
	// subscriber that never answers cannot hold its partition forever.
	DefaultAttemptTimeout = 30 * time.Second
	// DefaultRetryAfterMax caps a Retry-After header when retryAfterMax is not set, so one
	// subscriber asking for an hour does not stall a partition for an hour.
	DefaultRetryAfterMax = 30 * time.Second
	// maxBackoff bounds a single computed backoff (exponential growth overflows quickly).
	maxBackoff = 10 * time.Minute
)

// Policy is a resolved DeliverySpec: how one destination is retried.
type Policy struct {
	// Retries after the first attempt.
	Retries int
	// Exponential spacing (delay*2^n) when true, linear (delay*n) otherwise.
	Exponential bool
	// Delay is the backoff base.
	Delay time.Duration
	// Timeout of each attempt.
	Timeout time.Duration
	// RetryAfterMax caps Retry-After; zero means Retry-After is ignored.
	RetryAfterMax time.Duration
	// Structured sends events in structured mode (delivery format "json") instead of binary.
	Structured bool
}

// ResolvePolicy merges a subscriber's DeliverySpec over the channel's, field by field, the way
// Knative does: a field set on the subscriber wins, otherwise the channel's applies.
func ResolvePolicy(sub, channel *v1beta1.DeliverySpec) (Policy, error) {
	p := Policy{Exponential: true, Timeout: DefaultAttemptTimeout, RetryAfterMax: DefaultRetryAfterMax}
	pick := func(get func(*v1beta1.DeliverySpec) *string) *string {
		if sub != nil && get(sub) != nil {
			return get(sub)
		}
		if channel != nil {
			return get(channel)
		}
		return nil
	}
	if sub != nil && sub.Retry != nil {
		p.Retries = int(*sub.Retry)
	} else if channel != nil && channel.Retry != nil {
		p.Retries = int(*channel.Retry)
	}
	var policy *v1beta1.BackoffPolicyType
	if sub != nil && sub.BackoffPolicy != nil {
		policy = sub.BackoffPolicy
	} else if channel != nil {
		policy = channel.BackoffPolicy
	}
	if policy != nil {
		p.Exponential = *policy != v1beta1.BackoffPolicyLinear
	}
	var format *v1beta1.DeliveryFormat
	if sub != nil && sub.Format != nil {
		format = sub.Format
	} else if channel != nil {
		format = channel.Format
	}
	p.Structured = format != nil && *format == "json"
	for _, f := range []struct {
		name string
		get  func(*v1beta1.DeliverySpec) *string
		dst  *time.Duration
	}{
		{"backoffDelay", func(d *v1beta1.DeliverySpec) *string { return d.BackoffDelay }, &p.Delay},
		{"timeout", func(d *v1beta1.DeliverySpec) *string { return d.Timeout }, &p.Timeout},
		{"retryAfterMax", func(d *v1beta1.DeliverySpec) *string { return d.RetryAfterMax }, &p.RetryAfterMax},
	} {
		s := pick(f.get)
		if s == nil {
			continue
		}
		d, err := isoduration.Parse(*s)
		if err != nil {
			return Policy{}, fmt.Errorf("delivery %s: %w", f.name, err)
		}
		*f.dst = d
	}
	if p.Timeout <= 0 {
		p.Timeout = DefaultAttemptTimeout
	}
	return p, nil
}

// Backoff is the wait before retry n (1-based).
func (p Policy) Backoff(n int) time.Duration {
	if n < 1 || p.Delay <= 0 {
		return 0
	}
	var d float64
	if p.Exponential {
		d = float64(p.Delay) * math.Pow(2, float64(n))
	} else {
		d = float64(p.Delay) * float64(n)
	}
	if d > float64(maxBackoff) {
		return maxBackoff
	}
	return time.Duration(d)
}

// retryable reports whether an HTTP status is worth another attempt (Knative's list). A 3xx
// is not: the data-plane contract makes it an error without retries (see refuseRedirect).
func retryable(code int) bool {
	switch {
	case code == http.StatusNotFound, code == http.StatusRequestTimeout, code == http.StatusConflict,
		code == http.StatusTooManyRequests:
		return true
	case code >= 500:
		return true
	}
	return false
}

// retryAfter parses a Retry-After header (seconds or HTTP date) relative to now.
func retryAfter(h string, now time.Time) time.Duration {
	if h == "" {
		return 0
	}
	if s, err := strconv.Atoi(h); err == nil {
		if s < 0 {
			return 0
		}
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(h); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}
