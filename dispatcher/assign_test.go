package dispatcher

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kafkachannel/kafkachannel/api/v1beta1"
	"github.com/kafkachannel/kafkachannel/environments/kafkatest"
)

// TestLeaderAssigningFromTopicWithoutPartitionsRejoins: the group's leader reads the topic's
// partitions at the join from a broker that does not list the topic yet (as a broker of a
// three-node cluster can, moments after the topic was created), assigns nothing, and by the
// time kafka-go's partition watcher takes its first count the topic is listed. The member
// must notice that its assignment missed partitions the topic has, rejoin, and go on to
// become ready and deliver; without that nobody ever owns a partition.
func TestLeaderAssigningFromTopicWithoutPartitionsRejoins(t *testing.T) {
	if kafkatest.External() {
		t.Skip("injects faults into the in-process broker")
	}
	k := kafkatest.Start(t)
	e := newEnv(t, k, 2)
	// Until the leader sends its first assignment, Metadata requests naming only the topic are
	// answered as by a broker that does not know it; from then on normally.
	var unlisted, hidden atomic.Int32
	unlisted.Store(1)
	k.Cluster.ControlKey(int16(kmsg.SyncGroup), func(r kmsg.Request) (kmsg.Response, error, bool) {
		k.Cluster.KeepControl()
		if len(r.(*kmsg.SyncGroupRequest).GroupAssignment) > 0 {
			unlisted.Store(0)
		}
		return nil, nil, false
	})
	k.Cluster.ControlKey(int16(kmsg.Metadata), func(r kmsg.Request) (kmsg.Response, error, bool) {
		k.Cluster.KeepControl()
		req := r.(*kmsg.MetadataRequest)
		if unlisted.Load() == 0 || len(req.Topics) != 1 || req.Topics[0].Topic == nil || *req.Topics[0].Topic != e.topic {
			return nil, nil, false
		}
		hidden.Add(1)
		res := req.ResponseKind().(*kmsg.MetadataResponse)
		mt := kmsg.NewMetadataResponseTopic()
		mt.Topic = req.Topics[0].Topic
		mt.ErrorCode = kerr.UnknownTopicOrPartition.Code
		res.Topics = append(res.Topics, mt)
		return res, nil, true
	})
	s := newSink(t, nil)
	rd := e.start(func(c *Config) { c.PartitionWatchInterval = time.Second })
	sp := sub("uid", 1, s.URL)
	rd.Update(Channel{Subscribers: []v1beta1.SubscriberSpec{sp}})
	rd.waitReady(t, sp)
	if hidden.Load() == 0 {
		t.Fatal("no Metadata request for the topic was answered without it: the fault was not injected")
	}
	ids := append(e.produce(0, 3), e.produce(1, 3)...)
	s.waitIDs(t, ids, 20*time.Second)
}

func TestRejoinDelay(t *testing.T) {
	const base = 500 * time.Millisecond
	for _, tc := range []struct {
		misses int
		want   time.Duration
	}{
		{0, 0},
		{1, 0},
		{2, base},
		{3, 2 * base},
		{4, 4 * base},
		{7, 16 * time.Second},
		{8, rejoinBackoffCap},
		{100, rejoinBackoffCap},
	} {
		if got := rejoinDelay(base, tc.misses); got != tc.want {
			t.Errorf("rejoinDelay(%v, %d) = %v, want %v", base, tc.misses, got, tc.want)
		}
	}
}
