package controllers

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/retry"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/kafkachannel/kafkachannel/api/v1alpha1"
	"github.com/kafkachannel/kafkachannel/api/v1beta1"
	"github.com/kafkachannel/kafkachannel/internal/naming"
	"github.com/kafkachannel/kafkachannel/internal/replay"
)

// +kubebuilder:rbac:groups=kafka.eventing.knative.dev,resources=resetoffsets,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=kafka.eventing.knative.dev,resources=resetoffsets/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=kafka.eventing.knative.dev,resources=resetoffsets/finalizers,verbs=update
// +kubebuilder:rbac:groups=messaging.knative.dev,resources=subscriptions,verbs=get

// ResetOffsetFinalizer holds a ResetOffset that has paused a subscriber until the pause is
// lifted, so deleting it mid-way never leaves a subscriber paused for good.
const ResetOffsetFinalizer = "resetoffsets.kafka.eventing.knative.dev/finalizer"

// ResetOffset reasons, in conditions and Events.
const (
	reasonPausing           = "Pausing"
	reasonSucceeded         = "OffsetsReset"
	reasonSubscriptionGone  = "SubscriptionNotFound"
	reasonNotKafkaChannel   = "NotAKafkaChannel"
	reasonChannelGone       = "ChannelNotFound"
	reasonSubscriberGone    = "SubscriberNotFound"
	reasonInvalidTime       = "InvalidTime"
	reasonAnotherReset      = "AnotherResetInProgress"
	reasonNotAcknowledged   = "PauseNotAcknowledged"
	reasonKafkaUnreachable  = "KafkaUnreachable"
	reasonKafkaConfig       = "KafkaConfigurationInvalid"
	reasonSkipped           = "NotReset"
	resetOffsetPollInterval = time.Second
)

var subscriptionGVK = schema.GroupVersionKind{Group: "messaging.knative.dev", Version: "v1", Kind: "Subscription"}

// ResetOffsetReconciler moves one subscriber's committed offsets, once per ResetOffset
// generation: resolve the subscriber, pause it through the channel's pause annotation, wait
// until its consumer group is empty (every dispatcher replica left after committing), commit
// the offsets of the requested time, lift the pause. docs/architecture.md ("Replay").
type ResetOffsetReconciler struct {
	client.Client
	// APIReader reads Knative Subscriptions directly: the manager neither watches nor lists them.
	APIReader client.Reader
	Recorder  events.EventRecorder
	Config    Config
	// PollInterval is how often a reset in progress looks at the group again; default 1 s.
	PollInterval time.Duration
}

// roScope is one reconcile of a ResetOffset.
type roScope struct {
	ro     *v1alpha1.ResetOffset
	before *v1alpha1.ResetOffsetStatus
	ch     *v1beta1.KafkaChannel
}

func (s *roScope) set(condType string, status metav1.ConditionStatus, reason, format string, args ...any) {
	meta.SetStatusCondition(&s.ro.Status.Conditions, metav1.Condition{
		Type: condType, Status: status, Reason: reason, Message: fmt.Sprintf(format, args...),
		ObservedGeneration: s.ro.Generation,
	})
}

// finished reports whether this generation has an outcome; a ResetOffset acts once.
func finished(ro *v1alpha1.ResetOffset) bool {
	c := meta.FindStatusCondition(ro.Status.Conditions, v1alpha1.ConditionSucceeded)
	return c != nil && c.Status != metav1.ConditionUnknown && c.ObservedGeneration == ro.Generation
}

// Reconcile drives one ResetOffset a step further; each call ends with one status patch.
func (r *ResetOffsetReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	log := logf.FromContext(ctx).WithValues("resetoffset", req.String())
	ctx = logf.IntoContext(ctx, log)
	ro := &v1alpha1.ResetOffset{}
	if err := r.Get(ctx, req.NamespacedName, ro); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !ro.DeletionTimestamp.IsZero() || finished(ro) {
		// Whatever happened, the subscriber must not stay paused.
		if err := r.release(ctx, ro); err != nil {
			return ctrl.Result{}, err
		}
		return ctrl.Result{}, r.dropFinalizer(ctx, ro)
	}
	if !controllerutil.ContainsFinalizer(ro, ResetOffsetFinalizer) {
		orig := ro.DeepCopy()
		controllerutil.AddFinalizer(ro, ResetOffsetFinalizer)
		if err := r.Patch(ctx, ro, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
			return ctrl.Result{}, fmt.Errorf("adding the finalizer: %w", err)
		}
	}

	s := &roScope{ro: ro, before: ro.Status.DeepCopy()}
	ro.Status.ObservedGeneration = ro.Generation
	requeue, err := r.step(ctx, s)
	if err != nil {
		return ctrl.Result{}, errors.Join(err, r.patchStatus(ctx, s))
	}
	if err := r.patchStatus(ctx, s); err != nil {
		return ctrl.Result{}, err
	}
	if finished(ro) {
		r.outcomeEvent(ro)
		if err := r.release(ctx, ro); err != nil {
			return ctrl.Result{}, err
		}
		return ctrl.Result{}, r.dropFinalizer(ctx, ro)
	}
	if requeue {
		return ctrl.Result{RequeueAfter: r.pollInterval()}, nil
	}
	return ctrl.Result{}, nil
}

func (r *ResetOffsetReconciler) pollInterval() time.Duration {
	if r.PollInterval > 0 {
		return r.PollInterval
	}
	return resetOffsetPollInterval
}

// step advances the reset: it returns requeue while waiting for the pause or for Kafka, and an
// error only for API failures worth a backoff retry. An outcome is a Succeeded condition.
func (r *ResetOffsetReconciler) step(ctx context.Context, s *roScope) (bool, error) {
	ro := s.ro
	if err := r.resolve(ctx, s); err != nil || s.ch == nil {
		return false, err
	}
	earliest, latest, at, err := ro.Spec.Offset.ParseTime()
	if err != nil {
		r.fail(s, reasonInvalidTime, "%v", err)
		return false, nil
	}
	// The same Secret, read the same way, as the KafkaChannel reconciler.
	conn, _, err := readKafkaConfig(ctx, r.Client, r.Config)
	if err != nil {
		r.fail(s, reasonKafkaConfig, "%v", err)
		return false, nil
	}

	paused, err := r.pause(ctx, s)
	if err != nil || !paused {
		return false, err
	}
	started := meta.FindStatusCondition(ro.Status.Conditions, v1alpha1.ConditionOffsetsReset).LastTransitionTime.Time
	deadline := started.Add(r.Config.ResetOffsetTimeout)

	group, topic := ro.Status.Group, ro.Status.Topic
	admin := newTopicAdmin(conn, topic)
	defer admin.Close()
	kctx, cancel := context.WithTimeout(ctx, kafkaOpTimeout)
	defer cancel()
	waitOrFail := func(reason string, err error) (bool, error) {
		if time.Now().Before(deadline) {
			logf.FromContext(ctx).V(1).Info("reset waiting", "reason", reason, "error", err.Error())
			s.set(v1alpha1.ConditionOffsetsReset, metav1.ConditionUnknown, reasonPausing, "waiting: %v", conn.Explain(err))
			return true, nil
		}
		r.fail(s, reason, "gave up after %s: %v; the subscriber continues from where it was", r.Config.ResetOffsetTimeout, conn.Explain(err))
		return false, nil
	}
	if err := replay.CheckGroupEmpty(kctx, admin.client, group); err != nil {
		if errors.Is(err, replay.ErrGroupActive) {
			return waitOrFail(reasonNotAcknowledged, fmt.Errorf("the dispatcher has not paused the subscriber yet (%w)", err))
		}
		return waitOrFail(reasonKafkaUnreachable, err)
	}
	parts, err := replay.Partitions(kctx, admin.client, topic)
	if err != nil {
		return waitOrFail(reasonKafkaUnreachable, err)
	}
	old, err := replay.Committed(kctx, admin.client, group, topic, parts)
	if err != nil {
		return waitOrFail(reasonKafkaUnreachable, err)
	}
	next, err := replay.Resolve(kctx, admin.client, topic, parts, replay.Target{Earliest: earliest, Latest: latest, At: at})
	if err != nil {
		return waitOrFail(reasonKafkaUnreachable, err)
	}
	if err := replay.Commit(kctx, admin.client, group, topic, next); err != nil {
		// A member that joined meanwhile makes the coordinator refuse: wait as for the pause.
		return waitOrFail(reasonKafkaUnreachable, err)
	}
	ro.Status.Partitions = nil
	for _, p := range next.Partitions() {
		ro.Status.Partitions = append(ro.Status.Partitions, v1alpha1.PartitionOffset{Partition: int32(p), OldOffset: old[p], NewOffset: next[p]})
	}
	logf.FromContext(ctx).Info("offsets reset", "group", group, "topic", topic, "old", old, "new", next)
	s.set(v1alpha1.ConditionOffsetsReset, metav1.ConditionTrue, reasonSucceeded, "committed %s for %d partitions of %s", describeTarget(ro), len(parts), topic)
	s.set(v1alpha1.ConditionSucceeded, metav1.ConditionTrue, reasonSucceeded,
		"subscriber %s of %s continues from %s", ro.Status.SubscriberUID, ro.Status.Channel, describeTarget(ro))
	return false, nil
}

func describeTarget(ro *v1alpha1.ResetOffset) string {
	switch ro.Spec.Offset.Time {
	case v1alpha1.OffsetEarliest:
		return "the earliest event"
	case v1alpha1.OffsetLatest:
		return "the latest event"
	}
	return "the first event at or after " + ro.Spec.Offset.Time
}

// fail ends this generation unsuccessfully. Offsets were not committed (that is the last
// step), so the subscriber resumes from where it was once the pause is lifted.
func (r *ResetOffsetReconciler) fail(s *roScope, reason, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if c := meta.FindStatusCondition(s.ro.Status.Conditions, v1alpha1.ConditionOffsetsReset); c == nil || c.Status != metav1.ConditionTrue {
		s.set(v1alpha1.ConditionOffsetsReset, metav1.ConditionFalse, reasonSkipped, "offsets unchanged: %s", msg)
	}
	s.set(v1alpha1.ConditionSucceeded, metav1.ConditionFalse, reason, "%s", msg)
}

// resolve finds the channel, subscriber, topic and group; s.ch stays nil when it cannot (and
// the ResetOffset has failed).
func (r *ResetOffsetReconciler) resolve(ctx context.Context, s *roScope) error {
	ro := s.ro
	ref := ro.Spec.Ref
	chName, uid := ref.KafkaChannel, ref.SubscriberUID
	notResolved := func(reason, format string, args ...any) {
		s.set(v1alpha1.ConditionRefResolved, metav1.ConditionFalse, reason, format, args...)
		r.fail(s, reason, format, args...)
	}
	if ref.Subscription != "" {
		sub := &unstructured.Unstructured{}
		sub.SetGroupVersionKind(subscriptionGVK)
		err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: ro.Namespace, Name: ref.Subscription}, sub)
		if apierrors.IsNotFound(err) || meta.IsNoMatchError(err) {
			notResolved(reasonSubscriptionGone, "Subscription %s/%s does not exist", ro.Namespace, ref.Subscription)
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading Subscription %s/%s: %w", ro.Namespace, ref.Subscription, err)
		}
		apiVersion, _, _ := unstructured.NestedString(sub.Object, "spec", "channel", "apiVersion")
		kind, _, _ := unstructured.NestedString(sub.Object, "spec", "channel", "kind")
		name, _, _ := unstructured.NestedString(sub.Object, "spec", "channel", "name")
		if kind != "KafkaChannel" || !strings.HasPrefix(apiVersion, v1beta1.GroupVersion.Group+"/") || name == "" {
			notResolved(reasonNotKafkaChannel, "Subscription %s subscribes to %s %s (%s), not to a KafkaChannel", ref.Subscription, kind, name, apiVersion)
			return nil
		}
		chName, uid = name, string(sub.GetUID())
	}
	ch := &v1beta1.KafkaChannel{}
	if err := r.Get(ctx, types.NamespacedName{Namespace: ro.Namespace, Name: chName}, ch); err != nil {
		if apierrors.IsNotFound(err) {
			notResolved(reasonChannelGone, "KafkaChannel %s/%s does not exist", ro.Namespace, chName)
			return nil
		}
		return fmt.Errorf("reading KafkaChannel %s/%s: %w", ro.Namespace, chName, err)
	}
	if !ch.DeletionTimestamp.IsZero() {
		notResolved(reasonChannelGone, "KafkaChannel %s/%s is being deleted", ro.Namespace, chName)
		return nil
	}
	found := false
	for _, sp := range ch.Spec.Subscribers {
		found = found || sp.UID == uid
	}
	if !found {
		notResolved(reasonSubscriberGone, "KafkaChannel %s has no subscriber with uid %s", chName, uid)
		return nil
	}
	ro.Status.Channel, ro.Status.SubscriberUID = chName, uid
	ro.Status.Topic = naming.Topic(ch.Namespace, ch.Name)
	ro.Status.Group = naming.GroupID(ch.Namespace, ch.Name, uid)
	s.set(v1alpha1.ConditionRefResolved, metav1.ConditionTrue, "Resolved", "subscriber %s of KafkaChannel %s, consumer group %s", uid, chName, ro.Status.Group)
	s.ch = ch
	return nil
}

// pause sets the channel's pause annotation for the subscriber to this ResetOffset's token.
// It reports false (and fails the ResetOffset) when another reset holds the subscriber.
func (r *ResetOffsetReconciler) pause(ctx context.Context, s *roScope) (bool, error) {
	ro, ch := s.ro, s.ch
	key, token := v1alpha1.PauseAnnotation(ro.Status.SubscriberUID), v1alpha1.PauseToken(ro)
	switch held := ch.Annotations[key]; {
	case v1alpha1.HoldsPause(ro, held):
	case held != "":
		r.fail(s, reasonAnotherReset, "another ResetOffset (%s) is resetting this subscriber; try again when it has finished", held)
		return false, nil
	default:
		// The status names the channel before the annotation exists, so whatever ends the
		// reset (a deletion included) finds where to lift the pause, even if this manager
		// stops right after setting it.
		if err := r.patchStatus(ctx, s); err != nil {
			return false, err
		}
		s.before = ro.Status.DeepCopy()
		orig := ch.DeepCopy()
		if ch.Annotations == nil {
			ch.Annotations = map[string]string{}
		}
		ch.Annotations[key] = token
		if err := r.Patch(ctx, ch, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
			return false, fmt.Errorf("asking the dispatcher to pause subscriber %s: %w", ro.Status.SubscriberUID, err)
		}
		logf.FromContext(ctx).Info("asked the dispatchers to pause the subscriber", "channel", ch.Name, "subscriber", ro.Status.SubscriberUID)
	}
	if c := meta.FindStatusCondition(ro.Status.Conditions, v1alpha1.ConditionOffsetsReset); c == nil || c.Reason != reasonPausing {
		// The transition time of this condition starts the ResetOffsetTimeout.
		s.set(v1alpha1.ConditionOffsetsReset, metav1.ConditionUnknown, reasonPausing, "waiting for every dispatcher replica to pause the subscriber")
	}
	s.set(v1alpha1.ConditionSucceeded, metav1.ConditionUnknown, reasonPausing, "resetting")
	return true, nil
}

// release removes every pause annotation this ResetOffset holds. Lifting the pause is what
// resumes delivery, after success, failure and deletion alike.
func (r *ResetOffsetReconciler) release(ctx context.Context, ro *v1alpha1.ResetOffset) error {
	chName, err := r.pausedChannel(ctx, ro)
	if err != nil || chName == "" {
		return err
	}
	return retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		ch := &v1beta1.KafkaChannel{}
		if err := r.Get(ctx, types.NamespacedName{Namespace: ro.Namespace, Name: chName}, ch); err != nil {
			return client.IgnoreNotFound(err)
		}
		orig := ch.DeepCopy()
		// Every key holding this ResetOffset's token, not only status.subscriberUid's: an
		// earlier manager may have paused before it recorded the subscriber.
		var lifted []string
		for key, token := range ch.Annotations {
			if strings.HasPrefix(key, v1alpha1.PauseAnnotationPrefix) && v1alpha1.HoldsPause(ro, token) {
				delete(ch.Annotations, key)
				lifted = append(lifted, strings.TrimPrefix(key, v1alpha1.PauseAnnotationPrefix))
			}
		}
		if len(lifted) == 0 {
			return nil
		}
		if err := r.Patch(ctx, ch, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
			return fmt.Errorf("lifting the pause of subscriber %s: %w", strings.Join(lifted, ", "), err)
		}
		logf.FromContext(ctx).Info("lifted the pause: the subscriber resumes", "channel", ch.Name, "subscriber", strings.Join(lifted, ", "))
		return nil
	})
}

// pausedChannel is the channel a ResetOffset may have paused: the one its status names, else
// the one its ref names (a manager that stopped between pausing and writing the status, as
// earlier versions could). "" when there is none to look at.
func (r *ResetOffsetReconciler) pausedChannel(ctx context.Context, ro *v1alpha1.ResetOffset) (string, error) {
	if ro.Status.Channel != "" {
		return ro.Status.Channel, nil
	}
	if ro.Spec.Ref.KafkaChannel != "" || ro.Spec.Ref.Subscription == "" {
		return ro.Spec.Ref.KafkaChannel, nil
	}
	sub := &unstructured.Unstructured{}
	sub.SetGroupVersionKind(subscriptionGVK)
	err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: ro.Namespace, Name: ro.Spec.Ref.Subscription}, sub)
	if apierrors.IsNotFound(err) || meta.IsNoMatchError(err) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("reading Subscription %s/%s: %w", ro.Namespace, ro.Spec.Ref.Subscription, err)
	}
	name, _, _ := unstructured.NestedString(sub.Object, "spec", "channel", "name")
	return name, nil
}

func (r *ResetOffsetReconciler) dropFinalizer(ctx context.Context, ro *v1alpha1.ResetOffset) error {
	if !controllerutil.ContainsFinalizer(ro, ResetOffsetFinalizer) {
		return nil
	}
	orig := ro.DeepCopy()
	controllerutil.RemoveFinalizer(ro, ResetOffsetFinalizer)
	if err := r.Patch(ctx, ro, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
		return client.IgnoreNotFound(fmt.Errorf("removing the finalizer: %w", err))
	}
	return nil
}

func (r *ResetOffsetReconciler) patchStatus(ctx context.Context, s *roScope) error {
	if equalStatus(s.before, &s.ro.Status) {
		return nil
	}
	base := s.ro.DeepCopy()
	base.Status = *s.before
	if err := r.Status().Patch(ctx, s.ro, client.MergeFrom(base)); err != nil {
		return fmt.Errorf("patching the ResetOffset status: %w", err)
	}
	return nil
}

func equalStatus(a, b *v1alpha1.ResetOffsetStatus) bool { return equality.Semantic.DeepEqual(a, b) }

func (r *ResetOffsetReconciler) outcomeEvent(ro *v1alpha1.ResetOffset) {
	c := meta.FindStatusCondition(ro.Status.Conditions, v1alpha1.ConditionSucceeded)
	kind := corev1.EventTypeNormal
	if c.Status != metav1.ConditionTrue {
		kind = corev1.EventTypeWarning
	}
	r.Recorder.Eventf(ro, nil, kind, c.Reason, "ResetOffset", "%s", c.Message)
}

// SetupWithManager registers the controller.
func (r *ResetOffsetReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("resetoffset").
		For(&v1alpha1.ResetOffset{}).
		Complete(r)
}
