package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/segmentio/kafka-go"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/kafkachannel/kafkachannel/internal/replay"
)

// subscription is this process's member of one subscriber's consumer group.
type subscription struct {
	d     *Dispatcher
	uid   string
	group string
	log   logr.Logger
	cfg   atomic.Pointer[subConfig]
	ready atomic.Bool

	cancel context.CancelFunc
	done   chan struct{}

	// ctx is the member's run context; hb its own heartbeat (carry.go).
	ctx context.Context
	hb  *ownHeartbeat

	carryMu sync.Mutex
	// carryDone is open while a generation's partitions are carried (carry.go).
	carryDone chan struct{}
	// carried is the handled prefix of partitions carried past their generation whose final
	// commit failed, for the next generation.
	carried map[int]int64

	// basis is the number of the topic's partitions this member last assigned the group from
	// as its leader, noBasis if it made no assignment for the current join; assignMisses counts
	// consecutive generations whose assignment missed partitions (assign.go).
	basis        atomic.Int64
	assignMisses atomic.Int32
}

func (d *Dispatcher) newSubscription(cfg *subConfig) *subscription {
	s := &subscription{
		d:     d,
		uid:   cfg.uid,
		group: d.groupID(cfg.uid),
		done:  make(chan struct{}),
	}
	s.log = d.log.WithValues("subscriber", cfg.uid)
	s.cfg.Store(cfg)
	s.basis.Store(noBasis)
	return s
}

// apply switches a running member to a new subscriber generation; the group and its position
// stay, so no event is skipped or replayed by the change.
func (s *subscription) apply(cfg *subConfig) {
	s.cfg.Store(cfg)
	st, _ := s.d.State(s.uid)
	if s.ready.Load() {
		s.d.setState(SubscriberState{UID: s.uid, Generation: cfg.generation, Ready: ReadyTrue})
	} else {
		st.UID, st.Generation = s.uid, cfg.generation
		if st.Ready == "" || st.Ready == ReadyTrue {
			st.Ready = ReadyUnknown
		}
		s.d.setState(st)
	}
}

func (s *subscription) start(parent context.Context) {
	ctx, cancel := context.WithCancel(parent)
	s.cancel = cancel
	s.d.setState(SubscriberState{UID: s.uid, Generation: s.cfg.Load().generation, Ready: ReadyUnknown, Message: "joining consumer group " + s.group})
	go func() {
		defer close(s.done)
		s.run(ctx)
	}()
}

// stop leaves the group after in-flight deliveries are finished or abandoned.
func (s *subscription) stop() {
	s.cancel()
	<-s.done
}

func (s *subscription) run(ctx context.Context) {
	cfg := s.d.cfg
	s.ctx = ctx
	s.hb = newOwnHeartbeat(s.group, cfg.Dialer, s.newGroupClient)
	s.hb.slot = s.d.coordinatorSlot
	cg, err := kafka.NewConsumerGroup(kafka.ConsumerGroupConfig{
		ID:                s.group,
		Brokers:           cfg.Brokers,
		Dialer:            s.groupDialer(cfg.Dialer),
		Topics:            []string{cfg.Topic},
		HeartbeatInterval: cfg.HeartbeatInterval,
		SessionTimeout:    cfg.SessionTimeout,
		RebalanceTimeout:  cfg.RebalanceTimeout,
		JoinGroupBackoff:  cfg.JoinGroupBackoff,
		GroupBalancers:    s.groupBalancers(cfg.Topic),
		// Partitions without a committed offset are resolved by startsOf and committed at
		// once; LastOffset only marks them.
		StartOffset:            kafka.LastOffset,
		WatchPartitionChanges:  true,
		PartitionWatchInterval: cfg.PartitionWatchInterval,
		ErrorLogger:            kafka.LoggerFunc(func(f string, a ...any) { s.log.V(1).Info(fmt.Sprintf(f, a...)) }),
	})
	if err != nil {
		s.fail(fmt.Errorf("configuring consumer group %s: %w", s.group, err))
		return
	}
	var leavers sync.WaitGroup
	defer s.hb.stop()
	defer leavers.Wait() // after Close: ctx has ended, so they return at once
	defer func() {
		// Close ends the current generation (partitions drain and commit) and leaves the group.
		if err := cg.Close(); err != nil {
			s.log.Error(err, "leaving consumer group")
		}
	}()
	// Partitions carried past their generation stop at once as ctx has ended.
	defer s.waitCarry(context.Background())
	// member is the id kafka-go holds for this process in the group, as of its last generation.
	var member string
	var lastJoinErr string
	for {
		gen, err := cg.Next(ctx)
		// An assignment made for a join that ended in an error is no generation's. kafka-go
		// joins again only after this generation has ended, so the basis read here is its own
		// (or, if it ended at once, the next join's: that generation then goes unchecked).
		basis := s.basis.Swap(noBasis)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, kafka.ErrGroupClosed) {
				return
			}
			if errors.Is(err, kafka.RebalanceInProgress) {
				continue
			}
			// On any other error kafka-go forgets its member id and joins as a new member; the
			// coordinator would hold the next generation until the old one timed out
			// (leaveStale).
			if member != "" {
				leavers.Add(1)
				go func(id string) {
					defer leavers.Done()
					s.leaveStale(ctx, id)
				}(member)
				member = ""
			}
			// kafka-go retries every JoinGroupBackoff: the same error again is logged at debug,
			// and so is the group's waiting for carried partitions (carry.go).
			if msg := cfg.Explain(err).Error(); msg != lastJoinErr && !errors.Is(err, errCarrying) {
				s.log.Info("joining consumer group failed, retrying", "error", msg)
				lastJoinErr = msg
			} else {
				s.log.V(1).Info("joining consumer group failed, retrying", "error", msg)
			}
			if !s.ready.Load() {
				s.fail(fmt.Errorf("cannot join consumer group %s: %w", s.group, cfg.Explain(err)))
			}
			continue
		}
		member, lastJoinErr = gen.MemberID, ""
		s.log.Info("joined consumer group", "generation", gen.ID, "member", gen.MemberID, "assignments", gen.Assignments[cfg.Topic])
		s.d.metrics.generations.WithLabelValues(s.group).Inc()
		gs := newGenState(ctx, gen)
		gen.Start(func(gctx context.Context) { s.runGeneration(gctx, gs) })
		if basis != noBasis {
			gen.Start(func(gctx context.Context) { s.watchAssignment(gctx, int(basis)) })
		}
	}
}

func (s *subscription) fail(err error) {
	s.d.setState(SubscriberState{UID: s.uid, Generation: s.cfg.Load().generation, Ready: ReadyFalse, Message: err.Error()})
}

// genState is one generation of the group as seen by this member.
type genState struct {
	gen *kafka.Generation

	mu        sync.Mutex // serialises commits so a committed offset never goes backwards
	committed map[int]int64
	trackers  map[int]*tracker

	// The partition loops fetch until stopParts and deliver until abandonAll; they outlive
	// the generation when they are carried (carry.go).
	partsCtx   context.Context
	stopParts  context.CancelFunc
	delivCtx   context.Context
	abandonAll context.CancelFunc
	parts      sync.WaitGroup
	// exited is signalled by a partition loop that ended on its own.
	exited chan struct{}

	// lastAnswered is the send time (UnixNano) of the member's last own heartbeat the
	// coordinator answered without error; carrying is set once the generation has ended
	// and its partitions are carried.
	lastAnswered atomic.Int64
	carrying     atomic.Bool
}

// partExited records that a partition loop ended on its own; shouldCarry reads it.
func (gs *genState) partExited() {
	select {
	case gs.exited <- struct{}{}:
	default:
	}
}

func newGenState(ctx context.Context, gen *kafka.Generation) *genState {
	gs := &genState{gen: gen, committed: map[int]int64{}, trackers: map[int]*tracker{}, exited: make(chan struct{}, 1)}
	gs.partsCtx, gs.stopParts = context.WithCancel(ctx)
	// Deliveries outlive the fetching by up to DrainTimeout, so they get their own context.
	gs.delivCtx, gs.abandonAll = context.WithCancel(context.Background())
	return gs
}

// runGeneration resolves start positions, starts one loop per assigned partition, reports
// readiness and commits periodically until the generation ends; then the partitions drain
// and commit, or are carried (carry.go).
func (s *subscription) runGeneration(gctx context.Context, gs *genState) {
	topic := s.d.cfg.Topic
	assigned := gs.gen.Assignments[topic]
	starts := map[int]int64{}
	committed := map[int]int64{}
	carried := s.takeCarried()
	var unresolved []int
	for _, a := range assigned {
		if a.Offset < 0 {
			unresolved = append(unresolved, a.ID)
			continue
		}
		committed[a.ID], starts[a.ID] = a.Offset, a.Offset
		// Handled while carried and not committed: the first commit tick commits it.
		if c, ok := carried[a.ID]; ok && c > a.Offset {
			starts[a.ID] = c
		}
	}
	if len(unresolved) > 0 {
		// The assignment's offsets were read when the generation began; startsOf decides
		// from the group's committed offsets now (see there).
		resolved, err := retry(gctx, func() (map[int]int64, error) { return s.startsOf(gctx, gs, unresolved) })
		if err != nil {
			gs.release()
			return
		}
		for p, o := range resolved {
			committed[p], starts[p] = o, o
		}
	}
	gs.mu.Lock()
	for p, o := range starts {
		gs.committed[p] = committed[p]
		gs.trackers[p] = newTracker(o)
	}
	gs.mu.Unlock()
	beating := s.heartbeats(gctx, gs)
	for _, a := range assigned {
		p := a.ID
		gs.parts.Add(1)
		go func() {
			defer gs.parts.Done()
			s.consumePartition(gs, p, starts[p])
			if gs.partsCtx.Err() == nil {
				gs.partExited()
			}
		}()
	}
	s.commitUntilEnd(gctx, gs)
	<-beating
	if deadline, ok := s.shouldCarry(s.ctx, gs); ok {
		s.carry(s.ctx, gs, deadline)
		return
	}
	gs.release()
}

// release stops the generation's partition loops and waits for them: they drain, commit and
// end.
func (gs *genState) release() {
	gs.stopParts()
	gs.parts.Wait()
	gs.abandonAll()
}

// commitUntilEnd reports readiness and commits every CommitInterval until the generation
// ends or a partition loop ends on its own (which ends the generation).
func (s *subscription) commitUntilEnd(gctx context.Context, gs *genState) {
	if !s.ready.Load() {
		if _, err := retry(gctx, func() (struct{}, error) { return struct{}{}, s.checkAllCommitted(gctx) }); err != nil {
			return
		}
		s.ready.Store(true)
		s.log.Info("subscriber ready: group joined and start offsets committed")
		s.d.setState(SubscriberState{UID: s.uid, Generation: s.cfg.Load().generation, Ready: ReadyTrue})
	}
	t := time.NewTicker(s.d.cfg.CommitInterval)
	defer t.Stop()
	for {
		select {
		case <-gctx.Done():
			return
		case <-gs.exited:
			gs.partExited()
			return
		case <-t.C:
			if s.d.crashed.Load() {
				continue
			}
			if err := s.commit(gs, -1); err != nil {
				s.log.Info("committing offsets failed, will retry", "error", s.d.cfg.Explain(err).Error())
			}
		}
	}
}

// startsOf decides where assigned partitions without a committed offset (as of the
// generation's start) begin. A subscription's start is decided once, by one member, in one
// commit that covers every partition the topic has then: the member that owns partition 0
// commits the end of each partition's log. So a group with any committed offset on the topic
// has been started, and a partition still without one was added to the topic since: all it
// holds is newer than the subscription, it starts at its beginning, whichever member (ready or
// not yet) owns it. Other members wait for the first commit rather than decide on their own.
func (s *subscription) startsOf(ctx context.Context, gs *genState, parts []int) (map[int]int64, error) {
	release, err := s.d.adminSlot(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	topic := s.d.cfg.Topic
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	all, err := replay.Partitions(rctx, s.d.client, topic)
	if err != nil {
		return nil, err
	}
	committed, err := s.committedOffsets(rctx, all)
	if err != nil {
		return nil, err
	}
	out := map[int]int64{}
	var missing []int
	for _, p := range parts {
		if o, ok := committed[p]; ok {
			out[p] = o
		} else {
			missing = append(missing, p)
		}
	}
	if len(missing) == 0 {
		return out, nil
	}
	if len(committed) > 0 {
		firsts, err := s.listOffsets(rctx, missing, true)
		if err != nil {
			return nil, err
		}
		if err := gs.gen.CommitOffsets(map[string]map[int]int64{topic: firsts}); err != nil {
			return nil, fmt.Errorf("committing start offsets of group %s: %w", s.group, err)
		}
		s.log.Info("partitions new to the topic start at their beginning", "offsets", firsts)
		for p, o := range firsts {
			out[p] = o
		}
		return out, nil
	}
	if !slices.Contains(parts, 0) {
		return nil, fmt.Errorf("waiting for the owner of partition 0 of %s to commit the subscription's start", topic)
	}
	ends, err := s.listOffsets(rctx, all, false)
	if err != nil {
		return nil, err
	}
	if err := gs.gen.CommitOffsets(map[string]map[int]int64{topic: ends}); err != nil {
		return nil, fmt.Errorf("committing start offsets of group %s: %w", s.group, err)
	}
	s.log.Info("new subscription starts at the end of the topic", "offsets", ends)
	for _, p := range parts {
		out[p] = ends[p]
	}
	return out, nil
}

// listOffsets returns the first (or the end) offset of each partition.
func (s *subscription) listOffsets(ctx context.Context, parts []int, first bool) (map[int]int64, error) {
	mk := kafka.LastOffsetOf
	if first {
		mk = kafka.FirstOffsetOf
	}
	res, err := replay.List(ctx, s.d.client, s.d.cfg.Topic, parts, mk)
	if err != nil {
		return nil, err
	}
	out := make(map[int]int64, len(res))
	for p, po := range res {
		out[p] = po.LastOffset
		if first {
			out[p] = po.FirstOffset
		}
	}
	return out, nil
}

// committedOffsets returns the group's committed offset of each partition that has one. A
// partition the broker answers with an error fails the call: taken for uncommitted, it would be
// given a start and its real position overwritten.
func (s *subscription) committedOffsets(ctx context.Context, parts []int) (map[int]int64, error) {
	all, err := replay.Committed(ctx, s.d.client, s.group, s.d.cfg.Topic, parts)
	if err != nil {
		return nil, err
	}
	out := map[int]int64{}
	for p, o := range all {
		if o >= 0 {
			out[p] = o
		}
	}
	return out, nil
}

// checkAllCommitted succeeds once every partition of the topic has a committed offset in the
// group: then no event produced from now on can be skipped, whichever member owns what.
func (s *subscription) checkAllCommitted(ctx context.Context) error {
	release, err := s.d.adminSlot(ctx)
	if err != nil {
		return err
	}
	defer release()
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	parts, err := replay.Partitions(rctx, s.d.client, s.d.cfg.Topic)
	if err != nil {
		return err
	}
	got, err := s.committedOffsets(rctx, parts)
	if err != nil {
		return err
	}
	for _, p := range parts {
		if _, ok := got[p]; !ok {
			return fmt.Errorf("partition %d of %s has no committed start offset yet", p, s.d.cfg.Topic)
		}
	}
	return nil
}

// commit commits the handled prefix of one partition (p >= 0) or of all of them (p < 0).
func (s *subscription) commit(gs *genState, p int) error {
	gs.mu.Lock()
	defer gs.mu.Unlock()
	offs := map[int]int64{}
	for part, tr := range gs.trackers {
		if p >= 0 && part != p {
			continue
		}
		if next := tr.committable(); next > gs.committed[part] {
			offs[part] = next
		}
	}
	if len(offs) > 0 {
		if err := s.commitOffsets(gs, offs); err != nil {
			return fmt.Errorf("committing offsets of group %s: %w", s.group, err)
		}
		for part, o := range offs {
			gs.committed[part] = o
		}
	}
	// The lag is set here only, with every commit tick (also when nothing new was committed,
	// so a stuck partition's lag grows with its high watermark).
	for part, tr := range gs.trackers {
		if p >= 0 && part != p {
			continue
		}
		if hwm := tr.highWatermark(); hwm >= 0 {
			s.d.metrics.lag.WithLabelValues(s.group, strconv.Itoa(part), s.d.cfg.Topic).Set(float64(max(hwm-gs.committed[part], 0)))
		}
	}
	return nil
}

// consumePartition fetches one partition and hands records to deliveries, at most one in
// flight (ordered) or MaxInFlight (unordered, and ordered-by-key with one per key: keyQueues).
// When it is stopped (gs.stopParts) it stops fetching, lets deliveries finish within
// DrainTimeout, abandons the rest and commits what is done.
func (s *subscription) consumePartition(gs *genState, p int, start int64) {
	gctx := gs.partsCtx
	cfg := s.d.cfg
	log := s.log.WithValues("partition", p)
	order := s.cfg.Load().order
	r := kafka.NewReader(s.readerConfig(p, order, log))
	defer func() {
		if err := r.Close(); err != nil {
			log.V(1).Info("closing the partition reader", "error", err.Error())
		}
	}()
	if err := r.SetOffset(start); err != nil {
		log.Error(err, "setting the start offset", "offset", start)
		return
	}
	gs.mu.Lock()
	tr := gs.trackers[p]
	gs.mu.Unlock()
	window := cfg.window(order)
	var keys *keyQueues
	if order == orderKey {
		keys = &keyQueues{waiting: map[string][]queued{}}
	}
	dctx, abandon := context.WithCancel(gs.delivCtx)
	defer abandon()
	slots := make(chan struct{}, window)
	var inflight sync.WaitGroup
	partLabel := strconv.Itoa(p)
	consumed := s.d.metrics.consumed.WithLabelValues(s.group, partLabel, cfg.Topic)
	defer func() {
		// The partition's next owner (maybe this member again) reports its lag from now on;
		// without its tracker no later commit tick sets the series again.
		gs.mu.Lock()
		if next := tr.committable(); gs.carrying.Load() && next > gs.committed[p] {
			s.keepCarried(p, next)
		}
		delete(gs.trackers, p)
		s.d.metrics.lag.DeleteLabelValues(s.group, partLabel, cfg.Topic)
		gs.mu.Unlock()
	}()
	// Resolved once per partition: the label lookups would otherwise run for every event.
	dispatchLatency := s.d.metrics.latency.WithLabelValues(s.group)
	eventLatency := s.d.metrics.eventLatency.WithLabelValues(s.group)
	// deliver handles one record, marks it done when it is, and frees its slot.
	deliver := func(m *kafka.Message, fetched time.Time) {
		if s.handle(dctx, m) {
			tr.markDone(m.Offset)
			now := time.Now()
			dispatchLatency.Observe(now.Sub(fetched).Seconds())
			if !m.Time.IsZero() {
				eventLatency.Observe(max(now.Sub(m.Time).Seconds(), 0))
			}
		}
		<-slots
	}
	log.V(1).Info("consuming partition", "offset", start)
fetch:
	for {
		select {
		case slots <- struct{}{}:
		case <-gctx.Done():
			break fetch
		}
		msg, err := r.FetchMessage(gctx)
		if err != nil {
			<-slots
			if gctx.Err() != nil {
				break
			}
			log.Info("fetching failed, retrying", "error", cfg.Explain(err).Error())
			// The reader already backed off before reporting the error and goes on
			// retrying by itself; a long wait here would let its reports pile up in its
			// queue and hold back the records behind them once the leader is back.
			if !sleep(gctx, readBackoffMin) {
				break
			}
			continue
		}
		if s.d.crashed.Load() {
			<-slots
			break
		}
		tr.add(msg.Offset, msg.HighWaterMark)
		consumed.Inc()
		fetched := time.Now()
		if keys != nil {
			// A record whose key has one in flight waits behind it, holding its slot, so
			// the window bounds what is fetched and not yet handled, queued or not.
			if !keys.enqueue(&msg, fetched) {
				continue
			}
			inflight.Add(1)
			go func() {
				defer inflight.Done()
				keys.run(&msg, fetched, deliver)
			}()
			continue
		}
		inflight.Add(1)
		go func() {
			defer inflight.Done()
			deliver(&msg, fetched)
		}()
	}
	if s.d.crashed.Load() {
		abandon()
		inflight.Wait()
		return
	}
	drained := make(chan struct{})
	go func() { inflight.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(cfg.DrainTimeout):
		log.Info("abandoning deliveries still in flight; the partition's next owner redelivers them", "timeout", cfg.DrainTimeout)
		abandon()
		<-drained
	}
	if err := s.commit(gs, p); err != nil {
		log.Info("final commit failed; uncommitted events will be redelivered unless this member owns the partition next", "error", cfg.Explain(err).Error())
	}
}

// retryBackoff spaces retry's attempts: 100 ms, doubling up to 2 s.
var retryBackoff = wait.Backoff{Duration: 100 * time.Millisecond, Factor: 2, Cap: 2 * time.Second, Steps: math.MaxInt32}

// retry calls f until it succeeds or ctx ends.
func retry[T any](ctx context.Context, f func() (T, error)) (T, error) {
	var v T
	err := retryBackoff.DelayFunc().Until(ctx, true, false, func(context.Context) (bool, error) {
		var err error
		v, err = f()
		return err == nil, nil
	})
	return v, err
}
