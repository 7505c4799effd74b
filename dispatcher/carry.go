package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/segmentio/kafka-go"
)

// Carrying partitions through a coordinator outage.
//
// kafka-go ends a generation at the first heartbeat that fails and stops every partition
// reader until it has joined again; when the failure is the coordinator's broker going away,
// that is until another broker has taken the group over, seconds in which the partitions'
// leaders may be alive and the receiver goes on accepting events. Kafka's protocol does not
// move a partition to another member before this member's session or the rebalance timeout
// has run out at the coordinator, so until then this member may go on delivering what it owns
// ("carry") as Kafka's Java consumer does while its coordinator is unknown.
//
// The partition loops run on a context of their own, not the generation's. When the generation
// ends, the member's own heartbeat (heartbeat.go) asks whether a coordinator answers for it:
//   - one answers (a rebalance, a fenced member): the loops drain and commit in the generation,
//     as before;
//   - none answers: the loops carry on, and the consumer group may not dial (so kafka-go can
//     neither join as a new member nor leave the old one) until a coordinator answers again
//     (the loops drain, commit in the old generation if it is still accepted, and the group
//     rejoins) or until the carry deadline passes (deliveries in flight are abandoned).
//
// The deadline is the send time of the last heartbeat answered without error + min(session
// timeout, rebalance timeout) - carryMargin: the coordinator counts the session from a
// heartbeat it received, which is after it was sent, and a rebalance started after that
// answer cannot time this member out sooner. A heartbeat answered COORDINATOR_LOAD_IN_PROGRESS
// moves the deadline on the same way: the broker answering is the group's new coordinator, still
// reading the group from its log, and a coordinator that has loaded a group starts every
// member's session afresh and can start no rebalance before; so the member is safe until the
// bound counted from the load's end, which is after that answer. (The old coordinator cannot
// hand the partitions out meanwhile: a rebalance's assignment reaches members only once it is
// written to the group's log, whose leader it no longer is.) Past it another member may own the partition, and
// ordered delivery must never have two deliverers.
//
// A heartbeat whose coordinator, as a reachable broker names it, refuses the connection moves
// the deadline on the same way, up to CarryWhileCoordinatorDown after the last answered
// heartbeat: nothing listens at the coordinator's address, so no process holds the group's
// sessions, and whichever broker serves the group next loads it from its log and starts every
// session afresh. This is what a controller quorum lost together with the coordinator's broker
// looks like: the surviving brokers go on naming the dead one until the quorum is back and has
// fenced it, tens of seconds in which the partitions' leaders may be alive and taking events.
// The one case a refusal cannot be told from is a coordinator alive for the other members and
// behind a rule that rejects this member's connections (a firewall's REJECT): the group may
// then hand the partitions on after the session while this member still carries them, until
// the limit; a deployment that filters that way sets the limit negative.
//
// Offsets handled while carrying that could not be committed are kept and committed in the
// next generation if this member is assigned the partition again; otherwise the partition's
// next owner redelivers them (at-least-once).

// ownHeartbeatInterval spaces the member's own heartbeats: the carry deadline is at most this
// much earlier than it could be, and it costs one request a second per subscription.
const ownHeartbeatInterval = time.Second

// carryMargin keeps the carry deadline ahead of the coordinator's own timeout: a heartbeat's
// round trip and the two clocks' drift over a session.
const carryMargin = time.Second

// errCarrying fails the consumer group's dials while its member carries partitions.
var errCarrying = errors.New("carrying partitions while no group coordinator answers")

// heartbeats sends the member's own heartbeats until the generation ends and records the last
// one answered without error.
func (s *subscription) heartbeats(gctx context.Context, gs *genState) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(ownHeartbeatInterval)
		defer t.Stop()
		for {
			sent := time.Now()
			if err := s.hb.beat(gctx, gs.gen.ID, gs.gen.MemberID); err == nil {
				gs.lastAnswered.Store(sent.UnixNano())
			}
			select {
			case <-gctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return done
}

// carryDeadline is when carrying the generation's partitions must end; zero without an
// answered heartbeat.
func (s *subscription) carryDeadline(gs *genState) time.Time {
	at := gs.lastAnswered.Load()
	if at == 0 {
		return time.Time{}
	}
	return time.Unix(0, at).Add(s.carryBound())
}

// carryBound is how long after a heartbeat the coordinator answered the member is still sure to
// own its partitions.
func (s *subscription) carryBound() time.Duration {
	return min(s.d.cfg.SessionTimeout, s.d.cfg.RebalanceTimeout) - carryMargin
}

// extendCarry returns the carry deadline after a heartbeat sent at sent failed with err: its
// send time + carryBound when the new coordinator is loading the group, or when the coordinator
// refused the connection, then no later than CarryWhileCoordinatorDown after the last answered
// heartbeat (see above).
func (s *subscription) extendCarry(gs *genState, deadline, sent time.Time, err error) time.Time {
	next := sent.Add(s.carryBound())
	switch {
	case errors.Is(err, kafka.GroupLoadInProgress):
	case errors.Is(err, errCoordinatorRefused):
		// Without an answered heartbeat the limit lies in 1970, so nothing moves.
		if limit := time.Unix(0, gs.lastAnswered.Load()).Add(s.d.cfg.CarryWhileCoordinatorDown); limit.Before(next) {
			next = limit
		}
	default:
		return deadline
	}
	return later(deadline, next)
}

// shouldCarry decides, as a generation ends, whether its partitions carry on: only when no
// coordinator answers and the deadline leaves room.
func (s *subscription) shouldCarry(ctx context.Context, gs *genState) (time.Time, bool) {
	// A generation that ended because a partition loop did is not carried: that loop is gone.
	if ctx.Err() != nil || s.d.crashed.Load() || len(gs.exited) > 0 {
		return time.Time{}, false
	}
	deadline := s.carryDeadline(gs)
	if time.Until(deadline) <= 0 {
		return deadline, false
	}
	sent := time.Now()
	err := s.hb.beat(ctx, gs.gen.ID, gs.gen.MemberID)
	if !errors.Is(err, errNoCoordinator) {
		return deadline, false
	}
	deadline = s.extendCarry(gs, deadline, sent, err)
	s.log.Info("no group coordinator answers: carrying on with the assigned partitions", "generation", gs.gen.ID,
		"until", deadline.UTC().Format(time.RFC3339Nano), "error", s.d.cfg.Explain(err).Error())
	return deadline, time.Until(deadline) > 0
}

// carry keeps the generation's partition loops delivering until a coordinator answers or the
// deadline passes, then stops them; the group may not dial until then.
func (s *subscription) carry(ctx context.Context, gs *genState, deadline time.Time) {
	done := make(chan struct{})
	s.carryMu.Lock()
	s.carryDone = done
	s.carryMu.Unlock()
	gs.carrying.Store(true)
	s.d.metrics.carries.WithLabelValues(s.group).Inc()
	go func() {
		defer func() {
			s.carryMu.Lock()
			s.carryDone = nil
			s.carryMu.Unlock()
			close(done)
		}()
		why := s.carryUntil(ctx, gs, &deadline)
		// The drain (DrainTimeout) must not outlast the deadline either.
		abandon := time.AfterFunc(time.Until(deadline), gs.abandonAll)
		defer abandon.Stop()
		gs.release()
		s.log.Info("stopped carrying partitions; joining the group again", "generation", gs.gen.ID, "reason", why)
	}()
}

// carryUntil waits until carrying must end and says why; it moves deadline on when the new
// coordinator answers that it is loading the group.
func (s *subscription) carryUntil(ctx context.Context, gs *genState, deadline *time.Time) string {
	t := time.NewTicker(ownHeartbeatInterval)
	defer t.Stop()
	dl := time.NewTimer(time.Until(*deadline))
	defer dl.Stop()
	for {
		select {
		case <-ctx.Done():
			return "stopping"
		case <-gs.exited:
			return "a partition loop ended"
		case <-dl.C:
			if time.Until(*deadline) > 0 {
				dl.Reset(time.Until(*deadline))
				continue
			}
			gs.abandonAll()
			return "deadline: another member may own the partitions from now on"
		case <-t.C:
		}
		sent := time.Now()
		err := s.hb.beat(ctx, gs.gen.ID, gs.gen.MemberID)
		if !errors.Is(err, errNoCoordinator) {
			if err == nil {
				return "the coordinator answers"
			}
			return "the coordinator answers: " + err.Error()
		}
		if next := s.extendCarry(gs, *deadline, sent, err); next.After(*deadline) {
			*deadline = next
			s.log.V(1).Info("the group coordinator is loading the group or gone: carrying on", "until", deadline.UTC().Format(time.RFC3339Nano),
				"error", s.d.cfg.Explain(err).Error())
		}
	}
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// carryingErr is errCarrying while the member carries partitions.
func (s *subscription) carryingErr() error {
	s.carryMu.Lock()
	defer s.carryMu.Unlock()
	if s.carryDone != nil {
		return errCarrying
	}
	return nil
}

// waitCarry returns once no partition is carried (or ctx ends).
func (s *subscription) waitCarry(ctx context.Context) {
	s.carryMu.Lock()
	done := s.carryDone
	s.carryMu.Unlock()
	if done == nil {
		return
	}
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// groupDialer is the dialer of the consumer group: it fails while partitions are carried.
func (s *subscription) groupDialer(base *kafka.Dialer) *kafka.Dialer {
	d := *base
	dial := base.DialFunc
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	d.DialFunc = func(ctx context.Context, network, address string) (net.Conn, error) {
		if err := s.carryingErr(); err != nil {
			return nil, err
		}
		return dial(ctx, network, address)
	}
	return &d
}

// commitOffsets commits in the generation: through kafka-go while the generation is current,
// and with a request of its own while carrying (kafka-go has closed the generation's
// connection by then).
func (s *subscription) commitOffsets(gs *genState, offs map[int]int64) error {
	topic := s.d.cfg.Topic
	if !gs.carrying.Load() {
		return gs.gen.CommitOffsets(map[string]map[int]int64{topic: offs})
	}
	ctx, cancel := context.WithTimeout(s.ctx, heartbeatTimeout)
	defer cancel()
	c := s.newGroupClient()
	defer c.Transport.(*kafka.Transport).CloseIdleConnections()
	commits := make([]kafka.OffsetCommit, 0, len(offs))
	for p, o := range offs {
		commits = append(commits, kafka.OffsetCommit{Partition: p, Offset: o})
	}
	res, err := c.OffsetCommit(ctx, &kafka.OffsetCommitRequest{
		GroupID: s.group, GenerationID: int(gs.gen.ID), MemberID: gs.gen.MemberID,
		Topics: map[string][]kafka.OffsetCommit{topic: commits},
	})
	if err != nil {
		return err
	}
	for _, p := range res.Topics[topic] {
		if p.Error != nil {
			return fmt.Errorf("partition %d: %w", p.Partition, p.Error)
		}
	}
	return nil
}

// newGroupClient is a client for group requests that skips brokers the watch marked.
func (s *subscription) newGroupClient() *kafka.Client {
	return &kafka.Client{Addr: kafka.TCP(s.d.cfg.Brokers...), Transport: s.d.watch.transport(s.d.cfg.Transport)}
}

// keepCarried records the handled prefix of a carried partition that its final commit did
// not cover, for the member's next generation.
func (s *subscription) keepCarried(p int, next int64) {
	s.carryMu.Lock()
	defer s.carryMu.Unlock()
	if s.carried == nil {
		s.carried = map[int]int64{}
	}
	s.carried[p] = next
}

// takeCarried returns the kept prefixes and forgets them: they apply to the next generation
// only.
func (s *subscription) takeCarried() map[int]int64 {
	s.carryMu.Lock()
	defer s.carryMu.Unlock()
	c := s.carried
	s.carried = nil
	return c
}
