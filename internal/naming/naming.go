// Package naming is the one place that decides the names of everything a KafkaChannel owns:
// its topic, its consumer groups, its dispatcher Deployment and Service, its channel Service and
// the labels that tie them back to the channel. Manager, dispatcher and receiver all use it, so
// they can never disagree.
package naming

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"strings"
)

// Labels put on every object the manager creates for a channel.
const (
	LabelChannelName      = "messaging.knative.dev/channel"
	LabelChannelNamespace = "messaging.knative.dev/channel-namespace"
	LabelComponent        = "app.kubernetes.io/component"
	LabelPartOf           = "app.kubernetes.io/part-of"
	LabelManagedBy        = "app.kubernetes.io/managed-by"

	PartOf            = "kafkachannel"
	ManagedBy         = "kafkachannel-manager"
	ComponentDispatch = "dispatcher"
	ComponentReceiver = "receiver"
)

// ReceiverName names the shared receiver Deployment and Service in the operator namespace.
const ReceiverName = "kafkachannel-receiver"

var dns1035 = regexp.MustCompile(`^[a-z]([-a-z0-9]*[a-z0-9])?$`)

// maxLabel is the longest DNS-1123/1035 label: Service and Deployment names must fit it.
const maxLabel = 63

// Topic is the Kafka topic that holds a channel's events.
func Topic(namespace, name string) string {
	return namespace + "." + name
}

// GroupID is the Kafka consumer group of one subscriber of a channel.
func GroupID(namespace, name, subscriberUID string) string {
	return "kafka." + namespace + "." + name + "." + subscriberUID
}

// DispatcherName names a channel's dispatcher Deployment and its metrics Service in the operator
// namespace. Namespace and name are both in it for humans, and a hash of the pair makes it
// unique (ns "a-b"/name "c" and ns "a"/name "b-c" would otherwise collide) and bounded.
func DispatcherName(namespace, name string) string {
	h := shortHash(namespace + "/" + name)
	return boundedName("kc-"+namespace+"-"+name, "-"+h)
}

// ChannelServiceName is the Service in the channel's namespace that its address points at.
func ChannelServiceName(name string) string {
	const suffix = "-kn-channel"
	if len(name)+len(suffix) <= maxLabel && dns1035.MatchString(name) {
		return name + suffix
	}
	// Dots, a leading digit or a long name cannot make a Service name as is.
	base := name
	if base[0] < 'a' || base[0] > 'z' {
		base = "c" + base
	}
	return boundedName(base, "-"+shortHash(name)+suffix)
}

// ChannelHost is the host name of a channel's address.
func ChannelHost(namespace, name string) string {
	return fmt.Sprintf("%s.%s.svc.cluster.local", ChannelServiceName(name), namespace)
}

// ChannelURL is a channel's status.address.url.
func ChannelURL(namespace, name string) string {
	return "http://" + ChannelHost(namespace, name)
}

// ReceiverHost is the receiver Service's host name in the operator namespace: the host of
// every channel's https address, so one certificate (for this name) serves all channels.
func ReceiverHost(operatorNamespace string) string {
	return fmt.Sprintf("%s.%s.svc.cluster.local", ReceiverName, operatorNamespace)
}

// ChannelHTTPSURL is a channel's https address: the receiver's host and the channel's path.
func ChannelHTTPSURL(operatorNamespace, namespace, name string) string {
	return "https://" + ReceiverHost(operatorNamespace) + ChannelPath(namespace, name)
}

// ChannelAudience is the OIDC audience of a channel's address, in Knative's form
// (<group>/<kind>/<namespace>/<name>, lower case): a sender's token must be issued for it.
func ChannelAudience(namespace, name string) string {
	return strings.ToLower("messaging.knative.dev/kafkachannel/" + namespace + "/" + name)
}

// ChannelPath is the path form of a channel's address on the receiver, for clients that cannot
// set the Host header.
func ChannelPath(namespace, name string) string {
	return "/" + namespace + "/" + name
}

// ChannelLabels are the labels that tie an object in the operator namespace to its channel.
func ChannelLabels(namespace, name, component string) map[string]string {
	return map[string]string{
		LabelChannelName:      truncateLabelValue(name),
		LabelChannelNamespace: namespace,
		LabelComponent:        component,
		LabelPartOf:           PartOf,
		LabelManagedBy:        ManagedBy,
	}
}

func boundedName(base, suffix string) string {
	base = strings.ToLower(base)
	if len(base)+len(suffix) > maxLabel {
		base = base[:maxLabel-len(suffix)]
	}
	// A cut may leave a '-' or '.' right before the suffix; neither is allowed at a label's end
	// and '.' is not allowed in a label at all.
	base = strings.ReplaceAll(base, ".", "-")
	return strings.TrimRight(base, "-") + suffix
}

// Label values are limited to 63 characters; channel names may be longer (annotations on the
// objects carry the full name).
func truncateLabelValue(v string) string {
	if len(v) <= maxLabel {
		return v
	}
	return strings.TrimRight(v[:maxLabel-9], "-.") + "-" + shortHash(v)
}

func shortHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])[:8]
}
