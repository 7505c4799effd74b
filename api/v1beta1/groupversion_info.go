// Package v1beta1 contains the KafkaChannel API, messaging.knative.dev/v1beta1.
//
// A KafkaChannel implements Knative's Channelable duck type, so Knative Subscriptions (and
// anything else that speaks that duck type) drive it unchanged.
//
// +kubebuilder:object:generate=true
// +groupName=messaging.knative.dev
package v1beta1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of every type in this package.
	GroupVersion = schema.GroupVersion{Group: "messaging.knative.dev", Version: "v1beta1"}

	// SchemeBuilder registers the types of this package with a runtime.Scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the types of this package to a runtime.Scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
