// Package dispatcher consumes a KafkaChannel's topic and delivers every record to the channel's
// subscribers over HTTP, at least once: one Kafka consumer group per subscriber, records decoded
// as CloudEvents, retried per the subscriber's delivery spec, dead-lettered when they cannot be
// delivered, and committed only once handled, contiguously per partition.
//
// The package knows nothing about Kubernetes: the caller feeds it the channel (Update) and reads
// back each subscriber's state (States, Changed). dispatcher/kube wires it to the API server.
package dispatcher

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/kafkachannel/kafkachannel/api/v1beta1"
	"github.com/kafkachannel/kafkachannel/internal/features"
	"github.com/kafkachannel/kafkachannel/internal/naming"
)

// Defaults of Config's tuning fields.
const (
	// DefaultMaxInFlight is per partition: 8 partitions already make 128 concurrent requests
	// to one subscriber. Measured with make bench (P1), 16 delivered ~20% more than 64, which
	// opened over 600 connections per 20k events and contended on a 2-core machine.
	DefaultMaxInFlight = 16
	// DefaultMaxConnsPerHost caps the connections to one destination host (newHTTPTransport).
	DefaultMaxConnsPerHost = 512
	// DefaultCommitInterval bounds what a crash redelivers: about this long times the delivery
	// rate. A commit is one small request per group and replica, so 10 a second cost nothing.
	DefaultCommitInterval = 100 * time.Millisecond
	// DefaultDrainTimeout fits the default session and rebalance timeouts (FinalCommitRoom).
	DefaultDrainTimeout = 5 * time.Second
	// DefaultMaxWait is what an idle partition costs the broker. A kafka-go Reader does not
	// send MaxWait as the fetch's wait: it keeps 1 s of it as room for the round trip (a
	// quarter below 1 s), so 500 ms made 2.5 fetches a second per partition and subscriber
	// while idle (make bench, S2). With 2 s the broker holds each fetch 1 s. Records still
	// arrive at once: the broker answers a waiting fetch as soon as one is written.
	DefaultMaxWait           = 2 * time.Second
	DefaultSessionTimeout    = 10 * time.Second
	DefaultHeartbeatInterval = time.Second
	// DefaultRebalanceTimeout fits the default drain (see FinalCommitRoom).
	DefaultRebalanceTimeout = 15 * time.Second
	// DefaultCarryWhileCoordinatorDown covers a controller quorum lost with the coordinator's
	// broker (no other broker takes the group over until the quorum is back and has fenced it)
	// and a broker's restart, and bounds the duplicates of the one case it cannot tell from
	// those (carry.go).
	DefaultCarryWhileCoordinatorDown = 2 * time.Minute
	// DefaultJoinGroupBackoff spaces kafka-go's attempts to join while the coordinator cannot
	// be reached: after a broker failure the group waits for the new coordinator at most this
	// long past its election. An attempt is one connection and one small request (with
	// SASL, one authentication: wrong credentials cost two a second per subscriber).
	DefaultJoinGroupBackoff = 500 * time.Millisecond
	DefaultPartitionWatch   = 5 * time.Second
)

// FinalCommitRoom is what the group's timeouts must leave after the drain for the final commit
// and the rejoin. A member learns of a rebalance at its next heartbeat, drains for up to
// DrainTimeout, closes its readers (up to MaxWait), commits and joins again. A member not back
// within RebalanceTimeout is evicted by the coordinator, and so is one silent for
// SessionTimeout (kafka-go sends no heartbeats between generations); its late join starts
// another rebalance, so the drain must end well before the shorter of the two.
const FinalCommitRoom = 2 * time.Second

// Ready values of SubscriberState, as status.subscribers[].ready spells them.
const (
	ReadyTrue    = "True"
	ReadyFalse   = "False"
	ReadyUnknown = "Unknown"
)

// Config is what a Dispatcher needs to know about its channel and its Kafka.
type Config struct {
	// Brokers are Kafka's bootstrap servers.
	Brokers []string
	// Dialer connects consumer groups and partition readers (TLS/SASL); nil: kafka.DefaultDialer.
	Dialer *kafka.Dialer
	// Transport serves the admin requests (offsets, metadata) of Topic, so it should keep the
	// metadata of Topic only (kafkaconn.Config.Transport(Topic)); nil: a plain one that does.
	Transport kafka.RoundTripper
	// Explain rewrites Kafka errors into messages a user can act on (kafkaconn.Config.Explain).
	Explain func(error) error

	// ChannelNamespace and ChannelName name the KafkaChannel (group ids, logs).
	ChannelNamespace, ChannelName string
	// Topic is the channel's topic; naming.Topic(ns, name) when empty.
	Topic string

	// Registry receives the metrics; a fresh one when nil.
	Registry prometheus.Registerer
	// Log is the logger; logr.Discard() when zero.
	Log logr.Logger

	// MaxInFlight bounds the deliveries in flight per partition in unordered and
	// ordered-by-key modes.
	MaxInFlight int
	// MaxConnsPerHost bounds the connections to one destination host, shared by every
	// subscriber of the channel; 0: DefaultMaxConnsPerHost.
	MaxConnsPerHost int
	// CommitInterval is how often handled offsets are committed.
	CommitInterval time.Duration
	// DrainTimeout is how long in-flight deliveries may finish on rebalance or shutdown before
	// they are abandoned (and redelivered by the partition's next owner). New refuses one that
	// does not fit RebalanceTimeout (see FinalCommitRoom).
	DrainTimeout time.Duration
	// MaxWait bounds a fetch at the end of the log, and so how long closing a reader takes.
	MaxWait time.Duration
	// SessionTimeout, HeartbeatInterval, RebalanceTimeout and JoinGroupBackoff tune the groups.
	SessionTimeout, HeartbeatInterval, RebalanceTimeout, JoinGroupBackoff time.Duration
	// PartitionWatchInterval is how often the topic is checked for added partitions.
	PartitionWatchInterval time.Duration
	// CarryWhileCoordinatorDown is how long after its last answered heartbeat a member may
	// carry its partitions while the coordinator a broker names refuses connections, past the
	// session bound (carry.go); 0: DefaultCarryWhileCoordinatorDown, negative: never past it.
	CarryWhileCoordinatorDown time.Duration

	// Features is config-features, followed live; nil means its defaults.
	Features *features.Live
	// Tokens provides OIDC tokens for destinations with an audience; nil sends none.
	Tokens TokenSource
}

// Channel is the part of a KafkaChannel the dispatcher acts on.
type Channel struct {
	// Subscribers is spec.subscribers.
	Subscribers []v1beta1.SubscriberSpec
	// Delivery is spec.delivery, the fallback of each subscriber's delivery spec.
	Delivery *v1beta1.DeliverySpec
	// DeadLetterSinkURI is status.deadLetterSinkUri, resolved by the manager.
	DeadLetterSinkURI string
	// DeadLetterSinkCACerts is status.deadLetterSinkCACerts.
	DeadLetterSinkCACerts string
	// DeadLetterSinkAudience is status.deadLetterSinkAudience.
	DeadLetterSinkAudience string
	// Unordered allows several deliveries in flight per partition.
	Unordered bool
	// OrderedByKey allows several deliveries in flight per partition, one per record key at a
	// time, in offset order within a key. Unordered wins when both are set.
	OrderedByKey bool
	// Paused are subscribers (uid -> ResetOffset token) that run no consumer group member
	// while a ResetOffset moves their position (pause.go).
	Paused map[string]string
}

// ChannelFrom extracts what the dispatcher needs from a KafkaChannel.
func ChannelFrom(kc *v1beta1.KafkaChannel) Channel {
	c := Channel{
		Subscribers:  kc.Spec.Subscribers,
		Delivery:     kc.Spec.Delivery,
		Unordered:    kc.Annotations[v1beta1.DeliveryOrderAnnotation] == v1beta1.DeliveryOrderUnordered,
		OrderedByKey: kc.Annotations[v1beta1.DeliveryOrderAnnotation] == v1beta1.DeliveryOrderOrderedByKey,
		Paused:       pausedFrom(kc.Annotations),
	}
	if kc.Status.DeadLetterSinkURI != nil {
		c.DeadLetterSinkURI = *kc.Status.DeadLetterSinkURI
	}
	if kc.Status.DeadLetterSinkCACerts != nil {
		c.DeadLetterSinkCACerts = *kc.Status.DeadLetterSinkCACerts
	}
	if kc.Status.DeadLetterSinkAudience != nil {
		c.DeadLetterSinkAudience = *kc.Status.DeadLetterSinkAudience
	}
	return c
}

// deliveryOrder is how a partition's records may overlap in delivery.
type deliveryOrder int

const (
	orderPartition deliveryOrder = iota // one in flight per partition
	orderKey                            // one in flight per key, MaxInFlight per partition
	orderNone                           // MaxInFlight per partition
)

func (c *Channel) order() deliveryOrder {
	switch {
	case c.Unordered:
		return orderNone
	case c.OrderedByKey:
		return orderKey
	}
	return orderPartition
}

// SubscriberState is this dispatcher's view of one subscriber, what status.subscribers reports.
type SubscriberState struct {
	UID        string
	Generation int64
	// Ready is ReadyTrue once the group joined and start offsets are committed for every
	// partition, ReadyFalse when the subscriber cannot start, ReadyUnknown while starting.
	Ready   string
	Message string
}

// Dispatcher runs one consumer group member per subscriber of one channel.
type Dispatcher struct {
	cfg     Config
	log     logr.Logger
	metrics *metrics
	client  *kafka.Client
	watch   *brokerWatch

	mu      sync.Mutex
	desired *Channel
	states  map[string]SubscriberState
	clients map[[32]byte]*http.Client
	wake    chan struct{}
	changed chan struct{}
	started bool
	// admin holds a slot per subscriber resolving its start offsets (adminSlot).
	admin chan struct{}
	// lookups holds a slot per own heartbeat looking its coordinator up (coordinatorSlot).
	lookups chan struct{}

	// crashed makes partitions stop without their final commit (tests simulate a crash).
	crashed atomic.Bool
}

// New validates cfg and builds a Dispatcher; nothing connects before Run.
func New(cfg Config) (*Dispatcher, error) {
	if len(cfg.Brokers) == 0 {
		return nil, errors.New("dispatcher: no Kafka brokers configured")
	}
	if cfg.ChannelNamespace == "" || cfg.ChannelName == "" {
		return nil, errors.New("dispatcher: channel namespace and name are required")
	}
	if cfg.Topic == "" {
		cfg.Topic = naming.Topic(cfg.ChannelNamespace, cfg.ChannelName)
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	if cfg.Log.GetSink() == nil {
		cfg.Log = logr.Discard()
	}
	if cfg.Explain == nil {
		cfg.Explain = func(err error) error { return err }
	}
	if cfg.Dialer == nil {
		cfg.Dialer = kafka.DefaultDialer
	}
	// Readers and groups skip a broker that stopped answering (brokerwatch.go).
	watch := newBrokerWatch(cfg.Dialer)
	cfg.Dialer = watch.dialer(cfg.Dialer)
	if cfg.Transport == nil {
		cfg.Transport = &kafka.Transport{MetadataTopics: []string{cfg.Topic}}
	}
	setDefault(&cfg.CommitInterval, DefaultCommitInterval)
	setDefault(&cfg.DrainTimeout, DefaultDrainTimeout)
	setDefault(&cfg.MaxWait, DefaultMaxWait)
	setDefault(&cfg.SessionTimeout, DefaultSessionTimeout)
	setDefault(&cfg.HeartbeatInterval, DefaultHeartbeatInterval)
	setDefault(&cfg.RebalanceTimeout, DefaultRebalanceTimeout)
	setDefault(&cfg.JoinGroupBackoff, DefaultJoinGroupBackoff)
	setDefault(&cfg.PartitionWatchInterval, DefaultPartitionWatch)
	if cfg.CarryWhileCoordinatorDown == 0 {
		cfg.CarryWhileCoordinatorDown = DefaultCarryWhileCoordinatorDown
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = DefaultMaxInFlight
	}
	if cfg.MaxConnsPerHost <= 0 {
		cfg.MaxConnsPerHost = DefaultMaxConnsPerHost
	}
	if need, limit := cfg.HeartbeatInterval+cfg.DrainTimeout+cfg.MaxWait+FinalCommitRoom, min(cfg.RebalanceTimeout, cfg.SessionTimeout); need > limit {
		return nil, fmt.Errorf("dispatcher: drain timeout %s does not fit the consumer group's timeouts (rebalance %s, session %s): heartbeat interval (%s) + drain + fetch max wait (%s) + %s for the final commit is %s; a member draining that long is evicted and rebalances cascade, so shorten the drain timeout",
			cfg.DrainTimeout, cfg.RebalanceTimeout, cfg.SessionTimeout, cfg.HeartbeatInterval, cfg.MaxWait, FinalCommitRoom, need)
	}
	m, err := newMetrics(cfg.Registry)
	if err != nil {
		return nil, fmt.Errorf("registering dispatcher metrics: %w", err)
	}
	d := &Dispatcher{
		cfg:     cfg,
		log:     cfg.Log.WithValues("channel", cfg.ChannelNamespace+"/"+cfg.ChannelName, "topic", cfg.Topic),
		metrics: m,
		client:  &kafka.Client{Addr: kafka.TCP(cfg.Brokers...), Transport: cfg.Transport, Timeout: 10 * time.Second},
		watch:   watch,
		states:  map[string]SubscriberState{},
		clients: map[[32]byte]*http.Client{},
		wake:    make(chan struct{}, 1),
		changed: make(chan struct{}, 1),
		admin:   make(chan struct{}, maxResolvingAtOnce),
		lookups: make(chan struct{}, maxResolvingAtOnce),
	}
	return d, nil
}

// maxResolvingAtOnce bounds the subscribers resolving their start offsets at once. Each asks
// the admin client for partitions, committed and end offsets, and the client's Transport
// opens a connection for every request made while its others are busy and keeps it 30 s: 1,000
// subscribers starting together opened hundreds, idle until they expired (make bench, P5 1k).
// Resolving is a few short requests, so 8 at a time still start 1,000 subscribers in seconds.
const maxResolvingAtOnce = 8

// adminSlot waits for one of maxResolvingAtOnce slots; release gives it back.
func (d *Dispatcher) adminSlot(ctx context.Context) (release func(), err error) {
	return takeSlot(ctx, d.admin)
}

// coordinatorSlot waits for one of maxResolvingAtOnce slots for a coordinator lookup of an
// own heartbeat (heartbeat.go): subscribers starting together, or losing their coordinator
// together, look it up a few at a time, each on a connection it closes after the answer. Apart
// from adminSlot, so a lookup never waits behind start offsets being resolved.
func (d *Dispatcher) coordinatorSlot(ctx context.Context) (release func(), err error) {
	return takeSlot(ctx, d.lookups)
}

func takeSlot(ctx context.Context, slots chan struct{}) (release func(), err error) {
	select {
	case slots <- struct{}{}:
		return func() { <-slots }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func setDefault(d *time.Duration, v time.Duration) {
	if *d <= 0 {
		*d = v
	}
}

// Update sets the channel to dispatch for; it applies live (subscribers added, removed or
// changed) and may be called before or during Run.
func (d *Dispatcher) Update(c Channel) {
	d.mu.Lock()
	d.desired = &c
	d.mu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// States returns this dispatcher's view of every current subscriber, sorted by UID.
func (d *Dispatcher) States() []SubscriberState {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]SubscriberState, 0, len(d.states))
	for _, s := range d.states {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].UID < out[j].UID })
	return out
}

// State returns one subscriber's state.
func (d *Dispatcher) State(uid string) (SubscriberState, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	s, ok := d.states[uid]
	return s, ok
}

// Changed receives a value after States changed (coalesced: one value for many changes).
func (d *Dispatcher) Changed() <-chan struct{} { return d.changed }

// Started reports whether Run has received a channel to dispatch for: the readiness check.
func (d *Dispatcher) Started() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.started {
		return errors.New("waiting for the KafkaChannel")
	}
	return nil
}

func (d *Dispatcher) setState(s SubscriberState) {
	d.mu.Lock()
	old, had := d.states[s.UID]
	if had && old == s {
		d.mu.Unlock()
		return
	}
	d.states[s.UID] = s
	d.mu.Unlock()
	v := 0.0
	if s.Ready == ReadyTrue {
		v = 1
	}
	d.metrics.ready.WithLabelValues(d.groupID(s.UID)).Set(v)
	d.notify()
}

func (d *Dispatcher) notify() {
	select {
	case d.changed <- struct{}{}:
	default:
	}
}

func (d *Dispatcher) groupID(uid string) string {
	return naming.GroupID(d.cfg.ChannelNamespace, d.cfg.ChannelName, uid)
}

// Run dispatches until ctx ends, then stops every subscriber gracefully: fetching stops,
// in-flight deliveries get DrainTimeout to finish, handled offsets are committed and the
// groups are left.
func (d *Dispatcher) Run(ctx context.Context) error {
	subs := map[string]*subscription{}
	var order deliveryOrder
	defer d.watch.close()
	defer func() {
		var wg sync.WaitGroup
		for _, s := range subs {
			wg.Add(1)
			go func() { defer wg.Done(); s.stop() }()
		}
		wg.Wait()
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-d.wake:
		}
		d.mu.Lock()
		desired := d.desired
		d.started = desired != nil
		d.mu.Unlock()
		if desired == nil {
			continue
		}
		if o := desired.order(); o != order {
			// The in-flight window is fixed per partition loop: restart the members; their
			// groups keep their committed positions.
			d.stopAll(subs)
			order = o
		}
		d.reconcile(ctx, subs, desired)
	}
}

func (d *Dispatcher) stopAll(subs map[string]*subscription) {
	var wg sync.WaitGroup
	for uid, s := range subs {
		wg.Add(1)
		go func() { defer wg.Done(); s.stop() }()
		delete(subs, uid)
	}
	wg.Wait()
}

func (d *Dispatcher) reconcile(ctx context.Context, subs map[string]*subscription, c *Channel) {
	want := map[string]bool{}
	var stopping sync.WaitGroup
	for _, spec := range c.Subscribers {
		want[spec.UID] = true
		if d.holdPaused(c, spec.UID, subs, &stopping) {
			continue
		}
		cfg, err := d.buildConfig(spec, c)
		s := subs[spec.UID]
		if err != nil {
			d.log.Error(err, "subscriber cannot start", "subscriber", spec.UID)
			if s != nil {
				delete(subs, spec.UID)
				stopping.Add(1)
				go func() { defer stopping.Done(); s.stop() }()
			}
			d.setState(SubscriberState{UID: spec.UID, Generation: spec.Generation, Ready: ReadyFalse, Message: err.Error()})
			continue
		}
		if s != nil {
			s.apply(cfg)
			continue
		}
		s = d.newSubscription(cfg)
		subs[spec.UID] = s
		s.start(ctx)
	}
	for uid, s := range subs {
		if want[uid] {
			continue
		}
		delete(subs, uid)
		stopping.Add(1)
		go func() { defer stopping.Done(); s.stop() }()
	}
	stopping.Wait()
	// Members that were replaced or removed have stopped: a client no running member uses
	// goes, with the idle connections it kept.
	inUse := map[*http.Client]bool{}
	for _, s := range subs {
		cfg := s.cfg.Load()
		for _, dst := range []destination{cfg.subscriber, cfg.reply, cfg.deadLetter} {
			if dst.client != nil {
				inUse[dst.client] = true
			}
		}
	}
	var removed []string
	d.mu.Lock()
	for uid := range d.states {
		if !want[uid] {
			delete(d.states, uid)
			removed = append(removed, uid)
		}
	}
	for key, c := range d.clients {
		if !inUse[c] {
			delete(d.clients, key)
			c.CloseIdleConnections()
		}
	}
	d.mu.Unlock()
	// Every subscriber that ever had series has a state (start, a config failure and a pause
	// all leave one), so going by the states forgets it on every path: stopped just now,
	// paused earlier, or never started. Its member, if any, has stopped: nothing writes them
	// again.
	for _, uid := range removed {
		d.metrics.forget(d.groupID(uid))
	}
	d.notify()
}

// subConfig is a subscriber resolved for delivery; replaced atomically when it changes.
type subConfig struct {
	uid        string
	generation int64
	subscriber destination
	reply      destination
	deadLetter destination
	policy     Policy
	order      deliveryOrder
}

func (d *Dispatcher) buildConfig(spec v1beta1.SubscriberSpec, c *Channel) (*subConfig, error) {
	pol, err := ResolvePolicy(spec.Delivery, c.Delivery)
	if err != nil {
		return nil, err
	}
	cfg := &subConfig{uid: spec.UID, generation: spec.Generation, policy: pol, order: c.order()}
	sa := ""
	if spec.Auth != nil && spec.Auth.ServiceAccountName != nil {
		sa = *spec.Auth.ServiceAccountName
	}
	mk := func(kind string, uri, ca *string, field string, audience *string) (destination, error) {
		dst := destination{kind: kind, serviceAccount: sa}
		if uri == nil || *uri == "" {
			return dst, nil
		}
		dst.uri = *uri
		if audience != nil {
			dst.audience = *audience
		}
		pem := ""
		if ca != nil {
			pem = *ca
		}
		cl, err := d.httpClient(pem)
		if err != nil {
			return dst, fmt.Errorf("%s of subscriber %s: %w", field, spec.UID, err)
		}
		dst.client = cl
		return dst, nil
	}
	if cfg.subscriber, err = mk(destSubscriber, spec.SubscriberURI, spec.SubscriberCACerts, "subscriberCACerts", spec.SubscriberAudience); err != nil {
		return nil, err
	}
	if cfg.reply, err = mk(destReply, spec.ReplyURI, spec.ReplyCACerts, "replyCACerts", spec.ReplyAudience); err != nil {
		return nil, err
	}
	if cfg.subscriber.uri == "" && cfg.reply.uri == "" {
		return nil, fmt.Errorf("subscriber %s has neither subscriberUri nor replyUri", spec.UID)
	}
	var dlsURI, dlsCA, dlsAudience *string
	if spec.Delivery != nil && spec.Delivery.DeadLetterSink != nil && spec.Delivery.DeadLetterSink.URI != nil {
		dls := spec.Delivery.DeadLetterSink
		dlsURI, dlsCA, dlsAudience = dls.URI, dls.CACerts, dls.Audience
	} else if c.DeadLetterSinkURI != "" {
		dlsURI, dlsCA, dlsAudience = &c.DeadLetterSinkURI, &c.DeadLetterSinkCACerts, &c.DeadLetterSinkAudience
	}
	if cfg.deadLetter, err = mk(destDeadLetter, dlsURI, dlsCA, "deadLetterSink CACerts", dlsAudience); err != nil {
		return nil, err
	}
	return cfg, nil
}

// httpClient returns the shared client for a CA bundle ("" = system roots), so subscribers with
// the same trust share one connection pool; reconcile evicts clients no member uses.
func (d *Dispatcher) httpClient(pem string) (*http.Client, error) {
	key := sha256.Sum256([]byte(pem))
	d.mu.Lock()
	defer d.mu.Unlock()
	if c, ok := d.clients[key]; ok {
		return c, nil
	}
	var t *http.Transport
	if pem == "" {
		t = newHTTPTransport(nil, d.cfg.MaxConnsPerHost)
	} else {
		pool, err := trustPool(pem)
		if err != nil {
			return nil, fmt.Errorf("not a valid PEM CA bundle: %w", err)
		}
		t = newHTTPTransport(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, d.cfg.MaxConnsPerHost)
	}
	c := &http.Client{Transport: t, CheckRedirect: refuseRedirect}
	d.clients[key] = c
	return c, nil
}
