package v1beta1

// The types in this file mirror Knative's duck v1 types field for field (JSON names included):
// the Knative Subscription controller writes them into spec.subscribers and compares what it
// reads back, so a field this schema does not know would be pruned and the Subscription would
// never become Ready.

// BackoffPolicyType is the spacing of retries: linear (delay*n) or exponential (delay*2^n).
// +kubebuilder:validation:Enum=linear;exponential
type BackoffPolicyType string

const (
	// BackoffPolicyLinear waits backoffDelay*n before retry n.
	BackoffPolicyLinear BackoffPolicyType = "linear"
	// BackoffPolicyExponential waits backoffDelay*2^n before retry n.
	BackoffPolicyExponential BackoffPolicyType = "exponential"
)

// DeliveryFormat is the CloudEvents HTTP content mode used towards a destination.
// +kubebuilder:validation:Enum=json;binary
type DeliveryFormat string

// KReference points at an Addressable object whose status.address.url is the destination.
type KReference struct {
	// Kind of the referent.
	// +kubebuilder:validation:MinLength=1
	Kind string `json:"kind"`
	// Namespace of the referent; defaults to the KafkaChannel's namespace.
	// +optional
	Namespace string `json:"namespace,omitempty"`
	// Name of the referent.
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
	// APIVersion of the referent, e.g. serving.knative.dev/v1.
	// +optional
	APIVersion string `json:"apiVersion,omitempty"`
	// Group of the referent, used when apiVersion is not given.
	// +optional
	Group string `json:"group,omitempty"`
	// Address selects one of the referent's status.addresses by name.
	// +optional
	Address *string `json:"address,omitempty"`
}

// Destination is a reference to an Addressable, an absolute URI, or a URI relative to the
// reference's address.
// +kubebuilder:validation:XValidation:rule="has(self.ref) || has(self.uri)",message="a destination needs a ref or a uri"
type Destination struct {
	// Ref points at an Addressable.
	// +optional
	Ref *KReference `json:"ref,omitempty"`
	// URI is an absolute http(s) URL, or a path relative to ref's address when ref is set.
	// +optional
	// +kubebuilder:validation:MaxLength=2048
	URI *string `json:"uri,omitempty"`
	// CACerts is a PEM bundle of CA certificates to trust when the destination is https.
	// +optional
	CACerts *string `json:"CACerts,omitempty"`
	// Audience is the OIDC audience of the destination: with authentication-oidc enabled the
	// dispatcher sends it a token for this audience.
	// +optional
	Audience *string `json:"audience,omitempty"`
}

// DeliverySpec says how events are retried and where undeliverable events go.
type DeliverySpec struct {
	// DeadLetterSink receives events that could not be delivered after all retries, with the
	// knativeerrordest, knativeerrorcode and knativeerrordata extensions set.
	// +optional
	DeadLetterSink *Destination `json:"deadLetterSink,omitempty"`
	// Retry is the number of retries after the first attempt.
	// +optional
	// +kubebuilder:validation:Minimum=0
	Retry *int32 `json:"retry,omitempty"`
	// Timeout of each delivery attempt, an ISO-8601 duration such as PT10S.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:XValidation:rule="self.matches('^P([0-9]+Y)?([0-9]+M)?([0-9]+W)?([0-9]+D)?(T([0-9]+H)?([0-9]+M)?([0-9]+([.][0-9]+)?S)?)?$') && self != 'P' && !self.endsWith('T')",message="timeout must be an ISO-8601 duration such as PT10S"
	Timeout *string `json:"timeout,omitempty"`
	// BackoffPolicy is linear or exponential; exponential when unset.
	// +optional
	BackoffPolicy *BackoffPolicyType `json:"backoffPolicy,omitempty"`
	// BackoffDelay is the base delay between retries, an ISO-8601 duration such as PT0.2S.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:XValidation:rule="self.matches('^P([0-9]+Y)?([0-9]+M)?([0-9]+W)?([0-9]+D)?(T([0-9]+H)?([0-9]+M)?([0-9]+([.][0-9]+)?S)?)?$') && self != 'P' && !self.endsWith('T')",message="backoffDelay must be an ISO-8601 duration such as PT0.2S"
	BackoffDelay *string `json:"backoffDelay,omitempty"`
	// RetryAfterMax caps how long a Retry-After header may delay a retry (ISO-8601).
	// +optional
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:XValidation:rule="self.matches('^P([0-9]+Y)?([0-9]+M)?([0-9]+W)?([0-9]+D)?(T([0-9]+H)?([0-9]+M)?([0-9]+([.][0-9]+)?S)?)?$') && self != 'P' && !self.endsWith('T')",message="retryAfterMax must be an ISO-8601 duration such as PT30S"
	RetryAfterMax *string `json:"retryAfterMax,omitempty"`
	// Format is the CloudEvents HTTP content mode for deliveries: binary (default) or json.
	// +optional
	Format *DeliveryFormat `json:"format,omitempty"`
}

// AuthStatus is the identity Knative resolved for a subscription's OIDC authentication.
type AuthStatus struct {
	// ServiceAccountName is the ServiceAccount the subscription acts as.
	// +optional
	ServiceAccountName *string `json:"serviceAccountName,omitempty"`
	// ServiceAccountNames lists several ServiceAccounts the subscription acts as.
	// +optional
	// +listType=atomic
	ServiceAccountNames []string `json:"serviceAccountNames,omitempty"`
}

// SubscriberSpec is one subscriber of the channel, as Knative's Subscription controller
// writes it (Knative duck v1 SubscriberSpec).
// +kubebuilder:validation:XValidation:rule="has(self.subscriberUri) || has(self.replyUri)",message="a subscriber needs a subscriberUri or a replyUri"
type SubscriberSpec struct {
	// Name of the Subscription this subscriber comes from.
	// +optional
	Name string `json:"name,omitempty"`
	// UID identifies the subscriber; it names its Kafka consumer group.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	UID string `json:"uid"`
	// Generation of the Subscription this subscriber was written from; the dispatcher reports
	// it back as status.subscribers[].observedGeneration once it applies it.
	// +optional
	Generation int64 `json:"generation,omitempty"`
	// SubscriberURI receives each event (absolute http or https URL).
	// +optional
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="self.matches('^https?://[^/?#]+')",message="subscriberUri must be an absolute http or https URL"
	SubscriberURI *string `json:"subscriberUri,omitempty"`
	// SubscriberCACerts is a PEM bundle of CA certificates trusted for an https subscriberUri.
	// +optional
	SubscriberCACerts *string `json:"subscriberCACerts,omitempty"`
	// SubscriberAudience is the OIDC audience of the subscriber: with authentication-oidc
	// enabled the dispatcher sends it a token of auth's service account for this audience.
	// +optional
	SubscriberAudience *string `json:"subscriberAudience,omitempty"`
	// ReplyURI receives the events the subscriber answers with (absolute http or https URL).
	// +optional
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="self.matches('^https?://[^/?#]+')",message="replyUri must be an absolute http or https URL"
	ReplyURI *string `json:"replyUri,omitempty"`
	// ReplyCACerts is a PEM bundle of CA certificates trusted for an https replyUri.
	// +optional
	ReplyCACerts *string `json:"replyCACerts,omitempty"`
	// ReplyAudience is the OIDC audience of the reply destination (tokens as for the subscriber).
	// +optional
	ReplyAudience *string `json:"replyAudience,omitempty"`
	// Delivery overrides the channel's delivery spec for this subscriber.
	// +optional
	Delivery *DeliverySpec `json:"delivery,omitempty"`
	// Auth is the OIDC identity of the subscription: the service account (in the channel's
	// namespace) whose tokens the dispatcher presents to the subscriber, reply and dead-letter sink.
	// +optional
	Auth *AuthStatus `json:"auth,omitempty"`
}

// SubscriberStatus is the dispatcher's report on one subscriber.
type SubscriberStatus struct {
	// UID of the subscriber this entry reports on.
	UID string `json:"uid"`
	// ObservedGeneration is the subscriber generation the dispatcher has applied.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Ready is "True" once the subscriber's consumer group has joined and its start offsets
	// are committed, "False" when it cannot start, "Unknown" while starting.
	// +kubebuilder:validation:Enum=True;False;Unknown
	Ready string `json:"ready"`
	// Message says why the subscriber is not ready.
	// +optional
	Message string `json:"message,omitempty"`
}

// Addressable is where events for the channel are sent.
type Addressable struct {
	// Name of the address.
	// +optional
	Name *string `json:"name,omitempty"`
	// URL of the channel, http://<name>-kn-channel.<namespace>.svc.cluster.local.
	// +optional
	URL string `json:"url,omitempty"`
	// CACerts of the address when it is https.
	// +optional
	CACerts *string `json:"CACerts,omitempty"`
	// Audience of the address for OIDC.
	// +optional
	Audience *string `json:"audience,omitempty"`
}
