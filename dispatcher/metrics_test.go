package dispatcher

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/kafkachannel/kafkachannel/api/v1beta1"
	"github.com/kafkachannel/kafkachannel/environments/kafkatest"
	"github.com/kafkachannel/kafkachannel/environments/poll"
)

// seriesOf lists, per metric family, the label sets whose label key has value val.
func seriesOf(t *testing.T, rd *runningDispatcher, key, val string) map[string][]string {
	t.Helper()
	mfs, err := rd.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			match := false
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
				if l.GetName() == key && l.GetValue() == val {
					match = true
				}
			}
			if match {
				out[mf.GetName()] = append(out[mf.GetName()], strings.Join(labels, ","))
			}
		}
	}
	return out
}

// lagPartitions lists the partitions a dispatcher has a lag series for.
func lagPartitions(t *testing.T, rd *runningDispatcher) []string {
	t.Helper()
	mfs, err := rd.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, mf := range mfs {
		if mf.GetName() != MetricLag {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "partition" {
					out = append(out, l.GetValue())
				}
			}
		}
	}
	sort.Strings(out)
	return out
}

// A removed subscriber leaves no series behind, in any family.
func TestMetricSeriesOfARemovedSubscriberAreDeleted(t *testing.T) {
	k := kafkatest.Start(t)
	e := newEnv(t, k, 2)
	a, b := newSink(t, nil), newSink(t, nil)
	rd := e.start(nil)
	sa, sb := sub("uid-a", 1, a.URL), sub("uid-b", 1, b.URL)
	rd.Update(Channel{Subscribers: []v1beta1.SubscriberSpec{sa, sb}})
	rd.waitReady(t, sa, sb)
	ids := append(e.produce(0, 5), e.produce(1, 5)...)
	b.waitIDs(t, ids, 30*time.Second)
	group := rd.groupID("uid-b")
	families := []string{MetricConsumed, MetricDeliveries, MetricLatency, MetricEventLatency, MetricLag, MetricReady}
	poll.Eventually(t, 30*time.Second, "every family has series of uid-b", func() error {
		got := seriesOf(t, rd, "consumer", group)
		for _, f := range families {
			if len(got[f]) == 0 {
				return fmt.Errorf("no %s series for %s", f, group)
			}
		}
		return nil
	})
	rd.Update(Channel{Subscribers: []v1beta1.SubscriberSpec{sa}})
	poll.Eventually(t, 30*time.Second, "the removed subscriber's series gone", func() error {
		if _, ok := rd.State("uid-b"); ok {
			return fmt.Errorf("uid-b still running")
		}
		if got := seriesOf(t, rd, "consumer", group); len(got) > 0 {
			return fmt.Errorf("series left: %v", got)
		}
		return nil
	})
	if got := seriesOf(t, rd, "consumer", rd.groupID("uid-a")); len(got[MetricLag]) != 2 {
		t.Errorf("the remaining subscriber's lag series: %v", got[MetricLag])
	}
}

// After a rebalance each partition's lag is reported by its owner only: the member that lost a
// partition deletes its series, so sums over replicas do not count a partition twice.
func TestLagSeriesFollowThePartitionsOwner(t *testing.T) {
	k := kafkatest.Start(t)
	e := newEnv(t, k, 2)
	s := newSink(t, nil)
	sp := sub("uid", 1, s.URL)
	ch := Channel{Subscribers: []v1beta1.SubscriberSpec{sp}}
	d1 := e.start(nil)
	d1.Update(ch)
	d1.waitReady(t, sp)
	ids := append(e.produce(0, 5), e.produce(1, 5)...)
	s.waitIDs(t, ids, 30*time.Second)
	poll.Eventually(t, 30*time.Second, "d1 reports the lag of both partitions", func() error {
		if got := lagPartitions(t, d1); len(got) != 2 {
			return fmt.Errorf("d1 lag series for partitions %v", got)
		}
		return nil
	})
	d2 := e.start(nil)
	d2.Update(ch)
	d2.waitReady(t, sp)
	poll.Eventually(t, 60*time.Second, "each partition's lag reported once", func() error {
		// Commits of new progress refresh the series; keep events flowing on both partitions.
		e.produce(0, 1)
		e.produce(1, 1)
		p1, p2 := lagPartitions(t, d1), lagPartitions(t, d2)
		if len(p1) != 1 || len(p2) != 1 || p1[0] == p2[0] {
			return fmt.Errorf("lag series: d1 %v, d2 %v; want one partition each", p1, p2)
		}
		return nil
	})
}
