package controllers

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kafkachannel/kafkachannel/api/v1beta1"
)

func TestConfigFromEnv(t *testing.T) {
	env := func(kv ...string) func(string) string {
		m := map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return func(k string) string { return m[k] }
	}
	c, err := ConfigFromEnv(env())
	if err != nil {
		t.Fatalf("defaults: %v", err)
	}
	if c.OperatorNamespace != "knative-eventing" || c.SecretName != "kafka-secret" || c.Dispatcher.Replicas != 1 ||
		c.TopicDeleteTimeout != 2*time.Minute || c.Dispatcher.Image != DefaultDispatcherImage || c.Receiver.ServiceAccount != "kafkachannel-receiver" {
		t.Errorf("defaults = %+v", c)
	}
	c, err = ConfigFromEnv(env("POD_NAMESPACE", "ops", "DISPATCHER_REPLICAS", "4", "DATAPLANE_LABELS", "a=b, c=d",
		"RECEIVER_MEMORY_LIMIT", "1Gi", "TOPIC_DELETE_TIMEOUT", "30s"))
	if err != nil {
		t.Fatal(err)
	}
	if c.OperatorNamespace != "ops" || c.Dispatcher.Replicas != 4 || c.PodLabels["c"] != "d" ||
		c.Receiver.Resources.Limits.Memory().String() != "1Gi" || c.TopicDeleteTimeout != 30*time.Second {
		t.Errorf("parsed = %+v", c)
	}
	if c, _ := ConfigFromEnv(env("POD_NAMESPACE", "ops", "OPERATOR_NAMESPACE", "kc")); c.OperatorNamespace != "kc" {
		t.Errorf("OPERATOR_NAMESPACE should win over POD_NAMESPACE, got %s", c.OperatorNamespace)
	}
	for _, bad := range [][]string{
		{"DISPATCHER_REPLICAS", "0"}, {"RECEIVER_REPLICAS", "x"}, {"DISPATCHER_CPU_REQUEST", "lots"},
		{"DATAPLANE_ANNOTATIONS", "novalue"}, {"TOPIC_DELETE_TIMEOUT", "2 minutes"}, {"TOPIC_DELETE_TIMEOUT", "-1s"},
	} {
		if _, err := ConfigFromEnv(env(bad...)); err == nil || !strings.Contains(err.Error(), bad[0]) {
			t.Errorf("%s=%s: err = %v, want one naming the variable", bad[0], bad[1], err)
		}
	}
}

func TestDispatcherReplicasNeverExceedPartitions(t *testing.T) {
	for _, tc := range []struct{ configured, partitions, want int32 }{
		{1, 1, 1}, {3, 1, 1}, {3, 10, 3}, {5, 5, 5}, {2, 0, 1},
	} {
		c := Config{Dispatcher: DataPlane{Replicas: tc.configured}}
		if got := dispatcherReplicas(c, tc.partitions); got != tc.want {
			t.Errorf("replicas %d, partitions %d: got %d, want %d", tc.configured, tc.partitions, got, tc.want)
		}
	}
}

func TestConfigHashFollowsSecretAndSettings(t *testing.T) {
	c, _ := ConfigFromEnv(func(string) string { return "" })
	base := configHash("s1", c.Dispatcher, c)
	if configHash("s1", c.Dispatcher, c) != base {
		t.Fatal("hash is not stable")
	}
	if configHash("s2", c.Dispatcher, c) == base {
		t.Error("a Secret change must change the hash")
	}
	c2 := c
	c2.Dispatcher.Image = "other:tag"
	if configHash("s1", c2.Dispatcher, c2) == base {
		t.Error("an image change must change the hash")
	}
	c3 := c
	c3.PodAnnotations = map[string]string{"x": "y"}
	if configHash("s1", c3.Dispatcher, c3) == base {
		t.Error("a pod annotation change must change the hash")
	}
	c4 := c
	c4.Dispatcher.Replicas = 7
	if configHash("s1", c4.Dispatcher, c4) != base {
		t.Error("scaling must not roll the pods")
	}
}

func TestSummarize(t *testing.T) {
	ch := &v1beta1.KafkaChannel{ObjectMeta: metav1.ObjectMeta{Generation: 3}}
	s := &scope{ch: ch}
	for _, ct := range readyFrom {
		s.set(ct, metav1.ConditionTrue, "OK", "fine")
	}
	ch.Status.Address = &v1beta1.Addressable{URL: "http://x"}
	summarize(s)
	if c := metaCondition(ch, v1beta1.ConditionReady); c.Status != metav1.ConditionTrue || c.ObservedGeneration != 3 {
		t.Errorf("all True: Ready = %+v", c)
	}
	s.set(v1beta1.ConditionReceiverReady, metav1.ConditionUnknown, "Waiting", "starting")
	s.set(v1beta1.ConditionDeadLetterSinkReady, metav1.ConditionFalse, "DeadLetterSinkNotFound", "gone")
	summarize(s)
	if c := metaCondition(ch, v1beta1.ConditionReady); c.Status != metav1.ConditionFalse || c.Reason != "DeadLetterSinkNotFound" {
		t.Errorf("a False wins over an earlier Unknown: Ready = %+v", c)
	}
	s.set(v1beta1.ConditionDeadLetterSinkReady, metav1.ConditionTrue, "OK", "fine")
	summarize(s)
	if c := metaCondition(ch, v1beta1.ConditionReady); c.Status != metav1.ConditionUnknown || c.Reason != "Waiting" {
		t.Errorf("Unknown: Ready = %+v", c)
	}
}
