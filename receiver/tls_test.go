package receiver

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kafkachannel/kafkachannel/environments/certs"
	"github.com/kafkachannel/kafkachannel/environments/kafkatest"
	"github.com/kafkachannel/kafkachannel/internal/features"
	"github.com/kafkachannel/kafkachannel/internal/naming"
)

// writePair writes a certificate for 127.0.0.1 signed by ca into dir, as a mounted
// kubernetes.io/tls Secret looks.
func writePair(t *testing.T, ca *certs.CA, dir string) {
	t.Helper()
	certPEM, keyPEM, err := ca.Issue("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, TLSCertFile), certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, TLSKeyFile), keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
}

func newCA(t *testing.T, name string) *certs.CA {
	t.Helper()
	ca, err := certs.NewCA(name)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// httpsClient trusts only ca, as a sender given an address's CACerts does.
func httpsClient(ca *certs.CA) *http.Client {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.CertPEM)
	return &http.Client{
		Timeout:   20 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}},
	}
}

func startTLSReceiver(t *testing.T, k *kafkatest.Kafka, tlsDir string, live *features.Live) (*testReceiver, string) {
	t.Helper()
	r := startReceiver(t, k, func(c *Config) {
		c.Features = live
		c.TLS = NewCertReloader(tlsDir).TLSConfig()
	})
	if err := r.StartTLS("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the https listener", func() error {
		if r.TLSAddr() == nil {
			return errors.New("not yet")
		}
		return nil
	})
	return r, "https://" + r.TLSAddr().String()
}

// TestTransportEncryption follows config-features live: in permissive mode events arrive over
// http and over https (verified with the published CA only); in strict mode the http port
// answers 403 with its reason and writes nothing to Kafka, while https goes on.
func TestTransportEncryption(t *testing.T) {
	k := kafkatest.Start(t)
	createChannel(t, k, "tls", "events", 1, true)
	ca := newCA(t, "receiver CA")
	dir := t.TempDir()
	writePair(t, ca, dir)
	live := features.NewLive(features.Flags{TransportEncryption: features.EncryptionPermissive, DefaultAuthorization: features.AllowSameNamespace})
	r, httpsURL := startTLSReceiver(t, k, dir, live)
	path := naming.ChannelPath("tls", "events")

	send := func(c *http.Client, url, id string) (int, string) {
		t.Helper()
		resp, err := c.Do(rawRequest(t, "POST", url+path, with(binaryHeaders, "ce-id", id), "hi"))
		if err != nil {
			t.Fatalf("POST %s: %v", url, err)
		}
		defer func() { _ = resp.Body.Close() }()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(b))
	}
	if code, body := send(http.DefaultClient, r.url, "plain-permissive"); code != http.StatusAccepted {
		t.Fatalf("http in permissive mode: %d %s", code, body)
	}
	if code, body := send(httpsClient(ca), httpsURL, "tls-permissive"); code != http.StatusAccepted {
		t.Fatalf("https in permissive mode: %d %s", code, body)
	}
	if _, err := httpsClient(newCA(t, "someone else")).Post(httpsURL+path, "text/plain", strings.NewReader("x")); err == nil {
		t.Fatal("a client trusting another CA completed the handshake")
	}

	live.Set(features.Flags{TransportEncryption: features.EncryptionStrict, DefaultAuthorization: features.AllowSameNamespace})
	code, body := send(http.DefaultClient, r.url, "plain-strict")
	if code != http.StatusForbidden || !strings.Contains(body, "https only") {
		t.Fatalf("http in strict mode: %d %q, want 403 saying https only", code, body)
	}
	if code, body := send(httpsClient(ca), httpsURL, "tls-strict"); code != http.StatusAccepted {
		t.Fatalf("https in strict mode: %d %s", code, body)
	}

	var ids []string
	for _, m := range readTopic(t, k, naming.Topic("tls", "events"), 1) {
		for _, h := range m.Headers {
			if h.Key == "ce_id" {
				ids = append(ids, string(h.Value))
			}
		}
	}
	if got, want := strings.Join(ids, ","), "plain-permissive,tls-permissive,tls-strict"; got != want {
		t.Errorf("events in Kafka: %s, want %s", got, want)
	}
}

// TestCertificateRotation replaces the mounted certificate with one from a new CA, as a renewal
// with a new issuer would, and expects new connections to get it without a restart.
func TestCertificateRotation(t *testing.T) {
	k := kafkatest.Start(t)
	createChannel(t, k, "tls", "rotation", 1, true)
	dir := t.TempDir()
	_, httpsURL := startTLSReceiver(t, k, dir, nil)
	url := httpsURL + naming.ChannelPath("tls", "rotation")

	oldCA, newCAx := newCA(t, "old CA"), newCA(t, "new CA")
	// Before any certificate is mounted the handshake fails; it must not take the server down.
	if _, err := httpsClient(oldCA).Post(url, "text/plain", strings.NewReader("x")); err == nil {
		t.Fatal("a handshake succeeded without a certificate")
	}
	writePair(t, oldCA, dir)
	post := func(ca *certs.CA) error {
		c := httpsClient(ca)
		c.Transport.(*http.Transport).DisableKeepAlives = true
		resp, err := c.Do(rawRequest(t, "POST", url, binaryHeaders, "hi"))
		if err != nil {
			return err
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	}
	waitFor(t, 20*time.Second, "the first certificate", func() error { return post(oldCA) })
	writePair(t, newCAx, dir)
	waitFor(t, 20*time.Second, "the rotated certificate", func() error { return post(newCAx) })
	if err := post(oldCA); err == nil {
		t.Error("the old certificate is still served after rotation")
	}
}
