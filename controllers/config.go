package controllers

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// Default data plane images; `make deploy` overrides them through DISPATCHER_IMAGE/RECEIVER_IMAGE.
const (
	DefaultDispatcherImage = "ghcr.io/kafkachannel/kafkachannel-dispatcher:v0.1.0"
	DefaultReceiverImage   = "ghcr.io/kafkachannel/kafkachannel-receiver:v0.1.0"
)

// Config is the manager's configuration, read from its environment (docs/architecture.md).
type Config struct {
	// OperatorNamespace holds the Kafka Secret, the data-plane ConfigMaps, the dispatcher
	// Deployments and the shared receiver.
	OperatorNamespace string
	// SecretName is the Kafka Secret in OperatorNamespace.
	SecretName string
	// ReceiverTLSSecret is the kubernetes.io/tls Secret in OperatorNamespace (tls.crt, tls.key,
	// ca.crt; cert-manager writes it) the receiver serves https with; its ca.crt is published
	// as the https address's CACerts.
	ReceiverTLSSecret string

	Dispatcher DataPlane
	Receiver   DataPlane

	// PodLabels and PodAnnotations are added to every data-plane pod template.
	PodLabels      map[string]string
	PodAnnotations map[string]string

	// TopicDeleteTimeout bounds how long a deleted channel waits for Kafka to delete its topic
	// before the finalizer lets go (with a Warning Event saying the topic may remain).
	TopicDeleteTimeout time.Duration

	// ResetOffsetTimeout bounds a ResetOffset from the pause request to the commit: dispatchers
	// that do not pause in time, or Kafka that does not answer, fail it (and the subscriber
	// resumes where it was).
	ResetOffsetTimeout time.Duration
}

// DataPlane configures one data-plane component's pods.
type DataPlane struct {
	Image          string
	Replicas       int32
	Resources      corev1.ResourceRequirements
	ServiceAccount string
}

// ConfigFromEnv reads the configuration through getenv (os.Getenv in main, a map in tests).
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	get := func(key, def string) string {
		if v := strings.TrimSpace(getenv(key)); v != "" {
			return v
		}
		return def
	}
	c := Config{
		OperatorNamespace: get("OPERATOR_NAMESPACE", get("POD_NAMESPACE", "knative-eventing")),
		SecretName:        get("KAFKA_SECRET_NAME", "kafka-secret"),
		ReceiverTLSSecret: get("RECEIVER_TLS_SECRET_NAME", "kafkachannel-receiver-tls"),
	}
	var err error
	if c.Dispatcher, err = dataPlaneFromEnv(get, "DISPATCHER", DefaultDispatcherImage, "kafkachannel-dispatcher"); err != nil {
		return c, err
	}
	if c.Receiver, err = dataPlaneFromEnv(get, "RECEIVER", DefaultReceiverImage, "kafkachannel-receiver"); err != nil {
		return c, err
	}
	if c.PodLabels, err = parsePairs("DATAPLANE_LABELS", get("DATAPLANE_LABELS", "")); err != nil {
		return c, err
	}
	if c.PodAnnotations, err = parsePairs("DATAPLANE_ANNOTATIONS", get("DATAPLANE_ANNOTATIONS", "")); err != nil {
		return c, err
	}
	if c.TopicDeleteTimeout, err = time.ParseDuration(get("TOPIC_DELETE_TIMEOUT", "2m")); err != nil || c.TopicDeleteTimeout < 0 {
		return c, fmt.Errorf("TOPIC_DELETE_TIMEOUT=%q is not a non-negative Go duration such as 2m: %v", getenv("TOPIC_DELETE_TIMEOUT"), err)
	}
	if c.ResetOffsetTimeout, err = time.ParseDuration(get("RESET_OFFSET_TIMEOUT", "2m")); err != nil || c.ResetOffsetTimeout <= 0 {
		return c, fmt.Errorf("RESET_OFFSET_TIMEOUT=%q is not a positive Go duration such as 2m: %v", getenv("RESET_OFFSET_TIMEOUT"), err)
	}
	return c, nil
}

// ConfigFromOSEnv is ConfigFromEnv over the process environment.
func ConfigFromOSEnv() (Config, error) { return ConfigFromEnv(os.Getenv) }

func dataPlaneFromEnv(get func(string, string) string, prefix, image, sa string) (DataPlane, error) {
	d := DataPlane{
		Image:          get(prefix+"_IMAGE", image),
		ServiceAccount: get(prefix+"_SERVICE_ACCOUNT", sa),
	}
	n, err := strconv.ParseInt(get(prefix+"_REPLICAS", "1"), 10, 32)
	if err != nil || n < 1 {
		return d, fmt.Errorf("%s_REPLICAS=%q must be a whole number of at least 1", prefix, get(prefix+"_REPLICAS", ""))
	}
	d.Replicas = int32(n)
	d.Resources = corev1.ResourceRequirements{Requests: corev1.ResourceList{}, Limits: corev1.ResourceList{}}
	for _, q := range []struct {
		key, def string
		list     corev1.ResourceList
		name     corev1.ResourceName
	}{
		{"_CPU_REQUEST", "100m", d.Resources.Requests, corev1.ResourceCPU},
		{"_MEMORY_REQUEST", "64Mi", d.Resources.Requests, corev1.ResourceMemory},
		{"_CPU_LIMIT", "", d.Resources.Limits, corev1.ResourceCPU},
		{"_MEMORY_LIMIT", "512Mi", d.Resources.Limits, corev1.ResourceMemory},
	} {
		v := get(prefix+q.key, q.def)
		if v == "" {
			continue
		}
		qty, err := resource.ParseQuantity(v)
		if err != nil {
			return d, fmt.Errorf("%s%s=%q is not a Kubernetes quantity: %w", prefix, q.key, v, err)
		}
		q.list[q.name] = qty
	}
	return d, nil
}

// parsePairs reads "k=v,k2=v2".
func parsePairs(key, s string) (map[string]string, error) {
	out := map[string]string{}
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		k, v, ok := strings.Cut(p, "=")
		if !ok || strings.TrimSpace(k) == "" {
			return nil, fmt.Errorf("%s: %q is not key=value", key, p)
		}
		out[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	return out, nil
}

// fingerprint is a stable text form of the data-plane settings that pods are built from, so
// that changing any of them (not only the Secret) rolls the pods.
func (d DataPlane) fingerprint(c Config) string {
	var b strings.Builder
	fmt.Fprintf(&b, "image=%s sa=%s", d.Image, d.ServiceAccount)
	for _, l := range []corev1.ResourceList{d.Resources.Requests, d.Resources.Limits} {
		names := make([]string, 0, len(l))
		for n := range l {
			names = append(names, string(n))
		}
		sort.Strings(names)
		for _, n := range names {
			q := l[corev1.ResourceName(n)]
			fmt.Fprintf(&b, " %s=%s", n, q.String())
		}
		b.WriteString(" |")
	}
	for _, m := range []map[string]string{c.PodLabels, c.PodAnnotations} {
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(&b, " %s=%s", k, m[k])
		}
		b.WriteString(" |")
	}
	return b.String()
}
