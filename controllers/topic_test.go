package controllers

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kafkachannel/kafkachannel/environments/kafkatest"
	"github.com/kafkachannel/kafkachannel/internal/kafkaconn"
)

// With hundreds of channels the cluster has hundreds of topics; the admin of one channel must
// not fetch (and lay out in memory) the metadata of all of them on every reconcile.
func TestTopicAdminAsksForTheMetadataOfItsTopicOnly(t *testing.T) {
	if kafkatest.External() {
		t.Skip("counts requests through kfake's control hook")
	}
	var others []string
	for i := range 20 {
		others = append(others, fmt.Sprintf("other-%02d", i))
	}
	k := kafkatest.Start(t, kfake.SeedTopics(4, others...))
	var mu sync.Mutex
	var asked [][]string // topics of every Metadata request; nil: all topics
	k.Cluster.ControlKey(int16(kmsg.Metadata), func(req kmsg.Request) (kmsg.Response, error, bool) {
		k.Cluster.KeepControl()
		var names []string
		for _, tp := range req.(*kmsg.MetadataRequest).Topics {
			if tp.Topic != nil {
				names = append(names, *tp.Topic)
			}
		}
		mu.Lock()
		asked = append(asked, names)
		mu.Unlock()
		return nil, nil, false
	})
	conn, err := kafkaconn.Parse(map[string][]byte{"brokers": []byte(k.BootstrapServers())})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	const topic = "knative-messaging-kafka.ns.mine"
	tests := []struct {
		name string
		do   func(a *topicAdmin) error
	}{
		{"create", func(a *topicAdmin) error {
			_, err := a.ensureTopic(ctx, topicSpec{Name: topic, Partitions: 1, ReplicationFactor: 1, Retention: time.Hour})
			return err
		}},
		{"grow", func(a *topicAdmin) error {
			_, err := a.ensureTopic(ctx, topicSpec{Name: topic, Partitions: 3, ReplicationFactor: 1, Retention: time.Hour})
			return err
		}},
		{"delete", func(a *topicAdmin) error { return a.deleteTopic(ctx, topic) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mu.Lock()
			asked = nil
			mu.Unlock()
			a := newTopicAdmin(conn, topic)
			defer a.Close()
			if err := tc.do(a); err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(asked) == 0 {
				t.Fatal("no Metadata request seen: the check would prove nothing")
			}
			for _, names := range asked {
				if !slices.Equal(names, []string{topic}) {
					t.Errorf("a Metadata request asked for %v (nil: every topic of the cluster), want only %s", names, topic)
				}
			}
		})
	}
}
