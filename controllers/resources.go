package controllers

import (
	"crypto/sha256"
	"encoding/hex"
	"maps"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/kafkachannel/kafkachannel/internal/features"
	"github.com/kafkachannel/kafkachannel/internal/kafkaconn"
	"github.com/kafkachannel/kafkachannel/internal/memlimit"
	"github.com/kafkachannel/kafkachannel/internal/naming"
	"github.com/kafkachannel/kafkachannel/internal/observability"
	"github.com/kafkachannel/kafkachannel/receiver"
)

// Annotations the manager writes on the objects it creates.
const (
	// ConfigHashAnnotation on a pod template changes whenever the Kafka Secret or the data-plane
	// configuration changes, which rolls the pods.
	ConfigHashAnnotation = "kafkachannel.knative.dev/config-hash"
	// ChannelNamespaceAnnotation and ChannelNameAnnotation carry the channel's full identity:
	// label values are cut at 63 characters, names of KafkaChannels may be longer.
	ChannelNamespaceAnnotation = "kafkachannel.knative.dev/channel-namespace"
	ChannelNameAnnotation      = "kafkachannel.knative.dev/channel-name"
)

// Paths inside data-plane containers: where the binaries look by default.
const (
	secretMountPath = kafkaconn.DefaultSecretDir
	configMountDir  = observability.DefaultConfigDir
)

// DataPlaneConfigMaps are the Knative-style ConfigMaps mounted into data-plane pods; binaries
// re-read them in place, so they are not part of the config hash.
var DataPlaneConfigMaps = []string{observability.ConfigTracing, observability.ConfigObservability, observability.ConfigLogging, features.ConfigMap}

// configHash combines the Secret's digest with the component's settings.
func configHash(secretHash string, d DataPlane, c Config) string {
	sum := sha256.Sum256([]byte(secretHash + "\n" + d.fingerprint(c)))
	return hex.EncodeToString(sum[:])[:16]
}

// receiverLabels select the shared receiver's pods.
func receiverLabels() map[string]string {
	return map[string]string{
		naming.LabelComponent: naming.ComponentReceiver,
		naming.LabelPartOf:    naming.PartOf,
		naming.LabelManagedBy: naming.ManagedBy,
	}
}

// dispatcherReplicas is the configured count, never more than the topic's partitions: a
// replica beyond them would get no partition and sit idle.
func dispatcherReplicas(c Config, partitions int32) int32 {
	return max(1, min(c.Dispatcher.Replicas, partitions))
}

// podTemplate builds a restricted pod for a data-plane component.
func podTemplate(c Config, d DataPlane, component string, selector map[string]string, env []corev1.EnvVar, ports []corev1.ContainerPort, hash string) corev1.PodTemplateSpec {
	labels := maps.Clone(c.PodLabels)
	if labels == nil {
		labels = map[string]string{}
	}
	maps.Copy(labels, selector) // the selector wins over user labels
	annotations := maps.Clone(c.PodAnnotations)
	if annotations == nil {
		annotations = map[string]string{}
	}
	annotations[ConfigHashAnnotation] = hash

	env = append(env,
		corev1.EnvVar{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
		corev1.EnvVar{Name: "POD_NAMESPACE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
		corev1.EnvVar{Name: kafkaconn.SecretDirEnv, Value: secretMountPath},
		corev1.EnvVar{Name: observability.ConfigDirEnv, Value: configMountDir},
		// The binary keeps its heap below the container's limit (internal/memlimit); with no
		// limit set, the downward API gives the node's allocatable memory.
		corev1.EnvVar{Name: memlimit.Env, ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{
			ContainerName: component, Resource: "limits.memory"}}},
	)
	volumes := []corev1.Volume{{
		Name: "kafka-secret",
		// The default file mode (0644) is kept on purpose: the files are owned by root and the
		// container runs as an arbitrary non-root user with no fsGroup.
		VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: c.SecretName}},
	}}
	mounts := []corev1.VolumeMount{{Name: "kafka-secret", MountPath: secretMountPath, ReadOnly: true}}
	for _, cm := range DataPlaneConfigMaps {
		volumes = append(volumes, corev1.Volume{
			Name: cm,
			VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
				LocalObjectReference: corev1.LocalObjectReference{Name: cm},
				// Binaries fall back to defaults; a missing ConfigMap must not keep pods pending.
				Optional: ptr.To(true),
			}},
		})
		mounts = append(mounts, corev1.VolumeMount{Name: cm, MountPath: configMountDir + "/" + cm, ReadOnly: true})
	}
	probe := func(path string, failures int32) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler:     corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstr.FromString("metrics")}},
			PeriodSeconds:    10,
			TimeoutSeconds:   2,
			FailureThreshold: failures,
		}
	}
	return corev1.PodTemplateSpec{
		ObjectMeta: metaWith(labels, annotations),
		Spec: corev1.PodSpec{
			ServiceAccountName: d.ServiceAccount,
			SecurityContext: &corev1.PodSecurityContext{
				RunAsNonRoot:   ptr.To(true),
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			Containers: []corev1.Container{{
				Name:           component,
				Image:          d.Image,
				Command:        []string{"/" + component},
				Env:            env,
				Ports:          ports,
				Resources:      d.Resources,
				VolumeMounts:   mounts,
				LivenessProbe:  probe("/healthz", 6),
				ReadinessProbe: probe("/readyz", 3),
				SecurityContext: &corev1.SecurityContext{
					RunAsNonRoot:             ptr.To(true),
					ReadOnlyRootFilesystem:   ptr.To(true),
					AllowPrivilegeEscalation: ptr.To(false),
					Privileged:               ptr.To(false),
					Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
					SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
				},
			}},
			Volumes: volumes,
		},
	}
}

func metricsPorts() []corev1.ContainerPort {
	return []corev1.ContainerPort{
		{Name: "metrics", ContainerPort: observability.MetricsPort, Protocol: corev1.ProtocolTCP},
		{Name: "profiling", ContainerPort: observability.ProfilingPort, Protocol: corev1.ProtocolTCP},
	}
}

// mutateDispatcher writes the desired state of a channel's dispatcher Deployment into dep,
// keeping whatever the API server defaulted elsewhere.
func mutateDispatcher(dep *appsv1.Deployment, c Config, namespace, name string, partitions int32, secretHash string) {
	selector := naming.ChannelLabels(namespace, name, naming.ComponentDispatch)
	setManagedMeta(dep, selector, namespace, name)
	dep.Spec.Replicas = ptr.To(dispatcherReplicas(c, partitions))
	if dep.CreationTimestamp.IsZero() {
		// The selector is immutable once created.
		dep.Spec.Selector = selectorOf(selector)
	}
	env := []corev1.EnvVar{
		{Name: "CHANNEL_NAMESPACE", Value: namespace},
		{Name: "CHANNEL_NAME", Value: name},
		{Name: "KAFKA_TOPIC", Value: naming.Topic(namespace, name)},
	}
	dep.Spec.Template = podTemplate(c, c.Dispatcher, naming.ComponentDispatch, selector, env, metricsPorts(),
		configHash(secretHash, c.Dispatcher, c))
}

// mutateDispatcherService exposes only the metrics port, for Prometheus.
func mutateDispatcherService(svc *corev1.Service, namespace, name string) {
	selector := naming.ChannelLabels(namespace, name, naming.ComponentDispatch)
	setManagedMeta(svc, selector, namespace, name)
	svc.Spec.Type = corev1.ServiceTypeClusterIP
	svc.Spec.Selector = selector
	svc.Spec.Ports = []corev1.ServicePort{{
		Name: "metrics", Port: observability.MetricsPort, TargetPort: intstr.FromString("metrics"), Protocol: corev1.ProtocolTCP,
	}}
}

// mutateReceiver writes the shared receiver Deployment.
func mutateReceiver(dep *appsv1.Deployment, c Config, secretHash string) {
	selector := receiverLabels()
	dep.Labels = mergeLabels(dep.Labels, selector)
	dep.Spec.Replicas = ptr.To(c.Receiver.Replicas)
	if dep.CreationTimestamp.IsZero() {
		dep.Spec.Selector = selectorOf(selector)
	}
	ports := append([]corev1.ContainerPort{
		{Name: "http", ContainerPort: observability.IngressPort, Protocol: corev1.ProtocolTCP},
		{Name: "https", ContainerPort: observability.IngressTLSPort, Protocol: corev1.ProtocolTCP},
	}, metricsPorts()...)
	env := []corev1.EnvVar{{Name: receiver.TLSDirEnv, Value: receiver.DefaultTLSDir}}
	dep.Spec.Template = podTemplate(c, c.Receiver, naming.ComponentReceiver, selector, env, ports,
		configHash(secretHash, c.Receiver, c))
	// The certificate is optional: without it only the http port works, and with
	// transport-encryption on the channel says why it is not addressable. It is re-read in
	// place when cert-manager renews it, so it is no part of the config hash.
	spec := &dep.Spec.Template.Spec
	spec.Volumes = append(spec.Volumes, corev1.Volume{
		Name: "receiver-tls",
		VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName: c.ReceiverTLSSecret,
			Optional:   ptr.To(true),
			Items: []corev1.KeyToPath{
				{Key: receiver.TLSCertFile, Path: receiver.TLSCertFile},
				{Key: receiver.TLSKeyFile, Path: receiver.TLSKeyFile},
			},
		}},
	})
	spec.Containers[0].VolumeMounts = append(spec.Containers[0].VolumeMounts,
		corev1.VolumeMount{Name: "receiver-tls", MountPath: receiver.DefaultTLSDir, ReadOnly: true})
	// A terminating pod stays in the Service's endpoints until kube-proxy and every sender
	// notice; sleeping before SIGTERM lets them, so a rollout refuses no new connection. The
	// receiver then drains for up to 25 s (--shutdown-grace), inside the grace period.
	dep.Spec.Template.Spec.Containers[0].Lifecycle = &corev1.Lifecycle{
		PreStop: &corev1.LifecycleHandler{Sleep: &corev1.SleepAction{Seconds: receiverDrainDelaySeconds}},
	}
	dep.Spec.Template.Spec.TerminationGracePeriodSeconds = ptr.To(int64(receiverDrainDelaySeconds + 25 + 5))
}

// receiverDrainDelaySeconds is how long a terminating receiver keeps serving before SIGTERM.
const receiverDrainDelaySeconds = 5

// mutateReceiverService serves events on port 80 (what channel addresses resolve to, through
// their ExternalName Services), on 443 over https (channels' https addresses name this Service
// directly, so one certificate serves every channel) and metrics.
func mutateReceiverService(svc *corev1.Service) {
	selector := receiverLabels()
	svc.Labels = mergeLabels(svc.Labels, selector)
	svc.Spec.Type = corev1.ServiceTypeClusterIP
	svc.Spec.Selector = selector
	svc.Spec.Ports = []corev1.ServicePort{
		{Name: "http", Port: 80, TargetPort: intstr.FromString("http"), Protocol: corev1.ProtocolTCP},
		{Name: "https", Port: 443, TargetPort: intstr.FromString("https"), Protocol: corev1.ProtocolTCP},
		{Name: "metrics", Port: observability.MetricsPort, TargetPort: intstr.FromString("metrics"), Protocol: corev1.ProtocolTCP},
	}
}

// mutateChannelService points the channel's address at the shared receiver.
func mutateChannelService(svc *corev1.Service, c Config, namespace, name string) {
	setManagedMeta(svc, naming.ChannelLabels(namespace, name, naming.ComponentReceiver), namespace, name)
	svc.Spec = corev1.ServiceSpec{
		Type:         corev1.ServiceTypeExternalName,
		ExternalName: receiverHost(c),
		Ports:        []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}},
	}
}

func receiverHost(c Config) string { return naming.ReceiverHost(c.OperatorNamespace) }

type labelled interface {
	GetLabels() map[string]string
	SetLabels(map[string]string)
	GetAnnotations() map[string]string
	SetAnnotations(map[string]string)
}

func setManagedMeta(o labelled, labels map[string]string, namespace, name string) {
	o.SetLabels(mergeLabels(o.GetLabels(), labels))
	a := o.GetAnnotations()
	if a == nil {
		a = map[string]string{}
	}
	a[ChannelNamespaceAnnotation] = namespace
	a[ChannelNameAnnotation] = name
	o.SetAnnotations(a)
}

func mergeLabels(existing, want map[string]string) map[string]string {
	if existing == nil {
		existing = map[string]string{}
	}
	maps.Copy(existing, want)
	return existing
}

func metaWith(labels, annotations map[string]string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Labels: labels, Annotations: annotations}
}

func selectorOf(labels map[string]string) *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchLabels: maps.Clone(labels)}
}
