package controllers

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/event"

	"github.com/kafkachannel/kafkachannel/api/v1alpha1"
	"github.com/kafkachannel/kafkachannel/api/v1beta1"
)

func TestAnnotationsChangedIgnoresPauseAnnotations(t *testing.T) {
	pause := v1alpha1.PauseAnnotationPrefix + "uid-1"
	tests := []struct {
		name     string
		old, new map[string]string
		want     bool
	}{
		{"pause set", nil, map[string]string{pause: "token"}, false},
		{"pause lifted", map[string]string{pause: "token", "a": "b"}, map[string]string{"a": "b"}, false},
		{"delivery order changed", nil, map[string]string{v1beta1.DeliveryOrderAnnotation: v1beta1.DeliveryOrderUnordered}, true},
		{"another annotation changed beside a pause", map[string]string{pause: "t"}, map[string]string{pause: "t", "a": "b"}, true},
		{"nothing changed", map[string]string{"a": "b"}, map[string]string{"a": "b"}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := event.UpdateEvent{
				ObjectOld: &v1beta1.KafkaChannel{ObjectMeta: metav1.ObjectMeta{Annotations: tc.old}},
				ObjectNew: &v1beta1.KafkaChannel{ObjectMeta: metav1.ObjectMeta{Annotations: tc.new}},
			}
			if got := (annotationsChanged{}).Update(e); got != tc.want {
				t.Errorf("Update = %v, want %v", got, tc.want)
			}
		})
	}
}
