package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/segmentio/kafka-go"
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
	cg, err := kafka.NewConsumerGroup(kafka.ConsumerGroupConfig{
		ID:                s.group,
		Brokers:           cfg.Brokers,
		Dialer:            cfg.Dialer,
		Topics:            []string{cfg.Topic},
		HeartbeatInterval: cfg.HeartbeatInterval,
		SessionTimeout:    cfg.SessionTimeout,
		RebalanceTimeout:  cfg.RebalanceTimeout,
		JoinGroupBackoff:  cfg.JoinGroupBackoff,
		// Partitions without a committed offset are resolved to the end of the log by the
		// owner and committed at once (see startGeneration); LastOffset only marks them.
		StartOffset:            kafka.LastOffset,
		WatchPartitionChanges:  true,
		PartitionWatchInterval: cfg.PartitionWatchInterval,
		ErrorLogger:            kafka.LoggerFunc(func(f string, a ...any) { s.log.V(1).Info(fmt.Sprintf(f, a...)) }),
	})
	if err != nil {
		s.fail(fmt.Errorf("configuring consumer group %s: %w", s.group, err))
		return
	}
	defer func() {
		// Close ends the current generation (partitions drain and commit) and leaves the group.
		if err := cg.Close(); err != nil {
			s.log.Error(err, "leaving consumer group")
		}
	}()
	for {
		gen, err := cg.Next(ctx)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, kafka.ErrGroupClosed) {
				return
			}
			if errors.Is(err, kafka.RebalanceInProgress) {
				continue
			}
			s.log.Info("joining consumer group failed, retrying", "error", cfg.Explain(err).Error())
			if !s.ready.Load() {
				s.fail(fmt.Errorf("cannot join consumer group %s: %w", s.group, cfg.Explain(err)))
			}
			continue
		}
		s.log.V(1).Info("joined consumer group", "generation", gen.ID, "assignments", gen.Assignments[cfg.Topic])
		gs := &genState{gen: gen, committed: map[int]int64{}, trackers: map[int]*tracker{}}
		gen.Start(func(gctx context.Context) { s.runGeneration(gctx, gs) })
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
}

// runGeneration resolves start positions, starts one loop per assigned partition, reports
// readiness and commits periodically until the generation ends.
func (s *subscription) runGeneration(gctx context.Context, gs *genState) {
	topic := s.d.cfg.Topic
	assigned := gs.gen.Assignments[topic]
	starts := map[int]int64{}
	var unresolved []int
	for _, a := range assigned {
		if a.Offset < 0 {
			unresolved = append(unresolved, a.ID)
		} else {
			starts[a.ID] = a.Offset
		}
	}
	if len(unresolved) > 0 {
		// A partition without a committed offset belongs to a new subscription: it starts at
		// the end of the log, and that position is committed before anything else so that a
		// crash between Ready and the first delivery cannot skip events. Once the subscription
		// is ready every partition it knew has a commit, so an uncommitted one was added to
		// the topic since: all it holds is newer than the subscription, it starts at the
		// beginning.
		earliest := s.ready.Load()
		ends, err := retry(gctx, func() (map[int]int64, error) { return s.resolveStarts(gctx, gs, unresolved, earliest) })
		if err != nil {
			return
		}
		for p, o := range ends {
			starts[p] = o
		}
	}
	gs.mu.Lock()
	for p, o := range starts {
		gs.committed[p] = o
		gs.trackers[p] = newTracker(o)
	}
	gs.mu.Unlock()
	for _, a := range assigned {
		p := a.ID
		gs.gen.Start(func(pctx context.Context) { s.consumePartition(pctx, gs, p, starts[p]) })
	}
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

// resolveStarts finds the end (or the beginning) of the log of each partition and commits it
// as the group's start.
func (s *subscription) resolveStarts(ctx context.Context, gs *genState, parts []int, earliest bool) (map[int]int64, error) {
	topic := s.d.cfg.Topic
	reqs := make([]kafka.OffsetRequest, 0, len(parts))
	for _, p := range parts {
		if earliest {
			reqs = append(reqs, kafka.FirstOffsetOf(p))
		} else {
			reqs = append(reqs, kafka.LastOffsetOf(p))
		}
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	res, err := s.d.client.ListOffsets(rctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
	if err != nil {
		return nil, fmt.Errorf("listing end offsets of %s: %w", topic, err)
	}
	ends := map[int]int64{}
	for _, po := range res.Topics[topic] {
		if po.Error != nil {
			return nil, fmt.Errorf("listing end offset of %s/%d: %w", topic, po.Partition, po.Error)
		}
		ends[po.Partition] = po.LastOffset
		if earliest {
			ends[po.Partition] = po.FirstOffset
		}
	}
	for _, p := range parts {
		if _, ok := ends[p]; !ok {
			return nil, fmt.Errorf("no end offset for %s/%d", topic, p)
		}
	}
	if err := gs.gen.CommitOffsets(map[string]map[int]int64{topic: ends}); err != nil {
		return nil, fmt.Errorf("committing start offsets of group %s: %w", s.group, err)
	}
	if earliest {
		s.log.Info("partitions new to the topic start at their beginning", "offsets", ends)
	} else {
		s.log.Info("new subscription starts at the end of the topic", "offsets", ends)
	}
	return ends, nil
}

// checkAllCommitted succeeds once every partition of the topic has a committed offset in the
// group: then no event produced from now on can be skipped, whichever member owns what.
func (s *subscription) checkAllCommitted(ctx context.Context) error {
	topic := s.d.cfg.Topic
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	md, err := s.d.client.Metadata(rctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return fmt.Errorf("reading metadata of %s: %w", topic, err)
	}
	var parts []int
	for _, t := range md.Topics {
		if t.Name != topic {
			continue
		}
		if t.Error != nil {
			return fmt.Errorf("topic %s: %w", topic, t.Error)
		}
		for _, p := range t.Partitions {
			parts = append(parts, p.ID)
		}
	}
	if len(parts) == 0 {
		return fmt.Errorf("topic %s has no partitions", topic)
	}
	of, err := s.d.client.OffsetFetch(rctx, &kafka.OffsetFetchRequest{GroupID: s.group, Topics: map[string][]int{topic: parts}})
	if err != nil {
		return fmt.Errorf("fetching committed offsets of %s: %w", s.group, err)
	}
	if of.Error != nil {
		return fmt.Errorf("fetching committed offsets of %s: %w", s.group, of.Error)
	}
	got := map[int]bool{}
	for _, p := range of.Topics[topic] {
		if p.Error == nil && p.CommittedOffset >= 0 {
			got[p.Partition] = true
		}
	}
	for _, p := range parts {
		if !got[p] {
			return fmt.Errorf("partition %d of %s has no committed start offset yet", p, topic)
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
	if len(offs) == 0 {
		return nil
	}
	if err := gs.gen.CommitOffsets(map[string]map[int]int64{s.d.cfg.Topic: offs}); err != nil {
		return fmt.Errorf("committing offsets of group %s: %w", s.group, err)
	}
	for part, o := range offs {
		gs.committed[part] = o
		if hwm := gs.trackers[part].highWatermark(); hwm >= 0 {
			s.d.metrics.lag.WithLabelValues(s.group, strconv.Itoa(part), s.d.cfg.Topic).Set(float64(max(hwm-o, 0)))
		}
	}
	return nil
}

// consumePartition fetches one partition and hands records to deliveries, at most one in
// flight (ordered) or MaxInFlight (unordered). When the generation ends it stops fetching,
// lets deliveries finish within DrainTimeout, abandons the rest and commits what is done.
func (s *subscription) consumePartition(gctx context.Context, gs *genState, p int, start int64) {
	cfg := s.d.cfg
	log := s.log.WithValues("partition", p)
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:        cfg.Brokers,
		Topic:          cfg.Topic,
		Partition:      p,
		Dialer:         cfg.Dialer,
		MinBytes:       1,
		MaxBytes:       10 << 20,
		MaxWait:        cfg.MaxWait,
		ReadBackoffMin: 100 * time.Millisecond,
		ReadBackoffMax: time.Second,
		ErrorLogger:    kafka.LoggerFunc(func(f string, a ...any) { log.V(1).Info(fmt.Sprintf(f, a...)) }),
	})
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
	window := 1
	if s.cfg.Load().unordered {
		window = cfg.MaxInFlight
	}
	// Deliveries outlive the generation by up to DrainTimeout, so they get their own context.
	dctx, abandon := context.WithCancel(context.Background())
	defer abandon()
	slots := make(chan struct{}, window)
	var inflight sync.WaitGroup
	partLabel := strconv.Itoa(p)
	consumed := s.d.metrics.consumed.WithLabelValues(s.group, partLabel, cfg.Topic)
	lag := s.d.metrics.lag.WithLabelValues(s.group, partLabel, cfg.Topic)
	// Resolved once per partition: the label lookups would otherwise run for every event.
	dispatchLatency := s.d.metrics.latency.WithLabelValues(s.group)
	eventLatency := s.d.metrics.eventLatency.WithLabelValues(s.group)
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
			if !sleep(gctx, time.Second) {
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
		lag.Set(float64(max(msg.HighWaterMark-msg.Offset-1, 0)))
		inflight.Add(1)
		fetched := time.Now()
		go func() {
			defer inflight.Done()
			if s.handle(dctx, &msg) {
				tr.markDone(msg.Offset)
				now := time.Now()
				dispatchLatency.Observe(now.Sub(fetched).Seconds())
				if !msg.Time.IsZero() {
					eventLatency.Observe(max(now.Sub(msg.Time).Seconds(), 0))
				}
			}
			<-slots
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
		log.Info("final commit failed; uncommitted events will be redelivered", "error", cfg.Explain(err).Error())
	}
}

// retry calls f until it succeeds or ctx ends, with a short capped backoff.
func retry[T any](ctx context.Context, f func() (T, error)) (T, error) {
	wait := 100 * time.Millisecond
	for {
		v, err := f()
		if err == nil {
			return v, nil
		}
		if ctx.Err() != nil {
			return v, ctx.Err()
		}
		if !sleep(ctx, wait) {
			return v, ctx.Err()
		}
		wait = min(wait*2, 2*time.Second)
	}
}
