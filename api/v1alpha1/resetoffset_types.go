package v1alpha1

import (
	"fmt"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Condition types of a ResetOffset. Succeeded is the outcome; the others say how far it got.
const (
	ConditionRefResolved  = "RefResolved"
	ConditionOffsetsReset = "OffsetsReset"
	ConditionSucceeded    = "Succeeded"
)

// Special values of spec.offset.time.
const (
	OffsetEarliest = "earliest"
	OffsetLatest   = "latest"
)

// PauseAnnotationPrefix starts the KafkaChannel annotation through which the manager asks the
// channel's dispatchers to pause one subscriber: the key is this prefix plus the subscriber's
// uid, the value identifies the ResetOffset (see PauseToken). docs/architecture.md describes the
// protocol.
const PauseAnnotationPrefix = "kafka.eventing.knative.dev/pause."

// PauseAnnotation is the KafkaChannel annotation key that pauses the subscriber with uid.
func PauseAnnotation(uid string) string { return PauseAnnotationPrefix + uid }

// PauseToken is the value of the pause annotation a ResetOffset sets: its uid. Nothing that can
// change during the reset may be part of it: the API server bumps metadata.generation when it
// marks an object with finalizers for deletion, and a token carrying the generation (as earlier
// versions wrote, "<uid>.<generation>") no longer matched when the deleted ResetOffset came to
// lift its pause.
func PauseToken(ro *ResetOffset) string { return string(ro.UID) }

// HoldsPause reports whether token, the value of a pause annotation, was set by ro: in the
// current form or the "<uid>.<generation>" form of earlier versions, so a pause set before an
// upgrade is still lifted by the ResetOffset that set it.
func HoldsPause(ro *ResetOffset, token string) bool {
	uid, _, _ := strings.Cut(token, ".")
	return ro.UID != "" && uid == string(ro.UID)
}

// ResetOffsetSpec is what to reset: whose position, and to when. It is immutable: a new reset
// is a new ResetOffset.
// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec is immutable: create a new ResetOffset for another reset"
type ResetOffsetSpec struct {
	// Ref names the subscriber whose position moves.
	Ref Ref `json:"ref"`
	// Offset is where the subscriber continues.
	Offset OffsetSpec `json:"offset"`
}

// Ref names one subscriber of a KafkaChannel in the ResetOffset's namespace: either a Knative
// Subscription, or a KafkaChannel and the uid of one of its spec.subscribers.
// +kubebuilder:validation:XValidation:rule="has(self.subscription) != (has(self.kafkaChannel) || has(self.subscriberUid))",message="ref needs either subscription, or kafkaChannel together with subscriberUid, not both"
// +kubebuilder:validation:XValidation:rule="has(self.kafkaChannel) == has(self.subscriberUid)",message="ref.kafkaChannel and ref.subscriberUid go together"
type Ref struct {
	// Subscription is the name of a Knative Subscription (messaging.knative.dev/v1) whose
	// channel is a KafkaChannel.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Subscription string `json:"subscription,omitempty"`
	// KafkaChannel is the name of the channel, with SubscriberUID.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	KafkaChannel string `json:"kafkaChannel,omitempty"`
	// SubscriberUID is the uid of an entry of the channel's spec.subscribers.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	SubscriberUID string `json:"subscriberUid,omitempty"`
}

// OffsetSpec is the point the subscriber continues from.
type OffsetSpec struct {
	// Time is "earliest" (everything the topic still holds), "latest" (only events sent from
	// now on) or an RFC 3339 time such as 2026-12-01T10:00:00Z: events whose Kafka record
	// timestamp is at or after it are delivered again.
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:XValidation:rule="self == 'earliest' || self == 'latest' || self.matches('^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}([.][0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$')",message="offset.time must be earliest, latest, or an RFC 3339 time such as 2026-12-01T10:00:00Z"
	Time string `json:"time"`
}

// ParseTime reads spec.offset.time: earliest/latest, or a time. RFC 3339 is checked fully here
// (the schema's pattern cannot tell a 30th of February).
func (o OffsetSpec) ParseTime() (earliest, latest bool, at time.Time, err error) {
	switch o.Time {
	case OffsetEarliest:
		return true, false, time.Time{}, nil
	case OffsetLatest:
		return false, true, time.Time{}, nil
	}
	at, err = time.Parse(time.RFC3339Nano, o.Time)
	if err != nil {
		return false, false, time.Time{}, fmt.Errorf("offset.time %q is not an RFC 3339 time: %w", o.Time, err)
	}
	return false, false, at, nil
}

// PartitionOffset is one partition's committed offset before and after the reset.
type PartitionOffset struct {
	Partition int32 `json:"partition"`
	// OldOffset is the group's committed offset when the subscriber was paused (-1: none).
	OldOffset int64 `json:"oldOffset"`
	// NewOffset is the offset committed by the reset.
	NewOffset int64 `json:"newOffset"`
}

// ResetOffsetStatus is what the reset did.
type ResetOffsetStatus struct {
	// ObservedGeneration is the generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Conditions: RefResolved, OffsetsReset, Succeeded.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// Channel is the KafkaChannel the ref resolved to.
	// +optional
	Channel string `json:"channel,omitempty"`
	// SubscriberUID is the subscriber the ref resolved to.
	// +optional
	SubscriberUID string `json:"subscriberUid,omitempty"`
	// Topic is the channel's Kafka topic.
	// +optional
	Topic string `json:"topic,omitempty"`
	// Group is the subscriber's Kafka consumer group.
	// +optional
	Group string `json:"group,omitempty"`
	// Partitions are the offsets per partition, once reset.
	// +optional
	Partitions []PartitionOffset `json:"partitions,omitempty"`
}

// ResetOffset moves one subscriber's position in a KafkaChannel to a point in time, once:
// events at or after it are delivered to that subscriber again, while the channel's other
// subscribers are not disturbed.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=ro,categories=all;knative;eventing
// +kubebuilder:printcolumn:name="Succeeded",type=string,JSONPath=`.status.conditions[?(@.type=="Succeeded")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Succeeded")].reason`
// +kubebuilder:printcolumn:name="Channel",type=string,JSONPath=`.status.channel`
// +kubebuilder:printcolumn:name="Time",type=string,JSONPath=`.spec.offset.time`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="Message",type=string,priority=1,JSONPath=`.status.conditions[?(@.type=="Succeeded")].message`
type ResetOffset struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   ResetOffsetSpec   `json:"spec"`
	Status ResetOffsetStatus `json:"status,omitempty"`
}

// ResetOffsetList is a list of ResetOffsets.
// +kubebuilder:object:root=true
type ResetOffsetList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ResetOffset `json:"items"`
}

func init() {
	SchemeBuilder.Register(&ResetOffset{}, &ResetOffsetList{})
}
