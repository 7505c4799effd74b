// Package v1alpha1 contains the ResetOffset API, kafka.eventing.knative.dev/v1alpha1: a request
// to move one subscriber's position in a KafkaChannel, so its events are delivered again (or
// skipped) from a point in time.
//
// +kubebuilder:object:generate=true
// +groupName=kafka.eventing.knative.dev
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of every type in this package.
	GroupVersion = schema.GroupVersion{Group: "kafka.eventing.knative.dev", Version: "v1alpha1"}

	// SchemeBuilder registers the types of this package with a runtime.Scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the types of this package to a runtime.Scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
