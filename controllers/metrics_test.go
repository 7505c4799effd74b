package controllers

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/kafkachannel/kafkachannel/api/v1beta1"
)

func TestChannelsCollectorCountsByReady(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := v1beta1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	channel := func(name string, ready metav1.ConditionStatus) *v1beta1.KafkaChannel {
		kc := &v1beta1.KafkaChannel{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns"}}
		if ready != "" {
			kc.Status.Conditions = []metav1.Condition{{Type: v1beta1.ConditionReady, Status: ready, Reason: "R"}}
		}
		return kc
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(
		channel("a", metav1.ConditionTrue), channel("b", metav1.ConditionTrue),
		channel("c", metav1.ConditionFalse), channel("d", ""),
	).Build()
	want := `
# HELP kafkachannel_channels KafkaChannels by the status of their Ready condition.
# TYPE kafkachannel_channels gauge
kafkachannel_channels{ready="False"} 1
kafkachannel_channels{ready="True"} 2
kafkachannel_channels{ready="Unknown"} 1
`
	if err := testutil.CollectAndCompare(&ChannelsCollector{Reader: c}, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
}
