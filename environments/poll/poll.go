// Package poll waits for conditions in tests: the one way this project's tests wait for
// something asynchronous, instead of sleeping a guessed time. It is apimachinery's
// wait.PollUntilContextTimeout with the test's failure message attached.
package poll

import (
	"context"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
)

// Interval between attempts: short enough not to slow tests, long enough not to load the
// apiserver or Kafka being polled.
const Interval = 100 * time.Millisecond

// Eventually calls f until it returns nil, and fails the test with f's last error and what was
// awaited if that does not happen within timeout.
func Eventually(t testing.TB, timeout time.Duration, what string, f func() error) {
	t.Helper()
	var last error
	err := wait.PollUntilContextTimeout(context.Background(), Interval, timeout, true, func(context.Context) (bool, error) {
		last = f()
		return last == nil, nil
	})
	if err != nil {
		t.Fatalf("%s: still failing after %s: %v", what, timeout, last)
	}
}
