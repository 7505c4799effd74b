package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1beta1 "github.com/kafkachannel/kafkachannel/api/v1beta1"
	"github.com/kafkachannel/kafkachannel/environments/apachekafka"
	"github.com/kafkachannel/kafkachannel/environments/certs"
	"github.com/kafkachannel/kafkachannel/environments/testlog"
)

// TestApacheKafkaSASLSSL runs the whole system (manager, receiver, dispatcher, each reading
// the Kafka Secret) against an Apache Kafka broker that only lets it in over SASL_SSL:
// SCRAM-SHA-512 with a user created by Kafka's own tools, over TLS with a CA the test made.
// The stack is pointed at the broker the way a user points it at a cluster of their own:
// KAFKA_BOOTSTRAP_SERVERS, KAFKA_PROTOCOL, KAFKA_SASL_MECHANISM, KAFKA_USER, KAFKA_PASSWORD
// and KAFKA_CA_FILE, from which the local stack writes the Kafka Secret.
func TestApacheKafkaSASLSSL(t *testing.T) {
	if os.Getenv("KAFKACHANNEL_SKIP_APACHE") == "1" {
		t.Skip("KAFKACHANNEL_SKIP_APACHE=1")
	}
	if testing.Short() {
		t.Skip("end-to-end: needs Apache Kafka, kube-apiserver, etcd and the built binaries")
	}
	version := os.Getenv("KAFKA_VERSION")
	if version == "" {
		version = apachekafka.DefaultVersion
	}
	ca, err := certs.NewCA("kafkachannel e2e Kafka CA")
	if err != nil {
		t.Fatal(err)
	}
	chain, key := brokerIdentity(t, ca)
	const user, password = "kafkachannel-e2e", "s3cret-e2e"
	k, err := apachekafka.Start(context.Background(), apachekafka.Options{
		Version: version, Dir: t.TempDir(), Log: testlog.New(t),
		Security: &apachekafka.Security{Users: map[string]string{user: password}, TLSCertPEM: chain, TLSKeyPEM: key},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	caFile := filepath.Join(t.TempDir(), "kafka-ca.crt")
	if err := os.WriteFile(caFile, ca.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	for name, v := range map[string]string{
		"KAFKA_BOOTSTRAP_SERVERS": strings.Join(k.SASLSSLBrokers(), ","),
		"KAFKA_PROTOCOL":          "SASL_SSL", "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
		"KAFKA_USER": user, "KAFKA_PASSWORD": password, "KAFKA_CA_FILE": caFile,
	} {
		t.Setenv(name, v)
	}
	s := startStackOn(t, nil, nil)
	if got := string(s.KafkaSecret["protocol"]); got != "SASL_SSL" {
		t.Fatalf("the stack's Kafka Secret has protocol %q, want SASL_SSL", got)
	}

	ctx := context.Background()
	r := newRecorder(t, "secure")
	ch := &v1beta1.KafkaChannel{
		ObjectMeta: metav1.ObjectMeta{Name: chName, Namespace: chNS},
		Spec:       v1beta1.KafkaChannelSpec{NumPartitions: 2, Subscribers: []v1beta1.SubscriberSpec{subscriber("secure", r)}},
	}
	if err := s.Client.Create(ctx, ch); err != nil {
		t.Fatal(err)
	}
	waitSubscribers(t, s, "uid-secure")
	url := fmt.Sprintf("%s/%s/%s", s.ReceiverURL, chNS, chName)
	ids, evs := sendBatch(t, url, "sasl-ssl", 50)
	r.waitAll(t, ids, time.Minute)
	checkUnaltered(t, r, evs)
	t.Logf("50 events through receiver, Kafka %s over SASL_SSL (SCRAM-SHA-512) and dispatcher", version)
}

// brokerIdentity issues the broker's certificate for 127.0.0.1 and returns its chain (leaf,
// then CA) and its key, the PEM forms Kafka's PEM key store reads.
func brokerIdentity(t *testing.T, ca *certs.CA) (chain, key []byte) {
	t.Helper()
	certPEM, keyPEM, err := ca.Issue("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	return append(certPEM, ca.CertPEM...), keyPEM
}
