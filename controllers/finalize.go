package controllers

import (
	"context"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/kafkachannel/kafkachannel/api/v1beta1"
	"github.com/kafkachannel/kafkachannel/internal/naming"
)

// finalize removes what owner references cannot: the dispatcher Deployment and Service in the
// operator namespace, and the topic. Kafka being unreachable must not keep a channel (and its
// namespace) from being deleted forever: after TopicDeleteTimeout, measured from the deletion
// request, the finalizer lets go and a Warning Event says the topic may remain.
func (r *KafkaChannelReconciler) finalize(ctx context.Context, ch *v1beta1.KafkaChannel) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(ch, Finalizer) {
		return ctrl.Result{}, nil
	}
	log := logf.FromContext(ctx)
	name := naming.DispatcherName(ch.Namespace, ch.Name)
	for _, obj := range []client.Object{
		&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: r.Config.OperatorNamespace, Name: name}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: r.Config.OperatorNamespace, Name: name}},
	} {
		if err := r.Delete(ctx, obj, client.PropagationPolicy(metav1.DeletePropagationBackground)); client.IgnoreNotFound(err) != nil {
			return ctrl.Result{}, fmt.Errorf("deleting %T %s/%s: %w", obj, obj.GetNamespace(), obj.GetName(), err)
		}
	}

	topic := naming.Topic(ch.Namespace, ch.Name)
	conn, _, err := r.kafkaConfig(ctx)
	if err == nil {
		admin := newTopicAdmin(conn, topic)
		err = admin.deleteTopic(ctx, topic)
		admin.Close()
	}
	if err != nil {
		waited := time.Since(ch.DeletionTimestamp.Time)
		if left := r.Config.TopicDeleteTimeout - waited; left > 0 {
			log.Info("topic not deleted yet, retrying", "topic", topic, "error", err.Error(), "giveUpIn", left.Round(time.Second).String())
			return ctrl.Result{RequeueAfter: min(left, r.retryInterval())}, nil
		}
		log.Info("giving up deleting the topic", "topic", topic, "error", err.Error())
		r.event(ch, corev1.EventTypeWarning, "TopicMayRemain", "DeleteTopic",
			"could not delete topic %s within %s, the topic may remain in Kafka and can be deleted by hand: %v",
			topic, r.Config.TopicDeleteTimeout, err)
	} else {
		r.event(ch, corev1.EventTypeNormal, "TopicDeleted", "DeleteTopic", "deleted topic %s", topic)
	}

	orig := ch.DeepCopy()
	controllerutil.RemoveFinalizer(ch, Finalizer)
	if err := r.Patch(ctx, ch, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); client.IgnoreNotFound(err) != nil {
		return ctrl.Result{}, fmt.Errorf("removing the finalizer: %w", err)
	}
	return ctrl.Result{}, nil
}
