package faults

import (
	"testing"
	"time"
)

// The recovery check of the three-broker scenarios, on the figures docs/reliability.md
// reported before the dispatcher followed a moved group coordinator (issue 22, defect 11).
func TestDeliveryRecoveryCheck(t *testing.T) {
	s := func(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }
	for _, tc := range []struct {
		name             string
		acks, deliveries time.Duration
		fail             bool
	}{
		{"4.4.0 leader SIGKILLed, coordinator with it", s(7.5), s(19.7), true},
		{"3.9.2 controller SIGKILLed", s(11.9), s(23.6), true},
		{"4.4.0 controller SIGKILLed", s(10.3), s(10.4), false},
		{"3.9.2 below min ISR: deliveries back first", s(37.3), s(36.8), false},
		{"exactly the allowance", s(8), s(10), false},
		{"just over it", s(8), s(10.1), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkDeliveryRecovery(recovery{acks: tc.acks, deliveries: tc.deliveries})
			if (err != nil) != tc.fail {
				t.Fatalf("checkDeliveryRecovery(202 gap %s, delivery gap %s) = %v, want failure %v", tc.acks, tc.deliveries, err, tc.fail)
			}
		})
	}
}

func TestLongestGap(t *testing.T) {
	from := time.Unix(1000, 0)
	at := func(sec float64) time.Time { return from.Add(time.Duration(sec * float64(time.Second))) }
	to := at(30)
	for _, tc := range []struct {
		name string
		ts   []time.Time
		want time.Duration
	}{
		{"nothing in the span", nil, 30 * time.Second},
		{"a gap in the middle", []time.Time{at(1), at(2), at(14), at(26)}, 12 * time.Second},
		{"unsorted, gap at the end", []time.Time{at(5), at(1), at(3)}, 25 * time.Second},
		{"gap at the start", []time.Time{at(20), at(25), at(30)}, 20 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := longestGap(tc.ts, from, to); got != tc.want {
				t.Fatalf("longestGap = %s, want %s", got, tc.want)
			}
		})
	}
}
