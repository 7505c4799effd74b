package controllers

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kafkachannel/kafkachannel/api/v1beta1"
)

// ChannelsCollector exports kafkachannel_channels{ready}: how many channels are Ready True,
// False or Unknown. It counts from the manager's cache at scrape time, so it can never drift
// from what `kubectl get kafkachannels` shows.
type ChannelsCollector struct {
	Reader client.Reader
}

var channelsDesc = prometheus.NewDesc("kafkachannel_channels",
	"KafkaChannels by the status of their Ready condition.", []string{"ready"}, nil)

// Describe implements prometheus.Collector.
func (c *ChannelsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- channelsDesc }

// Collect implements prometheus.Collector.
func (c *ChannelsCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var list v1beta1.KafkaChannelList
	if err := c.Reader.List(ctx, &list); err != nil {
		ch <- prometheus.NewInvalidMetric(channelsDesc, err)
		return
	}
	counts := map[metav1.ConditionStatus]int{metav1.ConditionTrue: 0, metav1.ConditionFalse: 0, metav1.ConditionUnknown: 0}
	for i := range list.Items {
		status := metav1.ConditionUnknown
		if cond := meta.FindStatusCondition(list.Items[i].Status.Conditions, v1beta1.ConditionReady); cond != nil {
			status = cond.Status
		}
		counts[status]++
	}
	for status, n := range counts {
		ch <- prometheus.MustNewConstMetric(channelsDesc, prometheus.GaugeValue, float64(n), string(status))
	}
}
