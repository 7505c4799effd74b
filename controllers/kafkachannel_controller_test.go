package controllers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kafkachannel/kafkachannel/api/v1beta1"
	"github.com/kafkachannel/kafkachannel/environments/kafkatest"
	"github.com/kafkachannel/kafkachannel/internal/kafkaconn"
	"github.com/kafkachannel/kafkachannel/internal/naming"
)

// topicOnKafka reads a topic back through kafka-go, independently of the reconciler's admin
// code: the partition count via a Conn, retention.ms via DescribeConfigs.
func topicOnKafka(t *testing.T, conn *kafkaconn.Config, topic string) (partitions int, retention string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := conn.Dialer().DialContext(ctx, "tcp", conn.Brokers[0])
	if err != nil {
		return 0, "", err
	}
	defer c.Close()
	parts, err := c.ReadPartitions(topic)
	if err != nil {
		return 0, "", err
	}
	cl := &kafka.Client{Addr: kafka.TCP(conn.Brokers...), Transport: conn.Transport()}
	res, err := cl.DescribeConfigs(ctx, &kafka.DescribeConfigsRequest{Resources: []kafka.DescribeConfigRequestResource{{
		ResourceType: kafka.ResourceTypeTopic, ResourceName: topic, ConfigNames: []string{"retention.ms"},
	}}})
	if err != nil {
		return 0, "", err
	}
	for _, r := range res.Resources {
		for _, e := range r.ConfigEntries {
			if e.ConfigName == "retention.ms" {
				retention = e.ConfigValue
			}
		}
	}
	return len(parts), retention, nil
}

func mustConn(t *testing.T, data map[string]string) *kafkaconn.Config {
	t.Helper()
	b := map[string][]byte{}
	for k, v := range data {
		b[k] = []byte(v)
	}
	c, err := kafkaconn.Parse(b)
	if err != nil {
		t.Fatalf("parsing test Secret: %v", err)
	}
	return c
}

// printedColumns asks the apiserver for the Table kubectl prints, and returns the named
// columns of the row for the channel.
func printedColumns(t *testing.T, ns, name string, cols ...string) []string {
	t.Helper()
	return printedColumnsOf(t, "messaging.knative.dev/v1beta1", "kafkachannels", ns, name, cols...)
}

// printedColumnsOf is printedColumns for any resource (group/version, plural).
func printedColumnsOf(t *testing.T, groupVersion, resource, ns, name string, cols ...string) []string {
	t.Helper()
	hc, err := rest.HTTPClientFor(restCfg)
	if err != nil {
		t.Fatalf("http client: %v", err)
	}
	req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("%s/apis/%s/namespaces/%s/%s/%s", strings.TrimRight(restCfg.Host, "/"), groupVersion, ns, resource, name), nil)
	req.Header.Set("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("table request: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading table: %v", err)
	}
	var table metav1.Table
	if err := json.Unmarshal(body, &table); err != nil || len(table.Rows) != 1 {
		t.Fatalf("decoding table from %s (%d rows): %v: %.300s", req.URL, len(table.Rows), err, body)
	}
	var out []string
	for _, c := range cols {
		i := slices.IndexFunc(table.ColumnDefinitions, func(d metav1.TableColumnDefinition) bool { return d.Name == c })
		if i < 0 {
			t.Fatalf("no column %q in %+v", c, table.ColumnDefinitions)
		}
		out = append(out, fmt.Sprint(table.Rows[0].Cells[i]))
	}
	return out
}

func TestChannelLifecycle(t *testing.T) {
	k := kafkatest.Start(t)
	secret := map[string]string{"brokers": k.BootstrapServers()}
	f := startFixture(t, fixtureOpts{secret: secret})
	conn := mustConn(t, secret)
	const name = "orders"
	topic := naming.Topic(f.chNS, name)
	depName := naming.DispatcherName(f.chNS, name)

	f.createChannel(name, func(ch *v1beta1.KafkaChannel) {
		ch.Spec.NumPartitions = 1
		ch.Spec.RetentionDuration = "PT1H"
	})
	f.waitCondition(name, v1beta1.ConditionTopicReady, metav1.ConditionTrue, "TopicReady")
	if p, ret, err := topicOnKafka(t, conn, topic); err != nil || p != 1 || ret != "3600000" {
		t.Fatalf("topic %s: partitions=%d retention.ms=%q err=%v, want 1 and 3600000", topic, p, ret, err)
	}

	// Dispatcher Deployment: capped replicas, channel identity, restricted pod.
	dep := &appsv1.Deployment{}
	eventually(t, 30*time.Second, "dispatcher Deployment", func() string {
		return errString(k8s.Get(f.ctx, client.ObjectKey{Namespace: f.opNS, Name: depName}, dep))
	})
	checkDispatcherDeployment(t, f, dep, name, 1)
	hash1 := dep.Spec.Template.Annotations[ConfigHashAnnotation]

	svc := &corev1.Service{}
	if err := k8s.Get(f.ctx, client.ObjectKey{Namespace: f.opNS, Name: depName}, svc); err != nil {
		t.Fatalf("dispatcher Service: %v", err)
	}
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 8081 || svc.Spec.Ports[0].Name != "metrics" {
		t.Errorf("dispatcher Service ports = %+v, want only metrics 8081", svc.Spec.Ports)
	}
	chSvc := &corev1.Service{}
	eventually(t, 30*time.Second, "channel Service", func() string {
		return errString(k8s.Get(f.ctx, client.ObjectKey{Namespace: f.chNS, Name: name + "-kn-channel"}, chSvc))
	})
	wantExt := naming.ReceiverName + "." + f.opNS + ".svc.cluster.local"
	if chSvc.Spec.Type != corev1.ServiceTypeExternalName || chSvc.Spec.ExternalName != wantExt {
		t.Errorf("channel Service = %s %q, want ExternalName %q", chSvc.Spec.Type, chSvc.Spec.ExternalName, wantExt)
	}
	if len(chSvc.OwnerReferences) != 1 || chSvc.OwnerReferences[0].Name != name {
		t.Errorf("channel Service owner references = %+v", chSvc.OwnerReferences)
	}
	recv := &appsv1.Deployment{}
	if err := k8s.Get(f.ctx, client.ObjectKey{Namespace: f.opNS, Name: naming.ReceiverName}, recv); err != nil {
		t.Fatalf("receiver Deployment: %v", err)
	}
	if c := recv.Spec.Template.Spec.Containers[0]; c.Name != "receiver" || c.Command[0] != "/receiver" || c.Ports[0].ContainerPort != 8080 {
		t.Errorf("receiver container = %s %v %+v", c.Name, c.Command, c.Ports)
	}
	// Rollouts drain: the pod keeps serving a few seconds before SIGTERM, within its grace.
	if lc := recv.Spec.Template.Spec.Containers[0].Lifecycle; lc == nil || lc.PreStop == nil || lc.PreStop.Sleep == nil ||
		lc.PreStop.Sleep.Seconds <= 0 || *recv.Spec.Template.Spec.TerminationGracePeriodSeconds < lc.PreStop.Sleep.Seconds+25 {
		t.Errorf("receiver lifecycle = %+v, grace %v", lc, recv.Spec.Template.Spec.TerminationGracePeriodSeconds)
	}
	if err := k8s.Get(f.ctx, client.ObjectKey{Namespace: f.opNS, Name: naming.ReceiverName}, &corev1.Service{}); err != nil {
		t.Fatalf("receiver Service: %v", err)
	}

	// Nothing is available yet: Ready says so, in the printed columns too.
	f.waitCondition(name, v1beta1.ConditionDispatcherReady, metav1.ConditionFalse, "DeploymentProgressing")
	f.waitCondition(name, v1beta1.ConditionReady, metav1.ConditionFalse, "DeploymentProgressing")
	if cols := printedColumns(t, f.chNS, name, "Ready", "Reason"); cols[0] != "False" || cols[1] != "DeploymentProgressing" {
		t.Errorf("kubectl get columns = %v, want False DeploymentProgressing", cols)
	}

	markAvailable(t, f.ctx, f.opNS, depName)
	markAvailable(t, f.ctx, f.opNS, naming.ReceiverName)
	f.waitCondition(name, v1beta1.ConditionReady, metav1.ConditionTrue, "ChannelReady")
	ch := f.channel(name)
	wantURL := "http://orders-kn-channel." + f.chNS + ".svc.cluster.local"
	if ch.Status.Address == nil || ch.Status.Address.URL != wantURL {
		t.Errorf("status.address = %+v, want %s", ch.Status.Address, wantURL)
	}
	if ch.Status.ObservedGeneration != ch.Generation {
		t.Errorf("observedGeneration %d, generation %d", ch.Status.ObservedGeneration, ch.Generation)
	}
	for _, ct := range readyFrom {
		if c := metaCondition(ch, ct); c == nil || c.Status != metav1.ConditionTrue || c.Reason == "" || c.Message == "" {
			t.Errorf("condition %s = %+v, want True with reason and message", ct, c)
		}
	}
	if cols := printedColumns(t, f.chNS, name, "Ready", "URL"); cols[0] != "True" || cols[1] != wantURL {
		t.Errorf("kubectl get columns = %v, want True %s", cols, wantURL)
	}
	f.waitEvent(name, "Normal TopicCreated")
	f.waitEvent(name, "Normal ChannelReady")
	// Two conditions with the same reason are two separate stories in `kubectl describe`.
	f.waitEvent(name, "DispatcherReady=True")
	f.waitEvent(name, "ReceiverReady=True")

	// A dispatcher reports a subscriber; the manager's next status patch must keep it.
	sub := `{"status":{"subscribers":[{"uid":"u-1","observedGeneration":1,"ready":"True"}]}}`
	if err := k8s.Status().Patch(f.ctx, ch, client.RawPatch(types.MergePatchType, []byte(sub))); err != nil {
		t.Fatalf("patching subscribers as a dispatcher: %v", err)
	}

	// Grow partitions: the topic grows, replicas follow up to DISPATCHER_REPLICAS, and the
	// subscriber entry survives the reconcile that the generation change triggers.
	patch := client.RawPatch(types.MergePatchType, []byte(`{"spec":{"numPartitions":3}}`))
	if err := k8s.Patch(f.ctx, f.channel(name), patch); err != nil {
		t.Fatalf("growing partitions: %v", err)
	}
	eventually(t, 45*time.Second, "3 partitions on Kafka", func() string {
		p, _, err := topicOnKafka(t, conn, topic)
		if err != nil || p != 3 {
			return fmt.Sprintf("partitions=%d err=%v", p, err)
		}
		return ""
	})
	eventually(t, 30*time.Second, "dispatcher replicas 2", func() string {
		if err := k8s.Get(f.ctx, client.ObjectKey{Namespace: f.opNS, Name: depName}, dep); err != nil {
			return err.Error()
		}
		if r := ptr.Deref(dep.Spec.Replicas, 0); r != 2 {
			return fmt.Sprintf("replicas=%d", r)
		}
		return ""
	})
	f.waitCondition(name, v1beta1.ConditionTopicReady, metav1.ConditionTrue, "TopicReady")
	f.waitEvent(name, "PartitionsAdded")
	if ch := f.channel(name); len(ch.Status.Subscribers) != 1 || ch.Status.Subscribers[0].UID != "u-1" {
		t.Errorf("status.subscribers = %+v, want the dispatcher's entry kept", ch.Status.Subscribers)
	}

	// Changing the Secret changes the pod template's hash, which rolls the pods.
	secret["client.note"] = "rotated"
	f.writeSecret(secret)
	eventually(t, 30*time.Second, "config hash to change", func() string {
		if err := k8s.Get(f.ctx, client.ObjectKey{Namespace: f.opNS, Name: depName}, dep); err != nil {
			return err.Error()
		}
		if h := dep.Spec.Template.Annotations[ConfigHashAnnotation]; h == hash1 || h == "" {
			return "hash unchanged: " + h
		}
		return ""
	})

	// Deletion: topic, Deployment and Service in the operator namespace, then the channel.
	if err := k8s.Delete(f.ctx, f.channel(name)); err != nil {
		t.Fatalf("deleting: %v", err)
	}
	eventually(t, 45*time.Second, "channel gone", func() string {
		err := k8s.Get(f.ctx, client.ObjectKey{Namespace: f.chNS, Name: name}, &v1beta1.KafkaChannel{})
		if apierrors.IsNotFound(err) {
			return ""
		}
		return fmt.Sprint("still there: ", err)
	})
	if _, _, err := topicOnKafka(t, conn, topic); !errors.Is(err, kafka.UnknownTopicOrPartition) {
		t.Errorf("topic after deletion: err=%v, want UnknownTopicOrPartition", err)
	}
	for _, o := range []client.Object{&appsv1.Deployment{}, &corev1.Service{}} {
		if err := k8s.Get(f.ctx, client.ObjectKey{Namespace: f.opNS, Name: depName}, o); !apierrors.IsNotFound(err) {
			t.Errorf("%T %s after deletion: %v, want NotFound", o, depName, err)
		}
	}
	f.waitEvent(name, "Normal TopicDeleted")
}

func checkDispatcherDeployment(t *testing.T, f *fixture, dep *appsv1.Deployment, name string, replicas int32) {
	t.Helper()
	if got := ptr.Deref(dep.Spec.Replicas, 0); got != replicas {
		t.Errorf("replicas = %d, want %d", got, replicas)
	}
	if dep.Labels[naming.LabelChannelNamespace] != f.chNS || dep.Labels[naming.LabelChannelName] != name {
		t.Errorf("Deployment labels = %v", dep.Labels)
	}
	if len(dep.Name) > 63 {
		t.Errorf("Deployment name %q longer than 63", dep.Name)
	}
	tpl := dep.Spec.Template
	if tpl.Labels["team"] != "events" || tpl.Annotations[ConfigHashAnnotation] == "" {
		t.Errorf("pod template meta = %v %v", tpl.Labels, tpl.Annotations)
	}
	if len(tpl.Spec.Containers) != 1 {
		t.Fatalf("containers = %d", len(tpl.Spec.Containers))
	}
	c := tpl.Spec.Containers[0]
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
		if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			env[e.Name] = "fieldRef:" + e.ValueFrom.FieldRef.FieldPath
		}
	}
	want := map[string]string{
		"CHANNEL_NAMESPACE": f.chNS, "CHANNEL_NAME": name, "KAFKA_TOPIC": naming.Topic(f.chNS, name),
		"POD_NAME": "fieldRef:metadata.name", "POD_NAMESPACE": "fieldRef:metadata.namespace",
		"KAFKA_SECRET_DIR": "/etc/kafka-secret", "CONFIG_DIR": "/etc/config",
	}
	for k, v := range want {
		if env[k] != v {
			t.Errorf("env %s = %q, want %q", k, env[k], v)
		}
	}
	if c.Name != "dispatcher" || c.Command[0] != "/dispatcher" || c.Image != f.cfg.Dispatcher.Image {
		t.Errorf("container = %s %v %s", c.Name, c.Command, c.Image)
	}
	if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet.Path != "/healthz" || c.ReadinessProbe == nil ||
		c.ReadinessProbe.HTTPGet.Path != "/readyz" || c.ReadinessProbe.HTTPGet.Port.StrVal != "metrics" {
		t.Errorf("probes = %+v %+v", c.LivenessProbe, c.ReadinessProbe)
	}
	sc := c.SecurityContext
	if sc == nil || !ptr.Deref(sc.RunAsNonRoot, false) || !ptr.Deref(sc.ReadOnlyRootFilesystem, false) ||
		ptr.Deref(sc.AllowPrivilegeEscalation, true) || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" ||
		tpl.Spec.SecurityContext.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("security context not restricted: %+v / %+v", sc, tpl.Spec.SecurityContext)
	}
	mounts := map[string]string{}
	for _, m := range c.VolumeMounts {
		mounts[m.Name] = m.MountPath
	}
	if mounts["kafka-secret"] != "/etc/kafka-secret" || mounts["config-logging"] != "/etc/config/config-logging" {
		t.Errorf("volume mounts = %v", mounts)
	}
	for _, v := range tpl.Spec.Volumes {
		if v.Name == "kafka-secret" && v.Secret.SecretName != f.cfg.SecretName {
			t.Errorf("secret volume = %+v", v.Secret)
		}
	}
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if ports["metrics"] != 8081 {
		t.Errorf("ports = %v", ports)
	}
}

func metaCondition(ch *v1beta1.KafkaChannel, t string) *metav1.Condition {
	for i := range ch.Status.Conditions {
		if ch.Status.Conditions[i].Type == t {
			return &ch.Status.Conditions[i]
		}
	}
	return nil
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// freePort finds a port nothing listens on, for a broker that is not there yet.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestKafkaUnreachable: a missing Secret, then a broker that is not there, then a deletion that
// must not hang, and finally recovery once the broker appears.
func TestKafkaUnreachable(t *testing.T) {
	if kafkatest.External() {
		t.Skip("needs an in-process broker on a chosen port")
	}
	port := freePort(t)
	f := startFixture(t, fixtureOpts{env: map[string]string{"TOPIC_DELETE_TIMEOUT": "3s"}})

	f.createChannel("late", nil)
	f.waitCondition("late", v1beta1.ConditionConfigurationReady, metav1.ConditionFalse, "KafkaSecretNotFound")
	f.waitCondition("late", v1beta1.ConditionReady, metav1.ConditionFalse, "KafkaSecretNotFound")

	f.writeSecret(map[string]string{"brokers": "127.0.0.1:" + strconv.Itoa(port)})
	c := f.waitCondition("late", v1beta1.ConditionTopicReady, metav1.ConditionFalse, "KafkaUnreachable")
	if !strings.Contains(c.Message, "127.0.0.1:"+strconv.Itoa(port)) {
		t.Errorf("TopicReady message %q does not name the broker", c.Message)
	}
	if cols := printedColumns(t, f.chNS, "late", "Ready", "Reason"); cols[0] != "False" || cols[1] != "KafkaUnreachable" {
		t.Errorf("kubectl get columns = %v, want False KafkaUnreachable", cols)
	}
	f.waitEvent("late", "Warning KafkaUnreachable")

	// Deleting while Kafka is unreachable finishes after TOPIC_DELETE_TIMEOUT, with a warning.
	f.createChannel("doomed", nil)
	f.waitCondition("doomed", v1beta1.ConditionTopicReady, metav1.ConditionFalse, "KafkaUnreachable")
	if err := k8s.Delete(f.ctx, f.channel("doomed")); err != nil {
		t.Fatalf("deleting: %v", err)
	}
	eventually(t, 45*time.Second, "channel with unreachable Kafka deleted", func() string {
		err := k8s.Get(f.ctx, client.ObjectKey{Namespace: f.chNS, Name: "doomed"}, &v1beta1.KafkaChannel{})
		if apierrors.IsNotFound(err) {
			return ""
		}
		return fmt.Sprint("still there: ", err)
	})
	f.waitEvent("doomed", "Warning TopicMayRemain")

	// The broker appears: the channel recovers without anyone touching it.
	cluster, err := kafkatest.NewCluster(kfake.Ports(port))
	if err != nil {
		t.Fatalf("starting kfake on %d: %v", port, err)
	}
	t.Cleanup(cluster.Close)
	f.waitCondition("late", v1beta1.ConditionTopicReady, metav1.ConditionTrue, "TopicReady")
	f.waitEvent("late", "Normal TopicReady")
}

func TestSASL(t *testing.T) {
	if kafkatest.External() {
		t.Skip("needs an in-process broker with SASL")
	}
	for _, mech := range []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"} {
		t.Run(mech, func(t *testing.T) {
			k := kafkatest.Start(t, kfake.EnableSASL(), kfake.Superuser(mech, "alice", "s3cret"))
			secret := map[string]string{
				"brokers": k.BootstrapServers(), "protocol": "SASL_PLAINTEXT",
				"sasl.mechanism": mech, "user": "alice", "password": "s3cret",
			}
			f := startFixture(t, fixtureOpts{secret: secret})
			f.createChannel("secure", func(ch *v1beta1.KafkaChannel) { ch.Spec.NumPartitions = 2 })
			f.waitCondition("secure", v1beta1.ConditionTopicReady, metav1.ConditionTrue, "TopicReady")
			if p, _, err := topicOnKafka(t, mustConn(t, secret), naming.Topic(f.chNS, "secure")); err != nil || p != 2 {
				t.Fatalf("topic partitions=%d err=%v", p, err)
			}

			// A wrong password reads as an authentication problem, naming the user, never
			// revealing the password.
			secret["password"] = "wrong"
			f.writeSecret(secret)
			c := f.waitCondition("secure", v1beta1.ConditionTopicReady, metav1.ConditionFalse, "KafkaAuthenticationFailed")
			if !strings.Contains(c.Message, "alice") || strings.Contains(c.Message, "wrong") || strings.Contains(c.Message, "s3cret") {
				t.Errorf("message %q should name the user and no password", c.Message)
			}
			f.waitCondition("secure", v1beta1.ConditionReady, metav1.ConditionFalse, "KafkaAuthenticationFailed")
		})
	}
}

func TestDeadLetterSink(t *testing.T) {
	k := kafkatest.Start(t)
	f := startFixture(t, fixtureOpts{secret: map[string]string{"brokers": k.BootstrapServers()}})

	// Another KafkaChannel is an Addressable: its status.address.url is the sink.
	f.createChannel("sink", nil)
	eventually(t, 30*time.Second, "sink address", func() string {
		if f.channel("sink").Status.Address == nil {
			return "no address yet"
		}
		return ""
	})
	f.createChannel("main", func(ch *v1beta1.KafkaChannel) {
		ch.Spec.Delivery = &v1beta1.DeliverySpec{DeadLetterSink: &v1beta1.Destination{
			Ref: &v1beta1.KReference{APIVersion: "messaging.knative.dev/v1beta1", Kind: "KafkaChannel", Name: "sink"},
			URI: ptr.To("/dead"),
		}}
	})
	f.waitCondition("main", v1beta1.ConditionDeadLetterSinkReady, metav1.ConditionTrue, "DeadLetterSinkResolved")
	want := "http://sink-kn-channel." + f.chNS + ".svc.cluster.local/dead"
	if got := ptr.Deref(f.channel("main").Status.DeadLetterSinkURI, ""); got != want {
		t.Errorf("deadLetterSinkUri = %q, want %q", got, want)
	}

	cases := []struct {
		name, reason string
		dst          v1beta1.Destination
		wantURI      string
	}{
		{name: "missing", reason: "DeadLetterSinkNotFound",
			dst: v1beta1.Destination{Ref: &v1beta1.KReference{APIVersion: "messaging.knative.dev/v1beta1", Kind: "KafkaChannel", Name: "nope"}}},
		{name: "unknown-kind", reason: "DeadLetterSinkNotFound",
			dst: v1beta1.Destination{Ref: &v1beta1.KReference{Group: "example.com", Kind: "Thing", Name: "x"}}},
		{name: "by-uri", reason: "DeadLetterSinkResolved",
			dst: v1beta1.Destination{URI: ptr.To("https://dlq.example.com/events")}, wantURI: "https://dlq.example.com/events"},
		{name: "no-sink", reason: "DeadLetterSinkNotConfigured"},
	}
	for _, tc := range cases {
		f.createChannel(tc.name, func(ch *v1beta1.KafkaChannel) {
			if tc.dst.Ref != nil || tc.dst.URI != nil {
				ch.Spec.Delivery = &v1beta1.DeliverySpec{DeadLetterSink: &tc.dst}
			}
		})
	}
	for _, tc := range cases {
		status := metav1.ConditionTrue
		if tc.wantURI == "" && tc.reason != "DeadLetterSinkNotConfigured" {
			status = metav1.ConditionFalse
		}
		c := f.waitCondition(tc.name, v1beta1.ConditionDeadLetterSinkReady, status, tc.reason)
		got := ptr.Deref(f.channel(tc.name).Status.DeadLetterSinkURI, "")
		if got != tc.wantURI {
			t.Errorf("%s: deadLetterSinkUri = %q, want %q", tc.name, got, tc.wantURI)
		}
		if status == metav1.ConditionFalse {
			// With everything else available, the sink is what Ready reports.
			markAvailable(t, f.ctx, f.opNS, naming.DispatcherName(f.chNS, tc.name))
			markAvailable(t, f.ctx, f.opNS, naming.ReceiverName)
			f.waitCondition(tc.name, v1beta1.ConditionReady, metav1.ConditionFalse, tc.reason)
			if c.Message == "" {
				t.Errorf("%s: no message", tc.name)
			}
		}
	}

	// The missing sink appears and becomes addressable: the channel resolves it without being
	// touched (the referent is polled, not watched).
	f.createChannel("nope", nil)
	f.waitCondition("missing", v1beta1.ConditionDeadLetterSinkReady, metav1.ConditionTrue, "DeadLetterSinkResolved")
}

// The Knative channel specification says each channel SHOULD carry the annotation
// messaging.knative.dev/subscribable: v1, the version of the Subscribable duck type it
// implements; Knative's conformance suite checks it on a channel written without it. A value
// other than v1 is corrected, since v1 is the only version this channel implements.
func TestChannelCarriesSubscribableDuckAnnotation(t *testing.T) {
	k := kafkatest.Start(t)
	f := startFixture(t, fixtureOpts{secret: map[string]string{"brokers": k.BootstrapServers()}})
	for _, tc := range []struct {
		name        string
		annotations map[string]string
	}{
		{name: "without", annotations: nil},
		{name: "with-v1beta1", annotations: map[string]string{SubscribableDuckAnnotation: "v1beta1"}},
		{name: "with-others", annotations: map[string]string{"team": "orders"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f.createChannel(tc.name, func(ch *v1beta1.KafkaChannel) { ch.Annotations = tc.annotations })
			ch := &v1beta1.KafkaChannel{}
			eventually(t, 30*time.Second, "the subscribable annotation", func() string {
				if err := k8s.Get(f.ctx, client.ObjectKey{Namespace: f.chNS, Name: tc.name}, ch); err != nil {
					return err.Error()
				}
				if v := ch.Annotations[SubscribableDuckAnnotation]; v != "v1" {
					return fmt.Sprintf("annotation %s = %q, want v1", SubscribableDuckAnnotation, v)
				}
				return ""
			})
			for k, v := range tc.annotations {
				if k != SubscribableDuckAnnotation && ch.Annotations[k] != v {
					t.Errorf("annotation %s = %q, want the user's %q kept", k, ch.Annotations[k], v)
				}
			}
		})
	}
}
