package controllers

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/retry"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/kafkachannel/kafkachannel/api/v1beta1"
	"github.com/kafkachannel/kafkachannel/internal/features"
	"github.com/kafkachannel/kafkachannel/internal/isoduration"
	"github.com/kafkachannel/kafkachannel/internal/kafkaconn"
	"github.com/kafkachannel/kafkachannel/internal/naming"
	"github.com/kafkachannel/kafkachannel/receiver"
)

// Finalizer holds a deleted KafkaChannel until its topic and its objects in the operator
// namespace are gone (or TopicDeleteTimeout has passed).
const Finalizer = "kafkachannels.messaging.knative.dev/finalizer"

// SubscribableDuckAnnotation names the version of Knative's Subscribable duck type a channel
// implements; the channel specification says every channel SHOULD carry it, and the controller
// sets it to v1, the only version KafkaChannel implements.
const SubscribableDuckAnnotation = "messaging.knative.dev/subscribable"

// FieldManager is the manager's name in managedFields and Events.
const FieldManager = "kafkachannel-manager"

// DefaultRetryInterval is how soon a channel waiting on Kafka or on a dead-letter sink is
// looked at again. Kubernetes changes arrive through watches; Kafka and foreign objects do not.
const DefaultRetryInterval = 10 * time.Second

// KafkaChannelReconciler turns each KafkaChannel into a topic, a dispatcher Deployment and
// Service, the shared receiver, a channel Service, an address and conditions.
type KafkaChannelReconciler struct {
	client.Client
	// APIReader reads dead-letter sink referents directly, so the manager needs no watch (and no
	// list permission) on every Addressable kind.
	APIReader client.Reader
	Recorder  events.EventRecorder
	Config    Config
	// RetryInterval overrides DefaultRetryInterval.
	RetryInterval time.Duration

	// policyCache reads EventPolicies from the informer that watches them; nil when they are
	// not watched (their API was not there at start) and must be listed from the API server.
	policyCache client.Reader
}

// scope is one reconcile's working state: steps record their outcome here, and status is
// written once at the end from it.
type scope struct {
	ch         *v1beta1.KafkaChannel
	before     *v1beta1.KafkaChannelStatus
	conn       *kafkaconn.Config
	secretHash string
	// features is config-features as read at the start of this reconcile.
	features features.Flags
	// retry asks for a timed requeue: something not watched (Kafka, a foreign object) may heal.
	retry bool
}

func (s *scope) set(condType string, status metav1.ConditionStatus, reason, format string, args ...any) {
	meta.SetStatusCondition(&s.ch.Status.Conditions, metav1.Condition{
		Type:               condType,
		Status:             status,
		Reason:             reason,
		Message:            fmt.Sprintf(format, args...),
		ObservedGeneration: s.ch.Generation,
	})
}

// Reconcile reads top to bottom: deletion, finalizer, then one step per condition, a summary,
// and a single status patch.
func (r *KafkaChannelReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	log := logf.FromContext(ctx).WithValues("channel", req.String())
	ctx = logf.IntoContext(ctx, log)

	ch := &v1beta1.KafkaChannel{}
	if err := r.Get(ctx, req.NamespacedName, ch); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !ch.DeletionTimestamp.IsZero() {
		return r.finalize(ctx, ch)
	}
	if !controllerutil.ContainsFinalizer(ch, Finalizer) || ch.Annotations[SubscribableDuckAnnotation] != "v1" {
		orig := ch.DeepCopy()
		controllerutil.AddFinalizer(ch, Finalizer)
		if ch.Annotations == nil {
			ch.Annotations = map[string]string{}
		}
		ch.Annotations[SubscribableDuckAnnotation] = "v1"
		if err := r.Patch(ctx, ch, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
			return ctrl.Result{}, fmt.Errorf("adding the finalizer and the subscribable annotation: %w", err)
		}
	}

	s := &scope{ch: ch, before: ch.Status.DeepCopy()}
	var errs []error
	for _, step := range []func(context.Context, *scope) error{
		r.reconcileConfiguration,
		r.reconcileTopic,
		r.reconcileDispatcher,
		r.reconcileReceiver,
		r.reconcileChannelService,
		r.reconcileAddress,
		r.reconcileDeadLetterSink,
		r.reconcilePolicies,
	} {
		// A step's error is an API failure worth a backoff retry; what a user must fix is a
		// condition, not an error. Later steps still run so every condition is current.
		if err := step(ctx, s); err != nil {
			errs = append(errs, err)
		}
	}
	summarize(s)
	if err := r.patchStatus(ctx, s); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return ctrl.Result{}, err
	}
	if s.retry {
		return ctrl.Result{RequeueAfter: r.retryInterval()}, nil
	}
	return ctrl.Result{}, nil
}

func (r *KafkaChannelReconciler) retryInterval() time.Duration {
	if r.RetryInterval > 0 {
		return r.RetryInterval
	}
	return DefaultRetryInterval
}

// kafkaConfig reads and parses the Kafka Secret. The first return is a condition reason when
// the Secret is missing or invalid.
func (r *KafkaChannelReconciler) kafkaConfig(ctx context.Context) (*kafkaconn.Config, string, error) {
	return readKafkaConfig(ctx, r.Client, r.Config)
}

// readKafkaConfig reads and parses the Kafka Secret of cfg; the string is a condition reason
// when it cannot be used.
func readKafkaConfig(ctx context.Context, c client.Reader, cfg Config) (*kafkaconn.Config, string, error) {
	secret := &corev1.Secret{}
	key := types.NamespacedName{Namespace: cfg.OperatorNamespace, Name: cfg.SecretName}
	if err := c.Get(ctx, key, secret); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, "KafkaSecretNotFound", fmt.Errorf("the Kafka Secret %s does not exist", key)
		}
		return nil, "KafkaSecretUnreadable", fmt.Errorf("reading the Kafka Secret %s: %w", key, err)
	}
	conn, err := kafkaconn.Parse(secret.Data)
	if err != nil {
		return nil, "KafkaSecretInvalid", fmt.Errorf("the Kafka Secret %s is invalid: %w", key, err)
	}
	return conn, "", nil
}

// featureFlags reads config-features from the operator namespace; absent means Knative's
// defaults. The first return is a condition reason when it cannot be used.
func (r *KafkaChannelReconciler) featureFlags(ctx context.Context) (features.Flags, string, error) {
	cm := &corev1.ConfigMap{}
	key := types.NamespacedName{Namespace: r.Config.OperatorNamespace, Name: features.ConfigMap}
	if err := r.Get(ctx, key, cm); err != nil {
		if apierrors.IsNotFound(err) {
			return features.Default(), "", nil
		}
		return features.Default(), "FeaturesUnreadable", fmt.Errorf("reading the ConfigMap %s: %w", key, err)
	}
	f, err := features.Parse(cm.Data)
	if err != nil {
		return f, "FeaturesInvalid", fmt.Errorf("the ConfigMap %s is invalid: %w", key, err)
	}
	return f, "", nil
}

func (r *KafkaChannelReconciler) reconcileConfiguration(ctx context.Context, s *scope) error {
	f, freason, ferr := r.featureFlags(ctx)
	s.features = f
	conn, reason, err := r.kafkaConfig(ctx)
	if err == nil && ferr != nil {
		// The Kafka part is usable: topic and data plane go ahead, but a security setting
		// that cannot be read must not go unnoticed, so the channel is not Ready.
		s.conn, s.secretHash = conn, conn.Hash()
		s.set(v1beta1.ConditionConfigurationReady, metav1.ConditionFalse, freason, "%v", ferr)
		if freason == "FeaturesUnreadable" {
			return ferr
		}
		return nil
	}
	if err != nil {
		s.set(v1beta1.ConditionConfigurationReady, metav1.ConditionFalse, reason, "%v", err)
		if reason == "KafkaSecretUnreadable" {
			return err
		}
		return nil
	}
	s.conn, s.secretHash = conn, conn.Hash()
	if err := v1beta1.CheckDeliveryOrder(s.ch.Annotations); err != nil {
		// A typo must not pass for the mode asked for; the data plane goes ahead, ordered.
		s.set(v1beta1.ConditionConfigurationReady, metav1.ConditionFalse, "DeliveryOrderInvalid", "%v", err)
		return nil
	}
	s.set(v1beta1.ConditionConfigurationReady, metav1.ConditionTrue, "KafkaSecretValid",
		"Kafka Secret %s/%s: %s", r.Config.OperatorNamespace, r.Config.SecretName, conn)
	return nil
}

func (r *KafkaChannelReconciler) reconcileTopic(ctx context.Context, s *scope) error {
	ch := s.ch
	if s.conn == nil {
		s.set(v1beta1.ConditionTopicReady, metav1.ConditionUnknown, "WaitingForConfiguration", "the Kafka Secret is not usable yet")
		return nil
	}
	retention, err := isoduration.Parse(ch.Spec.RetentionDuration)
	if err != nil || retention <= 0 {
		s.set(v1beta1.ConditionTopicReady, metav1.ConditionFalse, "InvalidRetention", "retentionDuration %q must be a positive ISO-8601 duration", ch.Spec.RetentionDuration)
		return nil
	}
	spec := topicSpec{
		Name:              naming.Topic(ch.Namespace, ch.Name),
		Partitions:        max(1, ch.Spec.NumPartitions),
		ReplicationFactor: max(1, ch.Spec.ReplicationFactor),
		Retention:         retention,
	}
	admin := newTopicAdmin(s.conn, spec.Name)
	defer admin.Close()
	st, err := admin.ensureTopic(ctx, spec)
	if err != nil {
		s.retry = true
		logf.FromContext(ctx).Info("topic not ready", "topic", spec.Name, "error", err.Error())
		s.set(v1beta1.ConditionTopicReady, metav1.ConditionFalse, kafkaReason(err), "%v", err)
		return nil
	}
	switch {
	case st.Created:
		r.event(ch, corev1.EventTypeNormal, "TopicCreated", "CreateTopic", "created topic %s with %d partitions", spec.Name, st.Partitions)
	case st.GrewFrom > 0:
		r.event(ch, corev1.EventTypeNormal, "PartitionsAdded", "CreatePartitions", "topic %s grew from %d to %d partitions", spec.Name, st.GrewFrom, st.Partitions)
	}
	if st.RetentionSet {
		r.event(ch, corev1.EventTypeNormal, "RetentionUpdated", "AlterTopicConfig", "topic %s: retention.ms set to %d", spec.Name, retention.Milliseconds())
	}
	msg := fmt.Sprintf("topic %s has %d partitions, retention %s", spec.Name, st.Partitions, retention)
	if len(st.ExtraMessages) > 0 {
		msg += "; " + strings.Join(st.ExtraMessages, "; ")
	}
	s.set(v1beta1.ConditionTopicReady, metav1.ConditionTrue, "TopicReady", "%s", msg)
	return nil
}

// kafkaReason classifies a Kafka error for a condition reason.
func kafkaReason(err error) string {
	var nerr net.Error
	switch {
	case errors.Is(err, kafkaconn.ErrAuthentication):
		return "KafkaAuthenticationFailed"
	case errors.As(err, &nerr), errors.Is(err, context.DeadlineExceeded), strings.Contains(err.Error(), "unreachable"):
		return "KafkaUnreachable"
	}
	return "TopicError"
}

func (r *KafkaChannelReconciler) reconcileDispatcher(ctx context.Context, s *scope) error {
	ch := s.ch
	if s.conn == nil {
		s.set(v1beta1.ConditionDispatcherReady, metav1.ConditionUnknown, "WaitingForConfiguration", "the Kafka Secret is not usable yet")
		return nil
	}
	name := naming.DispatcherName(ch.Namespace, ch.Name)
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: r.Config.OperatorNamespace, Name: name}}
	var op controllerutil.OperationResult
	err := onConflictRetry(func() (err error) {
		op, err = controllerutil.CreateOrUpdate(ctx, r.Client, dep, func() error {
			mutateDispatcher(dep, r.Config, ch.Namespace, ch.Name, max(1, ch.Spec.NumPartitions), s.secretHash)
			return nil
		})
		return err
	})
	if err != nil {
		s.set(v1beta1.ConditionDispatcherReady, metav1.ConditionFalse, "DeploymentFailed", "applying Deployment %s/%s: %v", dep.Namespace, name, err)
		return fmt.Errorf("applying the dispatcher Deployment: %w", err)
	}
	if op == controllerutil.OperationResultCreated {
		r.event(ch, corev1.EventTypeNormal, "DispatcherCreated", "CreateDeployment", "created Deployment %s/%s", dep.Namespace, name)
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: r.Config.OperatorNamespace, Name: name}}
	if _, err := controllerutil.CreateOrUpdate(ctx, r.Client, svc, func() error {
		mutateDispatcherService(svc, ch.Namespace, ch.Name)
		return nil
	}); err != nil {
		s.set(v1beta1.ConditionDispatcherReady, metav1.ConditionFalse, "ServiceFailed", "applying Service %s/%s: %v", svc.Namespace, name, err)
		return fmt.Errorf("applying the dispatcher metrics Service: %w", err)
	}
	ok, reason, msg := deploymentAvailable(dep)
	s.set(v1beta1.ConditionDispatcherReady, boolStatus(ok), reason, "dispatcher Deployment %s/%s: %s", dep.Namespace, name, msg)
	return nil
}

func (r *KafkaChannelReconciler) reconcileReceiver(ctx context.Context, s *scope) error {
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: r.Config.OperatorNamespace, Name: naming.ReceiverName}}
	if s.conn == nil {
		// Without the Secret the receiver cannot be (re)built, but a running one still counts.
		err := r.Get(ctx, client.ObjectKeyFromObject(dep), dep)
		if apierrors.IsNotFound(err) {
			s.set(v1beta1.ConditionReceiverReady, metav1.ConditionUnknown, "WaitingForConfiguration", "the Kafka Secret is not usable yet")
			return nil
		}
		if err != nil {
			s.set(v1beta1.ConditionReceiverReady, metav1.ConditionUnknown, "DeploymentUnreadable", "reading Deployment %s/%s: %v", dep.Namespace, dep.Name, err)
			return fmt.Errorf("reading the receiver Deployment: %w", err)
		}
	} else {
		if err := onConflictRetry(func() error {
			_, err := controllerutil.CreateOrUpdate(ctx, r.Client, dep, func() error {
				mutateReceiver(dep, r.Config, s.secretHash)
				return nil
			})
			return err
		}); err != nil {
			s.set(v1beta1.ConditionReceiverReady, metav1.ConditionFalse, "DeploymentFailed", "applying Deployment %s/%s: %v", dep.Namespace, dep.Name, err)
			return fmt.Errorf("applying the receiver Deployment: %w", err)
		}
		svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: r.Config.OperatorNamespace, Name: naming.ReceiverName}}
		if _, err := controllerutil.CreateOrUpdate(ctx, r.Client, svc, func() error {
			mutateReceiverService(svc)
			return nil
		}); err != nil {
			s.set(v1beta1.ConditionReceiverReady, metav1.ConditionFalse, "ServiceFailed", "applying Service %s/%s: %v", svc.Namespace, svc.Name, err)
			return fmt.Errorf("applying the receiver Service: %w", err)
		}
	}
	ok, reason, msg := deploymentAvailable(dep)
	s.set(v1beta1.ConditionReceiverReady, boolStatus(ok), reason, "receiver Deployment %s/%s: %s", dep.Namespace, dep.Name, msg)
	return nil
}

// onConflictRetry applies a data-plane Deployment again when the update conflicted: the
// Deployment controller writes status right after every change, so the cache the manager reads
// from is often one version behind, and that is no failure of the channel.
func onConflictRetry(apply func() error) error {
	return retry.RetryOnConflict(retry.DefaultBackoff, apply)
}

// deploymentAvailable is true when the Deployment's controller has seen the current spec and
// every desired replica is updated and available.
func deploymentAvailable(dep *appsv1.Deployment) (bool, string, string) {
	want := int32(1)
	if dep.Spec.Replicas != nil {
		want = *dep.Spec.Replicas
	}
	st := dep.Status
	switch {
	case st.ObservedGeneration < dep.Generation:
		return false, "DeploymentProgressing", "waiting for the Deployment controller to see the latest spec"
	case st.UpdatedReplicas < want:
		return false, "DeploymentProgressing", fmt.Sprintf("%d of %d replicas updated", st.UpdatedReplicas, want)
	case st.AvailableReplicas < want:
		return false, "DeploymentUnavailable", fmt.Sprintf("%d of %d replicas available", st.AvailableReplicas, want)
	}
	return true, "DeploymentAvailable", fmt.Sprintf("%d of %d replicas available", st.AvailableReplicas, want)
}

func (r *KafkaChannelReconciler) reconcileChannelService(ctx context.Context, s *scope) error {
	ch := s.ch
	name := naming.ChannelServiceName(ch.Name)
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ch.Namespace, Name: name}}
	conflict := func() {
		s.set(v1beta1.ConditionChannelServiceReady, metav1.ConditionFalse, "ServiceConflict",
			"Service %s/%s exists and is not owned by this channel: delete or rename it", ch.Namespace, name)
	}
	_, err := controllerutil.CreateOrUpdate(ctx, r.Client, svc, func() error {
		if !svc.CreationTimestamp.IsZero() && !metav1.IsControlledBy(svc, ch) {
			return errServiceConflict
		}
		mutateChannelService(svc, r.Config, ch.Namespace, ch.Name)
		return controllerutil.SetControllerReference(ch, svc, r.Scheme())
	})
	switch {
	case errors.Is(err, errServiceConflict), apierrors.IsAlreadyExists(err):
		conflict()
		return nil
	case err != nil:
		s.set(v1beta1.ConditionChannelServiceReady, metav1.ConditionFalse, "ServiceFailed", "applying Service %s/%s: %v", ch.Namespace, name, err)
		return fmt.Errorf("applying the channel Service: %w", err)
	}
	s.set(v1beta1.ConditionChannelServiceReady, metav1.ConditionTrue, "ServiceReady",
		"Service %s/%s points at the receiver %s", ch.Namespace, name, svc.Spec.ExternalName)
	return nil
}

var errServiceConflict = errors.New("service exists and is not owned by this channel")

// reconcileAddress publishes the channel's addresses as config-features asks: http alone
// (disabled), http and https with http as the address (permissive), https alone (strict); with
// OIDC each carries the channel's audience.
func (r *KafkaChannelReconciler) reconcileAddress(ctx context.Context, s *scope) error {
	ch := s.ch
	if !meta.IsStatusConditionTrue(ch.Status.Conditions, v1beta1.ConditionChannelServiceReady) {
		ch.Status.Address, ch.Status.Addresses = nil, nil
		s.set(v1beta1.ConditionAddressable, metav1.ConditionFalse, "NoChannelService", "the channel Service is not in place")
		return nil
	}
	var audience *string
	if s.features.OIDC {
		audience = ptrTo(naming.ChannelAudience(ch.Namespace, ch.Name))
	}
	httpAddr := v1beta1.Addressable{Name: ptrTo("http"), URL: naming.ChannelURL(ch.Namespace, ch.Name), Audience: audience}
	if !s.features.HTTPS() {
		ch.Status.Address, ch.Status.Addresses = &httpAddr, []v1beta1.Addressable{httpAddr}
		s.set(v1beta1.ConditionAddressable, metav1.ConditionTrue, "AddressSet", "events are accepted at %s", httpAddr.URL)
		return nil
	}
	ca, reason, err := r.receiverCA(ctx)
	if err != nil {
		// Permissive still works over http; strict has no usable address at all.
		ch.Status.Address, ch.Status.Addresses = nil, nil
		if s.features.HTTPAllowed() {
			ch.Status.Address, ch.Status.Addresses = &httpAddr, []v1beta1.Addressable{httpAddr}
		}
		s.set(v1beta1.ConditionAddressable, metav1.ConditionFalse, reason,
			"transport-encryption is %s but the receiver has no usable certificate: %v", s.features.TransportEncryption, err)
		if reason == "TLSSecretUnreadable" {
			return err
		}
		return nil
	}
	httpsAddr := v1beta1.Addressable{
		Name:     ptrTo("https"),
		URL:      naming.ChannelHTTPSURL(r.Config.OperatorNamespace, ch.Namespace, ch.Name),
		CACerts:  &ca,
		Audience: audience,
	}
	if s.features.HTTPAllowed() {
		ch.Status.Address, ch.Status.Addresses = &httpAddr, []v1beta1.Addressable{httpAddr, httpsAddr}
		s.set(v1beta1.ConditionAddressable, metav1.ConditionTrue, "AddressSet", "events are accepted at %s and %s", httpAddr.URL, httpsAddr.URL)
		return nil
	}
	ch.Status.Address, ch.Status.Addresses = &httpsAddr, []v1beta1.Addressable{httpsAddr}
	s.set(v1beta1.ConditionAddressable, metav1.ConditionTrue, "AddressSet", "events are accepted at %s (https only)", httpsAddr.URL)
	return nil
}

// receiverCA reads the CA bundle of the receiver's certificate Secret. The second return is a
// condition reason when there is none.
func (r *KafkaChannelReconciler) receiverCA(ctx context.Context) (string, string, error) {
	secret := &corev1.Secret{}
	key := types.NamespacedName{Namespace: r.Config.OperatorNamespace, Name: r.Config.ReceiverTLSSecret}
	if err := r.Get(ctx, key, secret); err != nil {
		if apierrors.IsNotFound(err) {
			return "", "TLSSecretNotFound", fmt.Errorf("the Secret %s does not exist (install the cert-manager component config/certmanager, or create it with tls.crt, tls.key and ca.crt)", key)
		}
		return "", "TLSSecretUnreadable", fmt.Errorf("reading the Secret %s: %w", key, err)
	}
	ca := secret.Data[receiverCAKey]
	if len(secret.Data[receiver.TLSCertFile]) == 0 || len(secret.Data[receiver.TLSKeyFile]) == 0 {
		return "", "TLSSecretInvalid", fmt.Errorf("the Secret %s lacks %s or %s", key, receiver.TLSCertFile, receiver.TLSKeyFile)
	}
	if !x509.NewCertPool().AppendCertsFromPEM(ca) {
		return "", "TLSSecretInvalid", fmt.Errorf("the Secret %s has no PEM certificate in %s, the CA senders must trust", key, receiverCAKey)
	}
	return string(ca), "", nil
}

// receiverCAKey is where cert-manager puts the issuing CA in a certificate's Secret.
const receiverCAKey = "ca.crt"

// readyFrom lists the conditions Ready is derived from, in the order a user should fix them.
var readyFrom = []string{
	v1beta1.ConditionConfigurationReady,
	v1beta1.ConditionTopicReady,
	v1beta1.ConditionDispatcherReady,
	v1beta1.ConditionReceiverReady,
	v1beta1.ConditionChannelServiceReady,
	v1beta1.ConditionAddressable,
	v1beta1.ConditionDeadLetterSinkReady,
}

// summarize derives Ready: the first condition that is not True names the reason.
func summarize(s *scope) {
	var unknown *metav1.Condition
	for _, t := range readyFrom {
		c := meta.FindStatusCondition(s.ch.Status.Conditions, t)
		if c == nil {
			s.set(v1beta1.ConditionReady, metav1.ConditionUnknown, "Reconciling", "%s has not been evaluated", t)
			return
		}
		if c.Status == metav1.ConditionFalse {
			s.set(v1beta1.ConditionReady, metav1.ConditionFalse, c.Reason, "%s: %s", t, c.Message)
			return
		}
		if c.Status == metav1.ConditionUnknown && unknown == nil {
			unknown = c
		}
	}
	if unknown != nil {
		s.set(v1beta1.ConditionReady, metav1.ConditionUnknown, unknown.Reason, "%s: %s", unknown.Type, unknown.Message)
		return
	}
	s.set(v1beta1.ConditionReady, metav1.ConditionTrue, "ChannelReady", "the channel accepts events at %s", s.ch.Status.Address.URL)
}

// ownedStatus is the part of the status the manager writes. Fields are not omitempty so that
// a merge patch clears what is gone; status.subscribers is absent, so the dispatchers' entries
// are never touched.
type ownedStatus struct {
	ObservedGeneration     int64                           `json:"observedGeneration"`
	Conditions             []metav1.Condition              `json:"conditions"`
	Address                *ownedAddress                   `json:"address"`
	Addresses              []v1beta1.Addressable           `json:"addresses"`
	DeadLetterSinkURI      *string                         `json:"deadLetterSinkUri"`
	DeadLetterSinkCACerts  *string                         `json:"deadLetterSinkCACerts"`
	DeadLetterSinkAudience *string                         `json:"deadLetterSinkAudience"`
	Policies               []v1beta1.AppliedEventPolicyRef `json:"policies"`
}

func owned(st *v1beta1.KafkaChannelStatus) ownedStatus {
	return ownedStatus{
		ObservedGeneration:     st.ObservedGeneration,
		Conditions:             st.Conditions,
		Address:                ownAddress(st.Address),
		Addresses:              st.Addresses,
		DeadLetterSinkURI:      st.DeadLetterSinkURI,
		DeadLetterSinkCACerts:  st.DeadLetterSinkCACerts,
		DeadLetterSinkAudience: st.DeadLetterSinkAudience,
		Policies:               st.Policies,
	}
}

// ownedAddress is status.address without omitempty: a merge patch merges objects key by key, so
// a field that went away (CACerts when strict turns into disabled, audience when OIDC is turned
// off) must be sent as null to be removed.
type ownedAddress struct {
	Name     *string `json:"name"`
	URL      string  `json:"url"`
	CACerts  *string `json:"CACerts"`
	Audience *string `json:"audience"`
}

func ownAddress(a *v1beta1.Addressable) *ownedAddress {
	if a == nil {
		return nil
	}
	return &ownedAddress{Name: a.Name, URL: a.URL, CACerts: a.CACerts, Audience: a.Audience}
}
