package controllers

import (
	"context"
	"encoding/json"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kafkachannel/kafkachannel/api/v1beta1"
)

// patchStatus writes the manager's part of the status in one merge patch, and tells the story
// of condition changes as Events. Nothing is sent when nothing changed, so a quiet channel
// causes no writes and no watch traffic.
func (r *KafkaChannelReconciler) patchStatus(ctx context.Context, s *scope) error {
	s.ch.Status.ObservedGeneration = s.ch.Generation
	after := owned(&s.ch.Status)
	if equality.Semantic.DeepEqual(owned(s.before), after) {
		return nil
	}
	body, err := json.Marshal(map[string]any{"status": after})
	if err != nil {
		return fmt.Errorf("encoding the status patch: %w", err)
	}
	if err := r.Status().Patch(ctx, s.ch, client.RawPatch(types.MergePatchType, body), client.FieldOwner(FieldManager)); err != nil {
		return fmt.Errorf("patching the status: %w", err)
	}
	r.conditionEvents(s)
	return nil
}

// conditionEvents records an Event for each condition that changed status: Warning when it
// turned False, Normal otherwise. Ready is told last, as the conclusion.
func (r *KafkaChannelReconciler) conditionEvents(s *scope) {
	for _, t := range append(append([]string{}, readyFrom...), v1beta1.ConditionReady) {
		now := meta.FindStatusCondition(s.ch.Status.Conditions, t)
		if now == nil {
			continue
		}
		was := meta.FindStatusCondition(s.before.Conditions, t)
		if was != nil && was.Status == now.Status && was.Reason == now.Reason {
			continue
		}
		if was == nil && now.Status == metav1.ConditionUnknown {
			continue
		}
		kind := corev1.EventTypeNormal
		if now.Status == metav1.ConditionFalse {
			kind = corev1.EventTypeWarning
		}
		// The condition type is the action: the events API folds events with the same
		// reason and action into one series, and two conditions may share a reason.
		r.event(s.ch, kind, now.Reason, t, "%s=%s: %s", t, now.Status, now.Message)
	}
}

func (r *KafkaChannelReconciler) event(obj runtime.Object, kind, reason, action, format string, args ...any) {
	if r.Recorder == nil {
		return
	}
	// The events API limits a note to 1 kB.
	note := fmt.Sprintf(format, args...)
	if len(note) > 1000 {
		note = note[:1000]
	}
	r.Recorder.Eventf(obj, nil, kind, reason, action, "%s", note)
}

func boolStatus(ok bool) metav1.ConditionStatus {
	if ok {
		return metav1.ConditionTrue
	}
	return metav1.ConditionFalse
}

func ptrTo[T any](v T) *T { return &v }
