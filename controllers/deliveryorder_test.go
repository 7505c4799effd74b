package controllers

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"

	"github.com/kafkachannel/kafkachannel/api/v1beta1"
	"github.com/kafkachannel/kafkachannel/environments/kafkatest"
)

// A delivery order the dispatchers do not know is reported, not silently read as the default:
// a typo of ordered-by-key or unordered would otherwise pass for the mode asked for.
func TestUnknownDeliveryOrderIsReported(t *testing.T) {
	k := kafkatest.Start(t)
	f := startFixture(t, fixtureOpts{secret: map[string]string{"brokers": k.BootstrapServers()}})
	f.createChannel("typo", func(ch *v1beta1.KafkaChannel) {
		ch.Annotations = map[string]string{v1beta1.DeliveryOrderAnnotation: "ordered-by-keys"}
	})
	c := f.waitCondition("typo", v1beta1.ConditionConfigurationReady, metav1.ConditionFalse, "DeliveryOrderInvalid")
	if !strings.Contains(c.Message, `"ordered-by-keys"`) || !strings.Contains(c.Message, `"ordered-by-key"`) {
		t.Errorf("ConfigurationReady message %q should quote the value and the accepted ones", c.Message)
	}
	f.waitCondition("typo", v1beta1.ConditionReady, metav1.ConditionFalse, "DeliveryOrderInvalid")

	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		ch := f.channel("typo")
		ch.Annotations[v1beta1.DeliveryOrderAnnotation] = v1beta1.DeliveryOrderOrderedByKey
		return k8s.Update(f.ctx, ch)
	}); err != nil {
		t.Fatalf("fixing the annotation: %v", err)
	}
	f.waitCondition("typo", v1beta1.ConditionConfigurationReady, metav1.ConditionTrue, "")
}

func TestCheckDeliveryOrder(t *testing.T) {
	for _, tc := range []struct {
		annotations map[string]string
		ok          bool
	}{
		{nil, true},
		{map[string]string{v1beta1.DeliveryOrderAnnotation: v1beta1.DeliveryOrderOrdered}, true},
		{map[string]string{v1beta1.DeliveryOrderAnnotation: v1beta1.DeliveryOrderOrderedByKey}, true},
		{map[string]string{v1beta1.DeliveryOrderAnnotation: v1beta1.DeliveryOrderUnordered}, true},
		{map[string]string{v1beta1.DeliveryOrderAnnotation: ""}, false},
		{map[string]string{v1beta1.DeliveryOrderAnnotation: "Unordered"}, false},
	} {
		if err := v1beta1.CheckDeliveryOrder(tc.annotations); (err == nil) != tc.ok {
			t.Errorf("%v: error %v, want ok=%v", tc.annotations, err, tc.ok)
		}
	}
}
