package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
)

// A generation whose assignment was made from a topic listed without its partitions.
//
// kafka-go's group leader assigns the partitions its coordinator connection lists in a
// Metadata answer at the join (ConsumerGroup.assignTopicPartitions). A topic that broker does
// not know yet (UNKNOWN_TOPIC_OR_PARTITION, as a broker of a multi-node cluster answers for a
// moment after the topic was created) is taken for one without partitions: every member is
// assigned nothing, and the generation starts. kafka-go's partition watcher, which would end a
// generation when the count changes, takes its first count only when the generation starts;
// if the topic is listed by then, it sees no change, and the group stays without owners for
// good: nobody commits the subscription's start, it never turns ready, nothing is delivered.
//
// So the dispatcher records what the leader assigned from (basisBalancer, on the leader only)
// and, in that leader's generation, reads the topic's partitions fresh from a broker: while
// the topic has more than the assignment covered, it ends the generation, and kafka-go rejoins
// and assigns again. Only the leader checks, against what it assigned from, so a member left
// without partitions in a group with more members than partitions (a transient of scaling) is
// not taken for a miss. The rejoins back off (rejoinDelay) in case the leader's broker goes on
// lagging behind the fresh read. The check is repeated until one made a PartitionWatchInterval
// after the generation began confirms the assignment: by then kafka-go's watcher holds its
// first count, and any later change is its to see.

// rejoinBackoffCap bounds the wait before ending a generation whose assignment missed
// partitions, after repeated misses.
const rejoinBackoffCap = 30 * time.Second

// noBasis marks that this member made no assignment for the current join.
const noBasis = -1

// basisBalancer is a GroupBalancer that records how many partitions of topic the leader
// assigned from. Its protocol is the wrapped one's, so members of older releases agree on it.
type basisBalancer struct {
	kafka.GroupBalancer
	topic string
	basis *atomic.Int64
}

func (b basisBalancer) AssignGroups(members []kafka.GroupMember, partitions []kafka.Partition) kafka.GroupMemberAssignments {
	n := 0
	for _, p := range partitions {
		if p.Topic == b.topic {
			n++
		}
	}
	b.basis.Store(int64(n))
	return b.GroupBalancer.AssignGroups(members, partitions)
}

// groupBalancers are kafka-go's default balancers (range, then round robin), recording the
// leader's basis into s.basis.
func (s *subscription) groupBalancers(topic string) []kafka.GroupBalancer {
	return []kafka.GroupBalancer{
		basisBalancer{GroupBalancer: kafka.RangeGroupBalancer{}, topic: topic, basis: &s.basis},
		basisBalancer{GroupBalancer: kafka.RoundRobinGroupBalancer{}, topic: topic, basis: &s.basis},
	}
}

// rejoinDelay is the wait before the misses-th consecutive rejoin for a missed assignment: none
// for the first, then base doubling up to rejoinBackoffCap.
func rejoinDelay(base time.Duration, misses int) time.Duration {
	if misses <= 1 {
		return 0
	}
	return min(base<<min(misses-2, 16), rejoinBackoffCap)
}

// watchAssignment runs in the generation of a member that assigned it from basis partitions;
// it returns, ending the generation, once the topic is seen to have more (see above).
func (s *subscription) watchAssignment(gctx context.Context, basis int) {
	interval := s.d.cfg.PartitionWatchInterval
	began := time.Now()
	for {
		n, err := s.freshPartitionCount(gctx)
		switch {
		case err != nil:
			s.log.V(1).Info("reading the topic's partitions to check the assignment", "error", s.d.cfg.Explain(err).Error())
		case n > basis:
			misses := int(s.assignMisses.Add(1))
			delay := rejoinDelay(s.d.cfg.JoinGroupBackoff, misses)
			s.log.Info("the group was assigned from fewer partitions than the topic has; rejoining",
				"assignedFrom", basis, "partitions", n, "after", delay)
			sleep(gctx, delay)
			return
		case time.Since(began) >= interval:
			s.assignMisses.Store(0)
			<-gctx.Done()
			return
		}
		if !sleep(gctx, interval) {
			return
		}
	}
}

// freshPartitionCount is the number of partitions of the topic as a broker lists it now, read
// as kafka-go's watcher reads it (a Metadata request on a connection of the group's Dialer),
// from the first bootstrap broker that lists the topic. No cache is involved (the dispatcher's
// Transport keeps metadata up to 30 s), and the connection is closed once it has answered.
func (s *subscription) freshPartitionCount(ctx context.Context) (int, error) {
	release, err := s.d.adminSlot(ctx)
	if err != nil {
		return 0, err
	}
	defer release()
	cfg := s.d.cfg
	var errs []error
	for _, b := range cfg.Brokers {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		ps, err := cfg.Dialer.LookupPartitions(rctx, "tcp", b, cfg.Topic)
		cancel()
		if err == nil {
			return len(ps), nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", b, err))
	}
	return 0, errors.Join(errs...)
}
