package v1beta1

import (
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Annotations understood on a KafkaChannel.
const (
	// DeliveryOrderAnnotation selects ordered (default: one event in flight per partition),
	// ordered-by-key (one event in flight per record key, a bounded number per partition) or
	// unordered delivery (a bounded number in flight per partition); commits stay contiguous
	// in every mode.
	DeliveryOrderAnnotation = "kafka.eventing.knative.dev/delivery.order"
	// DeliveryOrderOrdered is the default delivery order.
	DeliveryOrderOrdered = "ordered"
	// DeliveryOrderUnordered lifts throughput past partitions/latency.
	DeliveryOrderUnordered = "unordered"
	// DeliveryOrderOrderedByKey keeps the order of the records of each key (records without a
	// key count as one key) and delivers different keys of a partition in parallel.
	DeliveryOrderOrderedByKey = "ordered-by-key"
)

// CheckDeliveryOrder returns an error naming the accepted values when a channel's
// DeliveryOrderAnnotation holds none of them. Annotations are outside the schema's reach, so
// the manager reports this in ConfigurationReady; dispatchers deliver such a channel ordered,
// the default, which loses no ordering a user may have meant.
func CheckDeliveryOrder(annotations map[string]string) error {
	v, ok := annotations[DeliveryOrderAnnotation]
	if !ok {
		return nil
	}
	switch v {
	case DeliveryOrderOrdered, DeliveryOrderOrderedByKey, DeliveryOrderUnordered:
		return nil
	}
	return fmt.Errorf("annotation %s is %q, not one of %q, %q, %q: events are delivered %s meanwhile",
		DeliveryOrderAnnotation, v, DeliveryOrderOrdered, DeliveryOrderOrderedByKey, DeliveryOrderUnordered, DeliveryOrderOrdered)
}

// Condition types of a KafkaChannel. Ready is derived from all the others.
const (
	ConditionReady               = "Ready"
	ConditionConfigurationReady  = "ConfigurationReady"
	ConditionTopicReady          = "TopicReady"
	ConditionDispatcherReady     = "DispatcherReady"
	ConditionReceiverReady       = "ReceiverReady"
	ConditionChannelServiceReady = "ChannelServiceReady"
	ConditionAddressable         = "Addressable"
	ConditionDeadLetterSinkReady = "DeadLetterSinkResolved"
)

// KafkaChannelSpec is the desired state of a KafkaChannel.
type KafkaChannelSpec struct {
	// NumPartitions of the channel's Kafka topic. It may grow, never shrink; the dispatcher
	// never runs more replicas than partitions.
	// +optional
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=10000
	// +kubebuilder:validation:XValidation:rule="self >= oldSelf",message="numPartitions may grow but never shrink: Kafka cannot remove partitions"
	NumPartitions int32 `json:"numPartitions,omitempty"`

	// ReplicationFactor of the channel's Kafka topic. Immutable.
	// +optional
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=32767
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="replicationFactor is immutable: delete and recreate the channel to change it"
	ReplicationFactor int16 `json:"replicationFactor,omitempty"`

	// RetentionDuration of the topic's records, an ISO-8601 duration such as PT168H or P7D.
	// +optional
	// +kubebuilder:default="PT168H"
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:XValidation:rule="self.matches('^P([0-9]+Y)?([0-9]+M)?([0-9]+W)?([0-9]+D)?(T([0-9]+H)?([0-9]+M)?([0-9]+([.][0-9]+)?S)?)?$') && self != 'P' && !self.endsWith('T')",message="retentionDuration must be an ISO-8601 duration such as PT168H or P7D"
	RetentionDuration string `json:"retentionDuration,omitempty"`

	// Delivery is the channel-wide delivery spec, used where a subscriber has none.
	// +optional
	Delivery *DeliverySpec `json:"delivery,omitempty"`

	// Subscribers of the channel, written by Knative's Subscription controller.
	// +optional
	// +listType=map
	// +listMapKey=uid
	// +kubebuilder:validation:MaxItems=1000
	Subscribers []SubscriberSpec `json:"subscribers,omitempty"`
}

// KafkaChannelStatus is the observed state of a KafkaChannel.
type KafkaChannelStatus struct {
	// ObservedGeneration is the generation the manager last reconciled.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Conditions: ConfigurationReady, TopicReady, DispatcherReady, ReceiverReady,
	// ChannelServiceReady, Addressable, DeadLetterSinkResolved and the summary Ready.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// Annotations carries extra status information (Knative duck v1 Status).
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`

	// Address is where to POST events for this channel.
	// +optional
	Address *Addressable `json:"address,omitempty"`

	// Addresses lists every address of the channel (Knative duck v1 AddressStatus).
	// +optional
	// +listType=atomic
	Addresses []Addressable `json:"addresses,omitempty"`

	// Subscribers is the dispatcher's report on each subscriber. The dispatcher owns it.
	// +optional
	// +listType=map
	// +listMapKey=uid
	Subscribers []SubscriberStatus `json:"subscribers,omitempty"`

	// DeadLetterSinkURI is the resolved URI of spec.delivery.deadLetterSink.
	// +optional
	DeadLetterSinkURI *string `json:"deadLetterSinkUri,omitempty"`

	// DeadLetterSinkCACerts are the CA certificates of the dead-letter sink.
	// +optional
	DeadLetterSinkCACerts *string `json:"deadLetterSinkCACerts,omitempty"`

	// DeadLetterSinkAudience is the OIDC audience of the dead-letter sink.
	// +optional
	DeadLetterSinkAudience *string `json:"deadLetterSinkAudience,omitempty"`

	// Policies lists the EventPolicies that apply to the channel while authentication-oidc is
	// enabled (Knative duck v1 AppliedEventPoliciesStatus); the receiver admits only senders
	// one of them allows.
	// +optional
	// +listType=atomic
	Policies []AppliedEventPolicyRef `json:"policies,omitempty"`
}

// AppliedEventPolicyRef names an EventPolicy that applies to the channel.
type AppliedEventPolicyRef struct {
	// APIVersion of the EventPolicy, eventing.knative.dev/v1alpha1.
	// +optional
	APIVersion string `json:"apiVersion,omitempty"`
	// Name of the EventPolicy, in the channel's namespace.
	// +optional
	Name string `json:"name,omitempty"`
}

// KafkaChannel is a Knative Channel whose events live in an Apache Kafka topic.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=kc,categories={all,knative,messaging,channel}
// +kubebuilder:metadata:labels="messaging.knative.dev/subscribable=true"
// +kubebuilder:metadata:labels="duck.knative.dev/addressable=true"
// +kubebuilder:metadata:labels="knative.dev/crd-install=true"
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="URL",type=string,JSONPath=`.status.address.url`
// +kubebuilder:printcolumn:name="Partitions",type=integer,JSONPath=`.spec.numPartitions`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="Message",type=string,priority=1,JSONPath=`.status.conditions[?(@.type=="Ready")].message`
type KafkaChannel struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec defaults to {} so that its fields' defaults apply to a channel written with no spec or
	// an empty "spec:" (null in YAML), as Knative's conformance suite writes one: the apiserver
	// defaults fields only inside objects that exist.

	// +optional
	// +kubebuilder:default={}
	Spec KafkaChannelSpec `json:"spec,omitempty"`
	// +optional
	Status KafkaChannelStatus `json:"status,omitempty"`
}

// KafkaChannelList is a list of KafkaChannels.
//
// +kubebuilder:object:root=true
type KafkaChannelList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []KafkaChannel `json:"items"`
}

func init() {
	SchemeBuilder.Register(&KafkaChannel{}, &KafkaChannelList{})
}
