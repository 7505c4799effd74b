package dispatcher

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"syscall"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	"github.com/segmentio/kafka-go/protocol/apiversions"
	heartbeatAPI "github.com/segmentio/kafka-go/protocol/heartbeat"
	"github.com/segmentio/kafka-go/protocol/saslauthenticate"
	"github.com/segmentio/kafka-go/protocol/saslhandshake"
	"github.com/segmentio/kafka-go/sasl"
)

// ownHeartbeat sends a member's heartbeats on a connection of its own, so the dispatcher knows
// when the group's coordinator last answered for its generation and whether one answers now
// (carry.go). kafka-go keeps both to itself.
//
// It does not use kafka.(*Client).Heartbeat: in kafka-go v0.4.51 the response type of the
// Heartbeat API (protocol/heartbeat) declares ErrorCode before ThrottleTimeMs, while from
// version 1 on the broker sends ThrottleTimeMs (int32) first. The Transport negotiates the
// highest version (4), so the error code is read from the upper half of the throttle time
// (0 unless throttled) and every answer reads as success: REBALANCE_IN_PROGRESS (27) comes
// back as no error with a throttle of 27 ms. Version 0 has no throttle time, so the same
// response type reads it right; this connection pins Heartbeat to version 0, which every
// broker kafka-go's groups work with accepts (kafka-go's own group heartbeat uses it).
type ownHeartbeat struct {
	group  string
	dialer *kafka.Dialer
	// client finds the coordinator; replaced after a request that timed out, since a
	// Transport keeps its connection to a broker that stopped answering.
	client *kafka.Client
	newCl  func() *kafka.Client
	// slot, when set, bounds the lookups running at once across subscribers.
	slot    func(context.Context) (release func(), err error)
	conn    *protocol.Conn
	address string
}

// heartbeatTimeout bounds one heartbeat, coordinator lookup and connection included.
const heartbeatTimeout = 2 * time.Second

func newOwnHeartbeat(group string, dialer *kafka.Dialer, newClient func() *kafka.Client) *ownHeartbeat {
	return &ownHeartbeat{group: group, dialer: dialer, newCl: newClient}
}

// errNoCoordinator is what beat returns when no broker answered as the group's coordinator.
var errNoCoordinator = errors.New("no coordinator answered for the consumer group")

// errCoordinatorRefused is in what beat returns when a broker named the coordinator and the
// coordinator's address refused the connection: no process listens there (carry.go).
var errCoordinatorRefused = errors.New("the coordinator a broker named refused the connection")

// beat sends one heartbeat for the member of a generation. It returns the coordinator's
// answer (nil or a kafka.Error such as RebalanceInProgress, IllegalGeneration,
// UnknownMemberId), or an error wrapping errNoCoordinator when no coordinator answered: none
// is known, the one named cannot be reached, or it answers that it is not (yet) the group's.
func (h *ownHeartbeat) beat(ctx context.Context, generation int32, member string) error {
	ctx, cancel := context.WithTimeout(ctx, heartbeatTimeout)
	defer cancel()
	code, err := h.send(ctx, generation, member)
	if err != nil {
		h.close()
		if errors.Is(err, context.DeadlineExceeded) {
			h.dropClient()
		}
		return fmt.Errorf("%w: %w", errNoCoordinator, err)
	}
	if code == 0 {
		return nil
	}
	answer := kafka.Error(code)
	if coordinatorMoved(answer) {
		h.close()
		return fmt.Errorf("%w: %w", errNoCoordinator, answer)
	}
	return answer
}

// coordinatorMoved tells the answers of a broker that is not (or not yet) the coordinator.
func coordinatorMoved(err error) bool {
	return errors.Is(err, kafka.GroupCoordinatorNotAvailable) || errors.Is(err, kafka.NotCoordinatorForGroup) ||
		errors.Is(err, kafka.GroupLoadInProgress)
}

// send returns the error code of the coordinator's answer.
func (h *ownHeartbeat) send(ctx context.Context, generation int32, member string) (int16, error) {
	if h.conn == nil {
		if err := h.connect(ctx); err != nil {
			return 0, err
		}
	}
	deadline, _ := ctx.Deadline()
	if err := h.conn.SetDeadline(deadline); err != nil {
		return 0, err
	}
	m, err := h.conn.RoundTrip(&heartbeatAPI.Request{GroupID: h.group, GenerationID: generation, MemberID: member})
	if err != nil {
		return 0, err
	}
	return m.(*heartbeatAPI.Response).ErrorCode, nil
}

// connect finds the coordinator and opens an authenticated connection to it.
func (h *ownHeartbeat) connect(ctx context.Context) error {
	res, err := h.findCoordinator(ctx)
	if err != nil {
		return err
	}
	if res.Error != nil {
		// Not wrapped: only the coordinator's own answers tell anything about the group.
		return fmt.Errorf("finding the coordinator: %v", res.Error)
	}
	if res.Coordinator == nil || res.Coordinator.NodeID < 0 {
		return errors.New("the broker named no coordinator")
	}
	address := net.JoinHostPort(res.Coordinator.Host, strconv.Itoa(res.Coordinator.Port))
	pc, err := dialProtocol(ctx, h.dialer, address)
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("%w (node %d, %s): %w", errCoordinatorRefused, res.Coordinator.NodeID, address, err)
		}
		return err
	}
	h.conn, h.address = pc, address
	return nil
}

// findCoordinator asks for the group's coordinator, within a lookup slot when the dispatcher
// gives one, and closes the connections the lookup opened: a lookup happens only when the
// heartbeat's connection is new or broken, and 1,000 subscribers each keeping an idle lookup
// connection for the Transport's idle timeout cost 1,000 connections (P5 1k).
func (h *ownHeartbeat) findCoordinator(ctx context.Context) (*kafka.FindCoordinatorResponse, error) {
	if h.slot != nil {
		release, err := h.slot(ctx)
		if err != nil {
			return nil, err
		}
		defer release()
	}
	if h.client == nil {
		h.client = h.newCl()
	}
	defer h.closeIdle()
	return h.client.FindCoordinator(ctx, &kafka.FindCoordinatorRequest{Key: h.group, KeyType: kafka.CoordinatorKeyTypeConsumer})
}

func (h *ownHeartbeat) closeIdle() {
	if t, ok := h.client.Transport.(*kafka.Transport); ok {
		t.CloseIdleConnections()
	}
}

func (h *ownHeartbeat) close() {
	if h.conn != nil {
		_ = h.conn.Close()
		h.conn = nil
	}
}

// stop releases the connections.
func (h *ownHeartbeat) stop() {
	h.close()
	h.dropClient()
}

func (h *ownHeartbeat) dropClient() {
	if h.client == nil {
		return
	}
	h.closeIdle()
	h.client = nil
}

// dialProtocol connects to one broker as the dialer would (its DialFunc, TLS and SASL) and
// negotiates the API versions, pinning Heartbeat to version 0 (see ownHeartbeat).
func dialProtocol(ctx context.Context, d *kafka.Dialer, address string) (pc *protocol.Conn, err error) {
	dial := d.DialFunc
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	c, err := dial(ctx, "tcp", address)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = c.Close()
		}
	}()
	if d.TLS != nil {
		cfg := d.TLS
		if cfg.ServerName == "" {
			host, _, _ := net.SplitHostPort(address)
			cfg = cfg.Clone()
			cfg.ServerName = host
		}
		c = tls.Client(c, cfg)
	}
	pc = protocol.NewConn(c, d.ClientID)
	if deadline, ok := ctx.Deadline(); ok {
		if err := pc.SetDeadline(deadline); err != nil {
			return nil, err
		}
	}
	m, err := pc.RoundTrip(&apiversions.Request{})
	if err != nil {
		return nil, err
	}
	res := m.(*apiversions.Response)
	if res.ErrorCode != 0 {
		return nil, fmt.Errorf("negotiating API versions with %s: %w", address, kafka.Error(res.ErrorCode))
	}
	versions := make(map[protocol.ApiKey]int16, len(res.ApiKeys))
	for _, k := range res.ApiKeys {
		key := protocol.ApiKey(k.ApiKey)
		versions[key] = key.SelectVersion(k.MinVersion, k.MaxVersion)
	}
	versions[protocol.Heartbeat] = 0
	pc.SetVersions(versions)
	if d.SASLMechanism != nil {
		host, port, _ := net.SplitHostPort(address)
		p, _ := strconv.Atoi(port)
		if err := authenticate(sasl.WithMetadata(ctx, &sasl.Metadata{Host: host, Port: p}), pc, d.SASLMechanism); err != nil {
			return nil, fmt.Errorf("authenticating to %s: %w", address, err)
		}
	}
	return pc, nil
}

// authenticate runs a SASL exchange on a fresh connection.
func authenticate(ctx context.Context, pc *protocol.Conn, mech sasl.Mechanism) error {
	m, err := pc.RoundTrip(&saslhandshake.Request{Mechanism: mech.Name()})
	if err != nil {
		return err
	}
	if code := m.(*saslhandshake.Response).ErrorCode; code != 0 {
		return kafka.Error(code)
	}
	state, data, err := mech.Start(ctx)
	if err != nil {
		return err
	}
	for done := false; !done; {
		m, err := pc.RoundTrip(&saslauthenticate.Request{AuthBytes: data})
		if err != nil {
			return err
		}
		res := m.(*saslauthenticate.Response)
		if res.ErrorCode != 0 {
			return fmt.Errorf("%w: %s", kafka.Error(res.ErrorCode), res.ErrorMessage)
		}
		if done, data, err = state.Next(ctx, res.AuthBytes); err != nil {
			return err
		}
	}
	return nil
}
