package apachekafka

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/segmentio/kafka-go"

	"github.com/kafkachannel/kafkachannel/api/v1beta1"
	"github.com/kafkachannel/kafkachannel/dispatcher"
	"github.com/kafkachannel/kafkachannel/environments/certs"
	"github.com/kafkachannel/kafkachannel/environments/testlog"
	"github.com/kafkachannel/kafkachannel/internal/kafkabinding"
	"github.com/kafkachannel/kafkachannel/internal/kafkaconn"
	"github.com/kafkachannel/kafkachannel/receiver"
)

// testCA makes a CA and a broker certificate for 127.0.0.1 signed by it; it returns the CA
// certificate and the broker's chain and key, all PEM.
func testCA(t *testing.T) (caPEM, chainPEM, keyPEM []byte) {
	t.Helper()
	ca, err := certs.NewCA("kafkachannel test CA")
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.Issue("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	return ca.CertPEM, append(certPEM, ca.CertPEM...), keyPEM
}

// TestSASLAndTLS starts a broker with a SASL_PLAINTEXT listener (PLAIN, and SCRAM-SHA-512
// with the user created by kafka-storage format --add-scram), an SSL listener with a
// certificate of a CA the test made, and a SASL_SSL listener with both. Through each, with a Kafka Secret as a user writes it,
// the manager's path creates the topic, the receiver's Writer produces a CloudEvent with
// acks=all and the dispatcher delivers it to a subscriber. A wrong password, and a CA that did
// not sign the broker's certificate, give errors that say so.
func TestSASLAndTLS(t *testing.T) {
	requireKafka(t)
	caPEM, chainPEM, keyPEM := testCA(t)
	const user, password = "kafkachannel", "right-password"
	c, err := Start(context.Background(), Options{Version: testVersion(), Dir: t.TempDir(), Log: testlog.New(t),
		Security: &Security{Users: map[string]string{user: password}, TLSCertPEM: chainPEM, TLSKeyPEM: keyPEM}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	sasl, tlsAddr := strings.Join(c.SASLBrokers(), ","), strings.Join(c.TLSBrokers(), ",")
	saslSSL := strings.Join(c.SASLSSLBrokers(), ",")
	otherCA, _, _ := testCA(t)

	for _, tc := range []struct {
		name    string
		secret  map[string]string
		wantErr string // empty: everything works
	}{
		{"SASL PLAIN", map[string]string{"brokers": sasl, "protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN", "user": user, "password": password}, ""},
		{"SASL SCRAM-SHA-512", map[string]string{"brokers": sasl, "protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-512", "user": user, "password": password}, ""},
		{"TLS", map[string]string{"brokers": tlsAddr, "protocol": "SSL", "ca.crt": string(caPEM)}, ""},
		{"SASL_SSL SCRAM-SHA-512", map[string]string{"brokers": saslSSL, "protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512", "user": user, "password": password, "ca.crt": string(caPEM)}, ""},
		{"SASL_SSL PLAIN, protocol inferred", map[string]string{"brokers": saslSSL, "sasl.mechanism": "PLAIN", "user": user, "password": password, "ca.crt": string(caPEM)}, ""},
		{"SASL_SSL, wrong password", map[string]string{"brokers": saslSSL, "protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512", "user": user, "password": "wrong", "ca.crt": string(caPEM)}, "check user, password"},
		{"SASL_SSL, another CA", map[string]string{"brokers": saslSSL, "protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512", "user": user, "password": password, "ca.crt": string(otherCA)}, "certificate signed by unknown authority"},
		{"SASL PLAIN, wrong password", map[string]string{"brokers": sasl, "protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN", "user": user, "password": "wrong"}, "check user, password"},
		{"SASL SCRAM-SHA-512, wrong password", map[string]string{"brokers": sasl, "protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-512", "user": user, "password": "wrong"}, "check user, password"},
		{"TLS, another CA", map[string]string{"brokers": tlsAddr, "protocol": "SSL", "ca.crt": string(otherCA)}, "certificate signed by unknown authority"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := map[string][]byte{}
			for k, v := range tc.secret {
				data[k] = []byte(v)
			}
			kc, err := kafkaconn.Parse(data)
			if err != nil {
				t.Fatal(err)
			}
			topic := "security-" + strings.NewReplacer(" ", "-", ",", "").Replace(strings.ToLower(tc.name))
			if tc.wantErr == "" {
				if err := throughAll(t, kc, topic); err != nil {
					t.Fatal(err)
				}
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			w := receiver.NewWriter(kc, receiver.WriterOptions{})
			defer func() { _ = w.Close() }()
			for component, err := range map[string]error{
				"manager":  createTopic(ctx, kc, topic),
				"receiver": produce(ctx, t, kc, w, topic),
			} {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("%s: got %v, want an error saying %q", component, err, tc.wantErr)
				}
				if strings.Contains(tc.wantErr, "password") && !errors.Is(err, kafkaconn.ErrAuthentication) {
					t.Errorf("%s: %v is not an ErrAuthentication", component, err)
				}
				if strings.Contains(err.Error(), "wrong") {
					t.Errorf("%s: the error shows the password: %v", component, err)
				}
				t.Logf("%s, as expected: %v", component, err)
			}
		})
	}
}

// createTopic makes the manager's calls (controllers/topic.go): metadata of the topic, then
// CreateTopics, through a kafka.Client over kafkaconn's Transport; errors explained as the
// manager explains them.
func createTopic(ctx context.Context, kc *kafkaconn.Config, topic string) error {
	tr := kc.Transport()
	defer tr.CloseIdleConnections()
	admin := &kafka.Client{Addr: kafka.TCP(kc.Brokers...), Transport: tr, Timeout: 20 * time.Second}
	if _, err := admin.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}}); err != nil {
		return fmt.Errorf("describing the topic: %w", kc.Explain(err))
	}
	resp, err := admin.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{Topic: topic, NumPartitions: 1, ReplicationFactor: 1}}})
	if err == nil {
		err = resp.Errors[topic]
	}
	if err != nil {
		return fmt.Errorf("creating the topic: %w", kc.Explain(err))
	}
	return nil
}

// produce writes one CloudEvent through the receiver's Writer (acks=all).
func produce(ctx context.Context, t *testing.T, kc *kafkaconn.Config, w *receiver.Writer, topic string) error {
	ev := cloudevents.NewEvent()
	ev.SetID("sec-1")
	ev.SetSource("/apachekafka/security")
	ev.SetType("dev.kafkachannel.security")
	if err := ev.SetData(cloudevents.ApplicationJSON, map[string]string{"via": topic}); err != nil {
		t.Fatal(err)
	}
	msg, err := kafkabinding.ToMessage(&ev)
	if err != nil {
		t.Fatal(err)
	}
	msg.Topic = topic
	if err := w.WriteMessages(ctx, msg); err != nil {
		return fmt.Errorf("producing: %w", kc.Explain(err))
	}
	return nil
}

// throughAll creates topic as the manager does, starts the dispatcher with one subscriber and
// waits until it is ready, produces one CloudEvent through the receiver's Writer and waits
// until the dispatcher delivered it.
func throughAll(t *testing.T, kc *kafkaconn.Config, topic string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := createTopic(ctx, kc, topic); err != nil {
		return err
	}

	// The dispatcher: a consumer group over kafkaconn's Dialer, delivering to a subscriber.
	var mu sync.Mutex
	got := map[string]bool{}
	sub := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		mu.Lock()
		got[r.Header.Get("Ce-Id")] = true
		mu.Unlock()
		rw.WriteHeader(http.StatusAccepted)
	}))
	defer sub.Close()
	d, err := dispatcher.New(dispatcher.Config{Brokers: kc.Brokers, Dialer: kc.Dialer(), Transport: kc.Transport(), Explain: kc.Explain,
		ChannelNamespace: "security", ChannelName: topic, Topic: topic, Log: testlog.New(t), MaxWait: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	u := sub.URL + "/"
	d.Update(dispatcher.Channel{Subscribers: []v1beta1.SubscriberSpec{{UID: "sub", Generation: 1, SubscriberURI: &u}}})
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- d.Run(runCtx) }()
	defer func() { stop(); <-done }()
	// A new subscription starts at the end of the topic: produce once it is ready.
	if err := waitFor(ctx, func() bool { st, ok := d.State("sub"); return ok && st.Ready == "True" }); err != nil {
		return fmt.Errorf("the dispatcher's subscriber did not turn ready: %+v", d.States())
	}

	w := receiver.NewWriter(kc, receiver.WriterOptions{})
	defer func() { _ = w.Close() }()
	if err := produce(ctx, t, kc, w, topic); err != nil {
		return err
	}
	if err := waitFor(ctx, func() bool { mu.Lock(); defer mu.Unlock(); return got["sec-1"] }); err != nil {
		return fmt.Errorf("the dispatcher did not deliver the event: %+v", d.States())
	}
	return nil
}

func waitFor(ctx context.Context, cond func() bool) error {
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}
