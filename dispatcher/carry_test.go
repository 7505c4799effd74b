package dispatcher

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

// How each heartbeat failure moves the carry deadline (session and rebalance 10 s: the bound
// is 9 s after a heartbeat's send time).
func TestExtendCarry(t *testing.T) {
	t0 := time.Unix(1000, 0)
	answered := t0                            // the last heartbeat answered without error
	deadline := answered.Add(9 * time.Second) // its bound
	refused := fmt.Errorf("%w: %w", errNoCoordinator, fmt.Errorf("%w (node 2, 127.0.0.1:9092): connection refused", errCoordinatorRefused))
	for _, tc := range []struct {
		name     string
		limit    time.Duration
		answered bool
		sent     time.Time
		err      error
		want     time.Time
	}{
		{"loading: send time + bound", time.Minute, true, t0.Add(5 * time.Second), fmt.Errorf("%w: %w", errNoCoordinator, kafka.GroupLoadInProgress), t0.Add(14 * time.Second)},
		{"loading never moves it back", time.Minute, true, t0.Add(-time.Second), kafka.GroupLoadInProgress, deadline},
		{"refused: send time + bound", time.Minute, true, t0.Add(5 * time.Second), refused, t0.Add(14 * time.Second)},
		{"refused: no later than the limit", 12 * time.Second, true, t0.Add(5 * time.Second), refused, t0.Add(12 * time.Second)},
		{"refused past the limit: the limit, already passed", 12 * time.Second, true, t0.Add(30 * time.Second), refused, t0.Add(12 * time.Second)},
		{"refused, limit negative", -1, true, t0.Add(5 * time.Second), refused, deadline},
		{"refused without an answered heartbeat", time.Minute, false, t0.Add(5 * time.Second), refused, deadline},
		{"unreachable (timeout) moves nothing", time.Minute, true, t0.Add(5 * time.Second), fmt.Errorf("%w: i/o timeout", errNoCoordinator), deadline},
		{"not the coordinator moves nothing", time.Minute, true, t0.Add(5 * time.Second), fmt.Errorf("%w: %w", errNoCoordinator, kafka.NotCoordinatorForGroup), deadline},
		{"a refused lookup broker is not the coordinator", time.Minute, true, t0.Add(5 * time.Second), fmt.Errorf("%w: %w", errNoCoordinator, errors.New("dial tcp 127.0.0.1:9092: connect: connection refused")), deadline},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &subscription{d: &Dispatcher{cfg: Config{SessionTimeout: 10 * time.Second, RebalanceTimeout: 10 * time.Second, CarryWhileCoordinatorDown: tc.limit}}}
			gs := &genState{}
			if tc.answered {
				gs.lastAnswered.Store(answered.UnixNano())
			}
			if got := s.extendCarry(gs, deadline, tc.sent, tc.err); !got.Equal(tc.want) {
				t.Errorf("deadline %s after the answer, want %s", got.Sub(t0), tc.want.Sub(t0))
			}
		})
	}
}
