package controllers

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/kafkachannel/kafkachannel/internal/kafkaconn"
)

// kafkaOpTimeout bounds one admin round trip, so an unreachable cluster shows up in a condition
// within seconds instead of blocking a reconcile worker.
const kafkaOpTimeout = 15 * time.Second

// topicSpec is what a channel asks of its topic.
type topicSpec struct {
	Name              string
	Partitions        int32
	ReplicationFactor int16
	Retention         time.Duration
}

// topicState reports what ensureTopic found or did, in words for the TopicReady message.
type topicState struct {
	Created       bool
	GrewFrom      int // partitions before growing, 0 when unchanged
	Partitions    int
	Replication   int
	RetentionSet  bool
	ExtraMessages []string
}

// topicAdmin talks to Kafka about one topic for one reconcile. It uses a Transport of its own:
// kafka-go caches metadata per Transport, and a cached view would hide a topic created or deleted
// a moment ago. The Transport asks for that topic's metadata only (kafkaconn.Config.Transport).
type topicAdmin struct {
	conn      *kafkaconn.Config
	transport *kafka.Transport
	client    *kafka.Client
}

func newTopicAdmin(conn *kafkaconn.Config, topic string) *topicAdmin {
	t := conn.Transport(topic)
	t.MetadataTTL = time.Second
	return &topicAdmin{
		conn:      conn,
		transport: t,
		client:    &kafka.Client{Addr: kafka.TCP(conn.Brokers...), Transport: t, Timeout: kafkaOpTimeout},
	}
}

func (a *topicAdmin) Close() { a.transport.CloseIdleConnections() }

// ensureTopic creates the topic, or checks an existing one: partitions grow to the spec and
// retention.ms is set to the spec. Errors are already explained for users (kafkaconn.Explain).
func (a *topicAdmin) ensureTopic(ctx context.Context, spec topicSpec) (topicState, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*kafkaOpTimeout)
	defer cancel()
	var st topicState
	retention := strconv.FormatInt(spec.Retention.Milliseconds(), 10)

	md, err := a.describe(ctx, spec.Name)
	if err != nil {
		return st, err
	}
	if md == nil {
		res, err := a.client.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
			Topic:             spec.Name,
			NumPartitions:     int(spec.Partitions),
			ReplicationFactor: int(spec.ReplicationFactor),
			ConfigEntries:     []kafka.ConfigEntry{{ConfigName: "retention.ms", ConfigValue: retention}},
		}}})
		if err == nil {
			err = res.Errors[spec.Name]
		}
		switch {
		case errors.Is(err, kafka.TopicAlreadyExists):
			// Someone (another reconcile, or a user) created it since describe: check it as an
			// existing topic.
		case err != nil:
			return st, fmt.Errorf("creating topic %s: %w", spec.Name, a.conn.Explain(err))
		default:
			st.Created = true
		}
		if md, err = a.describe(ctx, spec.Name); err != nil {
			return st, err
		}
		if md == nil {
			return st, fmt.Errorf("topic %s was created but Kafka does not list it yet", spec.Name)
		}
	}
	st.Partitions = len(md.Partitions)
	if len(md.Partitions) > 0 {
		st.Replication = len(md.Partitions[0].Replicas)
	}

	if st.Partitions < int(spec.Partitions) {
		res, err := a.client.CreatePartitions(ctx, &kafka.CreatePartitionsRequest{Topics: []kafka.TopicPartitionsConfig{{
			Name: spec.Name, Count: spec.Partitions,
		}}})
		if err == nil {
			err = res.Errors[spec.Name]
		}
		if err != nil {
			return st, fmt.Errorf("growing topic %s from %d to %d partitions: %w", spec.Name, st.Partitions, spec.Partitions, a.conn.Explain(err))
		}
		st.GrewFrom, st.Partitions = st.Partitions, int(spec.Partitions)
	} else if st.Partitions > int(spec.Partitions) {
		st.ExtraMessages = append(st.ExtraMessages, fmt.Sprintf("the existing topic has %d partitions, more than numPartitions %d (Kafka cannot remove partitions)", st.Partitions, spec.Partitions))
	}
	if st.Replication != 0 && st.Replication != int(spec.ReplicationFactor) {
		st.ExtraMessages = append(st.ExtraMessages, fmt.Sprintf("the existing topic has replication factor %d, not %d (it is left as is)", st.Replication, spec.ReplicationFactor))
	}

	current, err := a.retention(ctx, spec.Name)
	if err != nil {
		return st, err
	}
	if current != retention {
		res, err := a.client.IncrementalAlterConfigs(ctx, &kafka.IncrementalAlterConfigsRequest{Resources: []kafka.IncrementalAlterConfigsRequestResource{{
			ResourceType: kafka.ResourceTypeTopic,
			ResourceName: spec.Name,
			Configs:      []kafka.IncrementalAlterConfigsRequestConfig{{Name: "retention.ms", Value: retention, ConfigOperation: kafka.ConfigOperationSet}},
		}}})
		if err == nil {
			for _, r := range res.Resources {
				if r.Error != nil {
					err = r.Error
				}
			}
		}
		if err != nil {
			return st, fmt.Errorf("setting retention.ms=%s on topic %s: %w", retention, spec.Name, a.conn.Explain(err))
		}
		st.RetentionSet = !st.Created
	}
	return st, nil
}

// describe returns the topic's metadata, or nil when it does not exist.
func (a *topicAdmin) describe(ctx context.Context, topic string) (*kafka.Topic, error) {
	md, err := a.client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return nil, fmt.Errorf("reading metadata of topic %s: %w", topic, a.conn.Explain(err))
	}
	for i := range md.Topics {
		t := &md.Topics[i]
		if t.Name != topic {
			continue
		}
		if errors.Is(t.Error, kafka.UnknownTopicOrPartition) {
			return nil, nil
		}
		if t.Error != nil {
			return nil, fmt.Errorf("reading metadata of topic %s: %w", topic, a.conn.Explain(t.Error))
		}
		return t, nil
	}
	return nil, nil
}

func (a *topicAdmin) retention(ctx context.Context, topic string) (string, error) {
	res, err := a.client.DescribeConfigs(ctx, &kafka.DescribeConfigsRequest{Resources: []kafka.DescribeConfigRequestResource{{
		ResourceType: kafka.ResourceTypeTopic, ResourceName: topic, ConfigNames: []string{"retention.ms"},
	}}})
	if err != nil {
		return "", fmt.Errorf("reading retention.ms of topic %s: %w", topic, a.conn.Explain(err))
	}
	for _, r := range res.Resources {
		if r.Error != nil {
			return "", fmt.Errorf("reading retention.ms of topic %s: %w", topic, a.conn.Explain(r.Error))
		}
		for _, e := range r.ConfigEntries {
			if e.ConfigName == "retention.ms" {
				return e.ConfigValue, nil
			}
		}
	}
	return "", nil
}

// deleteTopic deletes the topic; a topic that is already gone is success.
func (a *topicAdmin) deleteTopic(ctx context.Context, topic string) error {
	ctx, cancel := context.WithTimeout(ctx, kafkaOpTimeout)
	defer cancel()
	res, err := a.client.DeleteTopics(ctx, &kafka.DeleteTopicsRequest{Topics: []string{topic}})
	if err == nil {
		err = res.Errors[topic]
	}
	if err != nil && !errors.Is(err, kafka.UnknownTopicOrPartition) {
		return fmt.Errorf("deleting topic %s: %w", topic, a.conn.Explain(err))
	}
	return nil
}
