package dispatcher

import (
	"context"
	"errors"
	"math"
	"time"

	"github.com/segmentio/kafka-go"
	"k8s.io/apimachinery/pkg/util/wait"
)

// How a partition reader follows its leader to another broker. kafka-go's reader asks a
// bootstrap broker for the partition's leader afresh on every attempt (no cache), so what it
// waits between attempts is all the delay it adds once a new leader is elected. 500 ms at most
// keeps that well inside the receiver's own retry spacing; an attempt against a broker that is
// gone is a refused connection and one small metadata request.
const (
	readBackoffMin = 100 * time.Millisecond
	readBackoffMax = 500 * time.Millisecond
)

// preparingRebalance is the state DescribeGroups reports while the coordinator holds a join
// for the members it still expects.
const preparingRebalance = "PreparingRebalance"

// staleMemberPatience bounds how long leaveStale keeps trying; by then the coordinator has
// timed the member out on its own unless it never came back.
const staleMemberPatience = 5 * time.Minute

// staleBackoff spaces leaveStale's attempts: close behind kafka-go's rejoin, which retries
// every JoinGroupBackoff.
var staleBackoff = wait.Backoff{Duration: 100 * time.Millisecond, Factor: 2, Cap: 250 * time.Millisecond, Steps: math.MaxInt32}

// leaveStale removes this process's previous member id from the group once a rejoin is
// waiting for it.
//
// When the group coordinator's broker dies, the generation ends at the next failed heartbeat
// and kafka-go's rejoin fails until another broker has taken the group over (the broker
// session timeout). On that error kafka-go forgets its member id (it keeps it only on
// RebalanceInProgress) and joins as a new member. The new coordinator has loaded the group
// with the old member in it and holds the join until that member rejoins, which it never will,
// or its session (SessionTimeout, restarted when the group was loaded) or the rebalance
// timeout runs out: about 10 s of no delivery on top of the failover. Leaving the old id
// ends that wait at once.
//
// It leaves only while the group is PreparingRebalance, i.e. once some member's join is
// waiting: leaving before that would empty a one-member group, and a join into an empty group
// waits group.initial.rebalance.delay.ms (3 s by default) for more members.
//
// While the member's partitions are carried (carry.go) the old member must stay: removing it
// would let the rebalance hand them to another member while this one still delivers them.
func (s *subscription) leaveStale(ctx context.Context, member string) {
	s.waitCarry(ctx)
	ctx, cancel := context.WithTimeout(ctx, staleMemberPatience)
	defer cancel()
	s.log.V(1).Info("watching for a rejoin held up by this process's previous member", "member", member)
	// A client of its own: the dispatcher's Transport may hold its connections on the broker
	// that failed, and one that stopped answering would hold every attempt to the timeout.
	// This one skips brokers the watch has marked, and is replaced after an attempt that timed
	// out.
	var c *kafka.Client
	defer func() {
		if c != nil {
			c.Transport.(*kafka.Transport).CloseIdleConnections()
		}
	}()
	_ = staleBackoff.DelayFunc().Until(ctx, true, false, func(ctx context.Context) (bool, error) {
		if c == nil {
			c = &kafka.Client{Addr: kafka.TCP(s.d.cfg.Brokers...), Transport: s.d.watch.transport(s.d.cfg.Transport)}
		}
		done, err := s.tryLeaveStale(ctx, c, member)
		if err != nil {
			s.log.V(1).Info("removing the previous member from the group, will retry", "member", member, "error", s.d.cfg.Explain(err).Error())
			if errors.Is(err, context.DeadlineExceeded) {
				c.Transport.(*kafka.Transport).CloseIdleConnections()
				c = nil
			}
		}
		return done, nil
	})
}

// staleAttemptTimeout bounds one attempt of leaveStale; the requests take milliseconds.
const staleAttemptTimeout = 2 * time.Second

// tryLeaveStale makes one attempt: done once the member is out of the group.
func (s *subscription) tryLeaveStale(ctx context.Context, c *kafka.Client, member string) (bool, error) {
	rctx, cancel := context.WithTimeout(ctx, staleAttemptTimeout)
	defer cancel()
	res, err := c.DescribeGroups(rctx, &kafka.DescribeGroupsRequest{GroupIDs: []string{s.group}})
	if err != nil {
		return false, err
	}
	var g *kafka.DescribeGroupsResponseGroup
	for i := range res.Groups {
		if res.Groups[i].GroupID == s.group {
			g = &res.Groups[i]
		}
	}
	if g == nil {
		return false, errors.New("the group is not in the answer")
	}
	// A coordinator still loading the group answers an error; a decoding error of kafka-go
	// leaves the members unknown but the state right, so only the state decides.
	if g.GroupState == "" {
		return false, g.Error
	}
	if g.Error == nil {
		listed := false
		for _, m := range g.Members {
			listed = listed || m.MemberID == member
		}
		if !listed {
			return true, nil
		}
	}
	switch g.GroupState {
	case "Empty", "Dead":
		return true, nil
	case preparingRebalance:
	default:
		return false, nil
	}
	lres, err := c.LeaveGroup(rctx, &kafka.LeaveGroupRequest{GroupID: s.group, Members: []kafka.LeaveGroupRequestMember{{ID: member}}})
	if err != nil {
		return false, err
	}
	errs := []error{lres.Error}
	for _, m := range lres.Members {
		errs = append(errs, m.Error)
	}
	for _, e := range errs {
		if e != nil && !errors.Is(e, kafka.UnknownMemberId) {
			return false, e
		}
	}
	s.log.Info("removed this process's previous member from the consumer group, so the rejoin does not wait for it to time out", "member", member)
	return true, nil
}
