package kafkaconn

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/kafkachannel/kafkachannel/environments/kafkatest"
)

func TestParse(t *testing.T) {
	ca := selfSignedCA(t)
	tests := []struct {
		name         string
		data         map[string]string
		wantErr      string
		wantProtocol string
		wantMech     string
		wantTLS      bool
	}{
		{name: "plaintext", data: map[string]string{"brokers": "k1:9092, k2:9092"}, wantProtocol: "PLAINTEXT"},
		{name: "no brokers", data: map[string]string{}, wantErr: `key "brokers" is missing`},
		{name: "broker without port", data: map[string]string{"brokers": "kafka"}, wantErr: "not host:port"},
		{name: "sasl plain inferred", data: map[string]string{"brokers": "k:9092", "user": "u", "password": "p"},
			wantProtocol: "SASL_PLAINTEXT", wantMech: "PLAIN"},
		{name: "scram-512", data: map[string]string{"brokers": "k:9092", "protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-512", "user": "u", "password": "p"},
			wantProtocol: "SASL_PLAINTEXT", wantMech: "SCRAM-SHA-512"},
		{name: "eventing-kafka keys", data: map[string]string{"brokers": "k:9092", "username": "u", "password": "p", "sasltype": "SCRAM-SHA-256"},
			wantProtocol: "SASL_PLAINTEXT", wantMech: "SCRAM-SHA-256"},
		{name: "sasl_ssl", data: map[string]string{"brokers": "k:9093", "protocol": "sasl_ssl", "user": "u", "password": "p", "ca.crt": ca},
			wantProtocol: "SASL_SSL", wantMech: "PLAIN", wantTLS: true},
		{name: "ssl inferred from ca", data: map[string]string{"brokers": "k:9093", "ca.crt": ca}, wantProtocol: "SSL", wantTLS: true},
		{name: "sasl without password", data: map[string]string{"brokers": "k:9092", "protocol": "SASL_PLAINTEXT", "user": "u"}, wantErr: `needs the keys "user" and "password"`},
		{name: "unknown protocol", data: map[string]string{"brokers": "k:9092", "protocol": "QUIC"}, wantErr: "is not one of PLAINTEXT"},
		{name: "unknown mechanism", data: map[string]string{"brokers": "k:9092", "user": "u", "password": "p", "sasl.mechanism": "GSSAPI"}, wantErr: "is not one of PLAIN, SCRAM"},
		{name: "bad ca", data: map[string]string{"brokers": "k:9092", "protocol": "SSL", "ca.crt": "junk"}, wantErr: "holds no PEM certificate"},
		{name: "cert without key", data: map[string]string{"brokers": "k:9092", "protocol": "SSL", "user.crt": ca}, wantErr: "must be given together"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := map[string][]byte{}
			for k, v := range tt.data {
				data[k] = []byte(v)
			}
			c, err := Parse(data)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Parse() error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Protocol != tt.wantProtocol || c.SASLMechanism != tt.wantMech || (c.TLS != nil) != tt.wantTLS {
				t.Errorf("got protocol=%s mech=%s tls=%v", c.Protocol, c.SASLMechanism, c.TLS != nil)
			}
			if strings.Contains(c.String(), "p ") || strings.Contains(c.String(), "password") {
				t.Errorf("String() leaks the password: %s", c.String())
			}
		})
	}
}

func TestHashChangesWithEveryKey(t *testing.T) {
	base := map[string][]byte{"brokers": []byte("k:9092"), "user": []byte("u"), "password": []byte("one")}
	c1, _ := Parse(base)
	base["password"] = []byte("two")
	c2, _ := Parse(base)
	if c1.Hash() == c2.Hash() {
		t.Error("a password change did not change the hash")
	}
	if strings.Contains(c1.Hash(), "one") {
		t.Error("hash reveals the password")
	}
}

func TestReadDirSkipsAtomicWriterEntries(t *testing.T) {
	dir := t.TempDir()
	// What kubelet's atomic writer lays out: ..data -> timestamped dir, key -> ..data/key.
	ts := filepath.Join(dir, "..2026_11_26")
	if err := os.Mkdir(ts, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ts, "brokers"), []byte("k:9092\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("..2026_11_26", filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("..data/brokers", filepath.Join(dir, "brokers")); err != nil {
		t.Fatal(err)
	}
	c, err := ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Brokers) != 1 || c.Brokers[0] != "k:9092" {
		t.Errorf("brokers = %v", c.Brokers)
	}
}

// Against a real SASL handshake: the right password connects for each mechanism, and a wrong one
// reads as an authentication problem rather than kafka-go's "unexpected EOF".
func TestSASLAgainstBroker(t *testing.T) {
	if kafkatest.External() {
		t.Skip("needs the in-process broker's SASL users")
	}
	for _, mech := range []string{MechanismPlain, MechanismSCRAMSHA256, MechanismSCRAMSHA512} {
		t.Run(mech, func(t *testing.T) {
			k := kafkatest.Start(t, kfake.EnableSASL(), kfake.Superuser(mech, "admin", "s3cret"))
			for _, tc := range []struct {
				password string
				wantAuth bool
			}{{"s3cret", false}, {"wrong", true}} {
				c, err := Parse(map[string][]byte{"brokers": []byte(k.BootstrapServers()), "sasl.mechanism": []byte(mech),
					"user": []byte("admin"), "password": []byte(tc.password)})
				if err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				conn, err := c.Dialer().DialContext(ctx, "tcp", k.Brokers[0])
				cancel()
				if err == nil {
					_, err = conn.ReadPartitions()
					conn.Close()
				}
				err = c.Explain(err)
				if tc.wantAuth {
					if !errors.Is(err, ErrAuthentication) || !strings.Contains(err.Error(), "check user, password") {
						t.Errorf("wrong password gave %v, want an authentication error", err)
					}
					if strings.Contains(err.Error(), tc.password) {
						t.Errorf("error leaks the password: %v", err)
					}
				} else if err != nil {
					t.Errorf("right password: %v", err)
				}
			}
		})
	}
}

func TestExplainUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	c, _ := Parse(map[string][]byte{"brokers": []byte(addr)})
	_, err = c.Dialer().DialContext(context.Background(), "tcp", addr)
	if err = c.Explain(err); err == nil || !strings.Contains(err.Error(), "unreachable") {
		t.Errorf("Explain = %v, want unreachable", err)
	}
}

func selfSignedCA(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test-ca"}, IsCA: true,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}
