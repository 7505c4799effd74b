// Package controllers holds the manager's KafkaChannel reconciler.
package controllers

// The manager's permissions, generated into config/rbac/role.yaml. Deployments and Services it
// owns live in the operator namespace and channel Services in channel namespaces, so these are
// cluster-wide; Secrets and ConfigMaps are read-only.

// +kubebuilder:rbac:groups=messaging.knative.dev,resources=kafkachannels,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=messaging.knative.dev,resources=kafkachannels/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=messaging.knative.dev,resources=kafkachannels/finalizers,verbs=update
// +kubebuilder:rbac:groups=apps,resources=deployments,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=services,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=secrets;configmaps,verbs=get;list;watch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Leader election (leases in the operator namespace) and the secure metrics endpoint's token
// and access reviews are granted by namespaced/separate roles in config/rbac.

// Dead-letter sink references are read (get only, never watched) to learn their address. These
// are the Addressables Knative users point at; other kinds need a rule added here.
// +kubebuilder:rbac:groups=serving.knative.dev,resources=services,verbs=get
// +kubebuilder:rbac:groups=eventing.knative.dev,resources=brokers,verbs=get
// +kubebuilder:rbac:groups=messaging.knative.dev,resources=channels;inmemorychannels,verbs=get
