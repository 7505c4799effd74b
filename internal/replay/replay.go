// Package replay is the Kafka side of a ResetOffset: whether a consumer group has no members
// left, the offsets of a topic at a point in time, and committing them for a group nobody is in.
// The manager's ResetOffset controller uses it; so do tests that drive the dispatcher directly.
package replay

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/segmentio/kafka-go"
)

// Target is where a group's position moves: the start of each partition, its end, or the first
// record whose timestamp is at or after At.
type Target struct {
	Earliest, Latest bool
	At               time.Time
}

// Offsets are committed offsets per partition; -1 means none.
type Offsets map[int]int64

// Partitions returns the partition numbers of o in order.
func (o Offsets) Partitions() []int {
	ps := make([]int, 0, len(o))
	for p := range o {
		ps = append(ps, p)
	}
	sort.Ints(ps)
	return ps
}

// ErrGroupActive means the group still has members, so its offsets cannot be moved yet.
var ErrGroupActive = errors.New("the consumer group still has members")

// CheckGroupEmpty returns nil when the group has no members (or does not exist), ErrGroupActive
// (wrapped, with the member count) when it has some. Only an empty group accepts offset commits
// from outside it, and only then can no member overwrite them with its own position.
func CheckGroupEmpty(ctx context.Context, c *kafka.Client, group string) error {
	res, err := c.DescribeGroups(ctx, &kafka.DescribeGroupsRequest{GroupIDs: []string{group}})
	if err != nil {
		return fmt.Errorf("describing consumer group %s: %w", group, err)
	}
	for _, g := range res.Groups {
		if g.GroupID != group {
			continue
		}
		if g.Error != nil {
			return fmt.Errorf("describing consumer group %s: %w", group, g.Error)
		}
		if len(g.Members) > 0 {
			return fmt.Errorf("%w: %d in %s (state %s)", ErrGroupActive, len(g.Members), group, g.GroupState)
		}
		return nil
	}
	return fmt.Errorf("describing consumer group %s: not in the answer", group)
}

// Partitions lists the partitions of topic as the brokers know them now. c's Transport would
// answer Metadata from its cache (kafka-go serves metadata requests from the layout it refreshes
// every MetadataTTL, up to 30 s here), which can predate a partition increase: a subscription
// that starts from such a list takes the missing partitions for newer than itself and reads
// them from their beginning. So the request goes through a Transport of its own, whose first
// act is to fetch the metadata.
func Partitions(ctx context.Context, c *kafka.Client, topic string) ([]int, error) {
	fresh, done, err := freshClient(c, topic)
	if err != nil {
		return nil, err
	}
	defer done()
	md, err := fresh.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return nil, fmt.Errorf("reading metadata of %s: %w", topic, err)
	}
	for _, t := range md.Topics {
		if t.Name != topic {
			continue
		}
		if t.Error != nil {
			return nil, fmt.Errorf("topic %s: %w", topic, t.Error)
		}
		ps := make([]int, 0, len(t.Partitions))
		for _, p := range t.Partitions {
			ps = append(ps, p.ID)
		}
		sort.Ints(ps)
		if len(ps) == 0 {
			return nil, fmt.Errorf("topic %s has no partitions", topic)
		}
		return ps, nil
	}
	return nil, fmt.Errorf("topic %s not found", topic)
}

// freshClient is c with a new Transport configured as c's (dialer, TLS, SASL, client id) and
// keeping the metadata of topic only; done closes its connections.
func freshClient(c *kafka.Client, topic string) (fresh *kafka.Client, done func(), err error) {
	var base *kafka.Transport
	switch t := c.Transport.(type) {
	case nil:
		base = &kafka.Transport{}
	case *kafka.Transport:
		base = t
	default:
		return nil, nil, fmt.Errorf("reading fresh metadata of %s: cannot copy a Transport of type %T", topic, c.Transport)
	}
	t := &kafka.Transport{
		Dial: base.Dial, DialTimeout: base.DialTimeout, ClientID: base.ClientID,
		TLS: base.TLS, SASL: base.SASL, Resolver: base.Resolver, Context: base.Context,
		MetadataTopics: []string{topic},
	}
	return &kafka.Client{Addr: c.Addr, Transport: t, Timeout: c.Timeout}, t.CloseIdleConnections, nil
}

// Committed returns the group's committed offset of each partition (-1: none).
func Committed(ctx context.Context, c *kafka.Client, group, topic string, parts []int) (Offsets, error) {
	res, err := c.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: parts}})
	if err != nil {
		return nil, fmt.Errorf("fetching committed offsets of %s: %w", group, err)
	}
	if res.Error != nil {
		return nil, fmt.Errorf("fetching committed offsets of %s: %w", group, res.Error)
	}
	out := Offsets{}
	for _, p := range parts {
		out[p] = -1
	}
	for _, p := range res.Topics[topic] {
		if p.Error != nil {
			return nil, fmt.Errorf("fetching committed offset of %s/%d for %s: %w", topic, p.Partition, group, p.Error)
		}
		out[p.Partition] = p.CommittedOffset
	}
	return out, nil
}

// List asks for one offset of each partition of topic (mk: kafka.FirstOffsetOf,
// kafka.LastOffsetOf, or a time) and fails unless every partition is answered without error.
func List(ctx context.Context, c *kafka.Client, topic string, parts []int, mk func(p int) kafka.OffsetRequest) (map[int]kafka.PartitionOffsets, error) {
	reqs := make([]kafka.OffsetRequest, 0, len(parts))
	for _, p := range parts {
		reqs = append(reqs, mk(p))
	}
	res, err := c.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
	if err != nil {
		return nil, fmt.Errorf("listing offsets of %s: %w", topic, err)
	}
	out := map[int]kafka.PartitionOffsets{}
	for _, po := range res.Topics[topic] {
		if po.Error != nil {
			return nil, fmt.Errorf("listing offsets of %s/%d: %w", topic, po.Partition, po.Error)
		}
		out[po.Partition] = po
	}
	for _, p := range parts {
		if _, ok := out[p]; !ok {
			return nil, fmt.Errorf("listing offsets of %s: no answer for partition %d", topic, p)
		}
	}
	return out, nil
}

// Resolve translates target into an offset per partition: the first record at or after
// target.At (ListOffsets by timestamp; a time after every record gives the end of the log), or
// the start or the end of each partition.
func Resolve(ctx context.Context, c *kafka.Client, topic string, parts []int, target Target) (Offsets, error) {
	list := func(mk func(p int) kafka.OffsetRequest) (map[int]kafka.PartitionOffsets, error) {
		return List(ctx, c, topic, parts, mk)
	}
	out := Offsets{}
	if target.Earliest {
		starts, err := list(kafka.FirstOffsetOf)
		if err != nil {
			return nil, err
		}
		for _, p := range parts {
			out[p] = starts[p].FirstOffset
		}
		return out, nil
	}
	// The end of each log: the answer for latest, and the bound of a point in time.
	ends, err := list(kafka.LastOffsetOf)
	if err != nil {
		return nil, err
	}
	if target.Latest {
		for _, p := range parts {
			out[p] = ends[p].LastOffset
		}
		return out, nil
	}
	at, err := list(func(p int) kafka.OffsetRequest { return kafka.TimeOffsetOf(p, target.At) })
	if err != nil {
		return nil, err
	}
	for _, p := range parts {
		// The answer holds one offset; -1 when no record is that recent.
		o := int64(-1)
		for off := range at[p].Offsets {
			o = off
		}
		if o < 0 || o > ends[p].LastOffset {
			o = ends[p].LastOffset
		}
		out[p] = o
	}
	return out, nil
}

// Commit commits offsets for a group that has no members: a "simple" commit (generation -1,
// no member id), which the coordinator accepts only while the group is empty, so a member that
// joined meanwhile makes it fail instead of being overwritten.
func Commit(ctx context.Context, c *kafka.Client, group, topic string, offsets Offsets) error {
	commits := make([]kafka.OffsetCommit, 0, len(offsets))
	for _, p := range offsets.Partitions() {
		commits = append(commits, kafka.OffsetCommit{Partition: p, Offset: offsets[p]})
	}
	res, err := c.OffsetCommit(ctx, &kafka.OffsetCommitRequest{
		GroupID: group, GenerationID: -1, Topics: map[string][]kafka.OffsetCommit{topic: commits},
	})
	if err != nil {
		return fmt.Errorf("committing offsets of %s: %w", group, err)
	}
	var errs []error
	for _, p := range res.Topics[topic] {
		if p.Error != nil {
			errs = append(errs, fmt.Errorf("partition %d: %w", p.Partition, p.Error))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("committing offsets of %s: %w", group, errors.Join(errs...))
	}
	return nil
}
