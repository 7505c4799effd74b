// Package poll waits for conditions in tests: the one way this project's tests wait for
// something asynchronous, instead of sleeping a guessed time.
package poll

import (
	"testing"
	"time"
)

// Interval between attempts: short enough not to slow tests, long enough not to load the
// apiserver or Kafka being polled.
const Interval = 100 * time.Millisecond

// Eventually calls f until it returns nil, and fails the test with f's last error and what was
// awaited if that does not happen within timeout.
func Eventually(t testing.TB, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for {
		if err = f(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after %s: %v", what, timeout, err)
		}
		time.Sleep(Interval)
	}
}
