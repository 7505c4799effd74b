// Package eventpolicy decides, for one request to a channel, whether Knative EventPolicies
// (eventing.knative.dev/v1alpha1) let its sender in. It reads the policies as unstructured
// objects, so the operator depends on Knative's API, not on its Go module.
//
// A policy applies to a channel when its spec.to is empty (every resource of its namespace), or
// names the channel by ref, or selects it by labels. It admits a sender whose authenticated
// subject matches one of spec.from[].sub or status.from[] (Knative's controller resolves
// spec.from[].ref to subjects there); a trailing "*" matches any suffix. spec.filters, when
// given, must also all match the event (exact, prefix, suffix, all, any, not).
//
// CESQL is not evaluated. A policy with a CESQL expression anywhere in its filters admits no
// event at all (Unsupported says why), however the expression is nested: evaluating it as
// "false" would let `not` turn it into "everything".
package eventpolicy

import (
	"fmt"
	"sort"
	"strings"

	cloudevents "github.com/cloudevents/sdk-go/v2/event"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/kafkachannel/kafkachannel/api/v1beta1"
	"github.com/kafkachannel/kafkachannel/internal/features"
)

// GVK of Knative's EventPolicy.
var GVK = schema.GroupVersionKind{Group: "eventing.knative.dev", Version: "v1alpha1", Kind: "EventPolicy"}

// channelKind, with v1beta1's group, identifies the resource a request is addressed to.
const channelKind = "KafkaChannel"

// Policy is the part of an EventPolicy this package uses.
type Policy struct {
	Namespace string
	Name      string
	Spec      policySpec
	Status    policyStatus

	// Worked out once by FromUnstructured, as the receiver asks for every event: the label
	// selectors of spec.to that name KafkaChannels (parsed), and every subject the policy
	// admits (status.from, then spec.from).
	selectors []labels.Selector
	subjects  []string
	// unsupported is why the policy admits nothing (a CESQL filter), empty when usable.
	unsupported string
}

type policySpec struct {
	To []struct {
		Ref      *targetRef `json:"ref,omitempty"`
		Selector *struct {
			APIVersion           string `json:"apiVersion,omitempty"`
			Kind                 string `json:"kind,omitempty"`
			metav1.LabelSelector `json:",inline"`
		} `json:"selector,omitempty"`
	} `json:"to,omitempty"`
	From []struct {
		Sub *string `json:"sub,omitempty"`
	} `json:"from,omitempty"`
	Filters []Filter `json:"filters,omitempty"`
}

type policyStatus struct {
	From []string `json:"from,omitempty"`
}

type targetRef struct {
	APIVersion string `json:"apiVersion,omitempty"`
	Kind       string `json:"kind"`
	Name       string `json:"name"`
}

// Filter is Knative's SubscriptionsAPIFilter. CESQL is read, so that a filter using it is
// recognised, but never evaluated.
type Filter struct {
	All    []Filter          `json:"all,omitempty"`
	Any    []Filter          `json:"any,omitempty"`
	Not    *Filter           `json:"not,omitempty"`
	Exact  map[string]string `json:"exact,omitempty"`
	Prefix map[string]string `json:"prefix,omitempty"`
	Suffix map[string]string `json:"suffix,omitempty"`
	CESQL  string            `json:"cesql,omitempty"`
}

// FromUnstructured reads a policy.
func FromUnstructured(u *unstructured.Unstructured) (*Policy, error) {
	var doc struct {
		Spec   policySpec   `json:"spec"`
		Status policyStatus `json:"status"`
	}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &doc); err != nil {
		return nil, fmt.Errorf("reading EventPolicy %s/%s: %w", u.GetNamespace(), u.GetName(), err)
	}
	p := &Policy{Namespace: u.GetNamespace(), Name: u.GetName(), Spec: doc.Spec, Status: doc.Status}
	for _, to := range p.Spec.To {
		if s := to.Selector; s != nil && s.Kind == channelKind && isChannelGroup(s.APIVersion) {
			// An invalid selector selects nothing.
			if sel, err := metav1.LabelSelectorAsSelector(&s.LabelSelector); err == nil {
				p.selectors = append(p.selectors, sel)
			}
		}
	}
	for i, f := range p.Spec.Filters {
		if path := f.cesqlPath(fmt.Sprintf("spec.filters[%d]", i)); path != "" {
			p.unsupported = fmt.Sprintf("%s is a CESQL expression, which this channel implementation does not evaluate, so the policy admits no event", path)
			break
		}
	}
	p.subjects = append(p.subjects, p.Status.From...)
	for _, f := range p.Spec.From {
		if f.Sub != nil {
			p.subjects = append(p.subjects, *f.Sub)
		}
	}
	return p, nil
}

// AppliesTo reports whether p speaks about the channel namespace/name with these labels.
func (p *Policy) AppliesTo(namespace, name string, channelLabels map[string]string) bool {
	if p.Namespace != namespace {
		return false
	}
	if len(p.Spec.To) == 0 {
		return true
	}
	for _, to := range p.Spec.To {
		if r := to.Ref; r != nil && r.Kind == channelKind && r.Name == name && isChannelGroup(r.APIVersion) {
			return true
		}
	}
	for _, sel := range p.selectors {
		if sel.Matches(labels.Set(channelLabels)) {
			return true
		}
	}
	return false
}

// isChannelGroup reports whether apiVersion is of the KafkaChannel's API group.
func isChannelGroup(apiVersion string) bool {
	gv, err := schema.ParseGroupVersion(apiVersion)
	return err == nil && gv.Group == v1beta1.GroupVersion.Group
}

// Unsupported says why p admits no event (it uses CESQL), or is empty when p is evaluated as
// written. The manager shows it in the channel's status.
func (p *Policy) Unsupported() string { return p.unsupported }

// Admits reports whether p lets subject send e.
func (p *Policy) Admits(subject string, e *cloudevents.Event) bool {
	if p.unsupported != "" {
		return false
	}
	matched := false
	for _, s := range p.subjects {
		if subjectMatches(s, subject) {
			matched = true
			break
		}
	}
	if !matched {
		return false
	}
	for _, f := range p.Spec.Filters {
		if !f.Matches(e) {
			return false
		}
	}
	return true
}

func subjectMatches(pattern, subject string) bool {
	if prefix, ok := strings.CutSuffix(pattern, "*"); ok {
		return strings.HasPrefix(subject, prefix)
	}
	return pattern == subject
}

// Matches evaluates the filter against e. A filter with a CESQL expression anywhere in it
// never matches: the expression is not evaluated, and answering "false" for it alone would let
// an enclosing `not` admit every event its author meant to refuse.
func (f Filter) Matches(e *cloudevents.Event) bool {
	if f.cesqlPath("") != "" {
		return false
	}
	return f.matches(e)
}

// cesqlPath is where in f (named path) a CESQL expression is, or empty when there is none.
func (f Filter) cesqlPath(path string) string {
	if f.CESQL != "" {
		return path + ".cesql"
	}
	for i, sub := range f.All {
		if p := sub.cesqlPath(fmt.Sprintf("%s.all[%d]", path, i)); p != "" {
			return p
		}
	}
	for i, sub := range f.Any {
		if p := sub.cesqlPath(fmt.Sprintf("%s.any[%d]", path, i)); p != "" {
			return p
		}
	}
	if f.Not != nil {
		return f.Not.cesqlPath(path + ".not")
	}
	return ""
}

// matches evaluates a filter known to hold no CESQL.
func (f Filter) matches(e *cloudevents.Event) bool {
	for _, sub := range f.All {
		if !sub.matches(e) {
			return false
		}
	}
	if len(f.Any) > 0 {
		anyOK := false
		for _, sub := range f.Any {
			if sub.matches(e) {
				anyOK = true
				break
			}
		}
		if !anyOK {
			return false
		}
	}
	if f.Not != nil && f.Not.matches(e) {
		return false
	}
	for attr, want := range f.Exact {
		if v, ok := attribute(e, attr); !ok || v != want {
			return false
		}
	}
	for attr, want := range f.Prefix {
		if v, ok := attribute(e, attr); !ok || !strings.HasPrefix(v, want) {
			return false
		}
	}
	for attr, want := range f.Suffix {
		if v, ok := attribute(e, attr); !ok || !strings.HasSuffix(v, want) {
			return false
		}
	}
	return true
}

// attribute is a CloudEvents context attribute or extension as a string.
func attribute(e *cloudevents.Event, name string) (string, bool) {
	switch strings.ToLower(name) {
	case "id":
		return e.ID(), true
	case "source":
		return e.Source(), true
	case "type":
		return e.Type(), true
	case "specversion":
		return e.SpecVersion(), true
	case "subject":
		return e.Subject(), e.Subject() != ""
	case "datacontenttype":
		return e.DataContentType(), e.DataContentType() != ""
	case "dataschema":
		return e.DataSchema(), e.DataSchema() != ""
	}
	v, ok := e.Extensions()[strings.ToLower(name)]
	if !ok {
		return "", false
	}
	return fmt.Sprint(v), true
}

// Decision is the verdict on one request.
type Decision struct {
	Allowed bool
	// Reason says why, in words for the sender (403 body) and the logs.
	Reason string
}

// Decide judges a sender (its authenticated subject and namespace) sending e to a channel, given
// the policies that apply to it (AppliesTo) and the cluster's default mode for channels without
// any.
func Decide(applicable []*Policy, mode features.Authorization, channelNamespace, subject, senderNamespace string, e *cloudevents.Event) Decision {
	if len(applicable) == 0 {
		switch mode {
		case features.AllowAll:
			return Decision{Allowed: true, Reason: "no EventPolicy applies and default-authorization-mode is allow-all"}
		case features.DenyAll:
			return Decision{Reason: "no EventPolicy applies to the channel and default-authorization-mode is deny-all"}
		default:
			if senderNamespace == channelNamespace {
				return Decision{Allowed: true, Reason: "no EventPolicy applies and the sender is in the channel's namespace"}
			}
			return Decision{Reason: fmt.Sprintf("no EventPolicy applies to the channel and %s is not in its namespace %s (default-authorization-mode is allow-same-namespace)", subject, channelNamespace)}
		}
	}
	names := make([]string, 0, len(applicable))
	var unsupported []string
	for _, p := range applicable {
		if p.Admits(subject, e) {
			return Decision{Allowed: true, Reason: "allowed by EventPolicy " + p.Name}
		}
		names = append(names, p.Name)
		if p.unsupported != "" {
			unsupported = append(unsupported, fmt.Sprintf("EventPolicy %s admits nothing: %s", p.Name, p.unsupported))
		}
	}
	sort.Strings(names)
	sort.Strings(unsupported)
	reason := fmt.Sprintf("%s is not allowed to send this event by the EventPolicies of the channel (%s)", subject, strings.Join(names, ", "))
	if len(unsupported) > 0 {
		reason += "; " + strings.Join(unsupported, "; ")
	}
	return Decision{Reason: reason}
}
