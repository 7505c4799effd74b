// Package kafkaconn turns the Kafka Secret into kafka-go connection settings. The manager reads
// the Secret through the API; the dispatcher and the receiver read the same keys from a mounted
// volume. One parser for all three means one documented set of keys.
//
// Keys (see docs/configuration.md):
//
//	brokers         comma-separated bootstrap servers (required)
//	protocol        PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL (inferred when absent)
//	sasl.mechanism  PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (default PLAIN)
//	user, password  SASL credentials
//	ca.crt          PEM CA bundle to trust (SSL, SASL_SSL)
//	user.crt, user.key  client certificate for mutual TLS
//
// The eventing-kafka distributed channel's keys are accepted too: username, sasltype.
package kafkaconn

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"
)

// Secret keys.
const (
	KeyBrokers       = "brokers"
	KeyProtocol      = "protocol"
	KeySASLMechanism = "sasl.mechanism"
	KeyUser          = "user"
	KeyPassword      = "password"
	KeyCACert        = "ca.crt"
	KeyUserCert      = "user.crt"
	KeyUserKey       = "user.key"

	// Keys of the eventing-kafka distributed channel, accepted for migration.
	KeyLegacyUsername = "username"
	KeyLegacySASLType = "sasltype"
)

// Security protocols, as Kafka names them.
const (
	ProtocolPlaintext     = "PLAINTEXT"
	ProtocolSSL           = "SSL"
	ProtocolSASLPlaintext = "SASL_PLAINTEXT"
	ProtocolSASLSSL       = "SASL_SSL"
)

// SASL mechanisms.
const (
	MechanismPlain       = "PLAIN"
	MechanismSCRAMSHA256 = "SCRAM-SHA-256"
	MechanismSCRAMSHA512 = "SCRAM-SHA-512"
)

// Where the data plane finds the mounted Secret: the manager mounts it at DefaultSecretDir and
// sets SecretDirEnv; the binaries read SecretDir().
const (
	SecretDirEnv     = "KAFKA_SECRET_DIR"
	DefaultSecretDir = "/etc/kafka-secret"
)

// SecretDir is SecretDirEnv's value, else DefaultSecretDir.
func SecretDir() string {
	if d := os.Getenv(SecretDirEnv); d != "" {
		return d
	}
	return DefaultSecretDir
}

// DialTimeout bounds each connection attempt, so an unreachable broker is reported in seconds.
const DialTimeout = 10 * time.Second

// Config is a parsed Kafka Secret.
type Config struct {
	Brokers       []string
	Protocol      string
	SASLMechanism string
	User          string
	password      string
	// TLS is nil unless Protocol is SSL or SASL_SSL.
	TLS *tls.Config
	// SASL is nil unless Protocol is SASL_PLAINTEXT or SASL_SSL.
	SASL sasl.Mechanism

	hash string
}

// String describes the connection without its secrets, for logs and conditions.
func (c *Config) String() string {
	s := fmt.Sprintf("brokers=%s protocol=%s", strings.Join(c.Brokers, ","), c.Protocol)
	if c.SASL != nil {
		s += fmt.Sprintf(" sasl=%s user=%s", c.SASLMechanism, c.User)
	}
	return s
}

// Hash is a digest of every key of the Secret: a change of any of them, the password included,
// changes it, without revealing them. The manager puts it in the pod template to roll pods.
func (c *Config) Hash() string { return c.hash }

// Parse reads the Secret's data.
func Parse(data map[string][]byte) (*Config, error) {
	get := func(keys ...string) string {
		for _, k := range keys {
			if v, ok := data[k]; ok && len(strings.TrimSpace(string(v))) > 0 {
				return strings.TrimSpace(string(v))
			}
		}
		return ""
	}
	c := &Config{hash: hashData(data)}
	for _, b := range strings.Split(get(KeyBrokers), ",") {
		if b = strings.TrimSpace(b); b != "" {
			if _, _, err := net.SplitHostPort(b); err != nil {
				return nil, fmt.Errorf("key %q: broker %q is not host:port", KeyBrokers, b)
			}
			c.Brokers = append(c.Brokers, b)
		}
	}
	if len(c.Brokers) == 0 {
		return nil, fmt.Errorf("key %q is missing or empty: it must list the bootstrap servers, e.g. my-kafka:9092", KeyBrokers)
	}
	c.User = get(KeyUser, KeyLegacyUsername)
	c.password = get(KeyPassword)
	caPEM, certPEM, keyPEM := get(KeyCACert), get(KeyUserCert), get(KeyUserKey)

	c.Protocol = strings.ToUpper(get(KeyProtocol))
	if c.Protocol == "" {
		c.Protocol = inferProtocol(c.User != "", caPEM != "" || certPEM != "")
	}
	var useTLS, useSASL bool
	switch c.Protocol {
	case ProtocolPlaintext:
	case ProtocolSSL:
		useTLS = true
	case ProtocolSASLPlaintext:
		useSASL = true
	case ProtocolSASLSSL:
		useTLS, useSASL = true, true
	default:
		return nil, fmt.Errorf("key %q: %q is not one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL", KeyProtocol, c.Protocol)
	}

	if useTLS {
		tc, err := tlsConfig(caPEM, certPEM, keyPEM)
		if err != nil {
			return nil, err
		}
		c.TLS = tc
	}
	if useSASL {
		if c.User == "" || c.password == "" {
			return nil, fmt.Errorf("protocol %s needs the keys %q and %q", c.Protocol, KeyUser, KeyPassword)
		}
		c.SASLMechanism = strings.ToUpper(get(KeySASLMechanism, KeyLegacySASLType))
		if c.SASLMechanism == "" {
			c.SASLMechanism = MechanismPlain
		}
		m, err := mechanism(c.SASLMechanism, c.User, c.password)
		if err != nil {
			return nil, err
		}
		c.SASL = m
	}
	return c, nil
}

// ReadDir reads a Secret mounted as a volume: one file per key.
func ReadDir(dir string) (*Config, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("reading the mounted Kafka Secret: %w", err)
	}
	data := map[string][]byte{}
	for _, e := range entries {
		// Kubernetes' atomic writer keeps ..data and timestamped folders beside the key links.
		if strings.HasPrefix(e.Name(), "..") {
			continue
		}
		p := filepath.Join(dir, e.Name())
		if st, err := os.Stat(p); err != nil || st.IsDir() {
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("reading the mounted Kafka Secret key %s: %w", e.Name(), err)
		}
		data[e.Name()] = b
	}
	return Parse(data)
}

func inferProtocol(hasUser, hasTLS bool) string {
	switch {
	case hasUser && hasTLS:
		return ProtocolSASLSSL
	case hasUser:
		return ProtocolSASLPlaintext
	case hasTLS:
		return ProtocolSSL
	}
	return ProtocolPlaintext
}

func mechanism(name, user, password string) (sasl.Mechanism, error) {
	switch name {
	case MechanismPlain:
		return plain.Mechanism{Username: user, Password: password}, nil
	case MechanismSCRAMSHA256, "SHA256", "SCRAM-SHA256":
		return scram.Mechanism(scram.SHA256, user, password)
	case MechanismSCRAMSHA512, "SHA512", "SCRAM-SHA512":
		return scram.Mechanism(scram.SHA512, user, password)
	}
	return nil, fmt.Errorf("key %q: %q is not one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512", KeySASLMechanism, name)
}

func tlsConfig(caPEM, certPEM, keyPEM string) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if caPEM != "" {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM([]byte(caPEM)) {
			return nil, fmt.Errorf("key %q holds no PEM certificate", KeyCACert)
		}
		tc.RootCAs = pool
	}
	if (certPEM == "") != (keyPEM == "") {
		return nil, fmt.Errorf("keys %q and %q must be given together", KeyUserCert, KeyUserKey)
	}
	if certPEM != "" {
		cert, err := tls.X509KeyPair([]byte(certPEM), []byte(keyPEM))
		if err != nil {
			return nil, fmt.Errorf("keys %q/%q: %w", KeyUserCert, KeyUserKey, err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

func hashData(data map[string][]byte) string {
	keys := make([]string, 0, len(data))
	for k := range data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	h := sha256.New()
	for _, k := range keys {
		_, _ = fmt.Fprintf(h, "%s=%d:", k, len(data[k]))
		h.Write(data[k])
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// Dialer returns a kafka-go Dialer for this connection (readers, admin Conns).
func (c *Config) Dialer() *kafka.Dialer {
	return &kafka.Dialer{
		Timeout:       DialTimeout,
		DualStack:     true,
		TLS:           c.TLS,
		SASLMechanism: c.SASL,
		KeepAlive:     30 * time.Second,
	}
}

// Transport returns a kafka-go Transport for this connection (Writers and kafka.Client). With
// topics it keeps the metadata of those topics only: without, kafka-go fetches and lays out
// every topic of the cluster on each refresh, which at hundreds of channels is most of a
// component's heap (docs/benchmarks.md, S1). Only a Writer for every channel (the receiver)
// needs them all.
func (c *Config) Transport(topics ...string) *kafka.Transport {
	return &kafka.Transport{
		DialTimeout:    DialTimeout,
		TLS:            c.TLS,
		SASL:           c.SASL,
		IdleTimeout:    5 * time.Minute,
		MetadataTTL:    30 * time.Second,
		MetadataTopics: topics,
	}
}

// ErrAuthentication marks an error as Kafka refusing the credentials.
var ErrAuthentication = errors.New("kafka refused the credentials")

// Explain rewrites kafka-go errors a user cannot act on into ones they can. Above all, a wrong
// SASL password surfaces in kafka-go as "unexpected EOF" when the broker drops the connection.
func (c *Config) Explain(err error) error {
	if err == nil {
		return nil
	}
	var kerr kafka.Error
	if errors.As(err, &kerr) && (kerr == kafka.SASLAuthenticationFailed || kerr == kafka.IllegalSASLState ||
		kerr == kafka.UnsupportedSASLMechanism) {
		return fmt.Errorf("%w (SASL %s as user %q): check user, password and sasl.mechanism in the Kafka Secret: %v",
			ErrAuthentication, c.SASLMechanism, c.User, err)
	}
	if c.SASL != nil && (errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		strings.Contains(err.Error(), "unexpected EOF")) {
		return fmt.Errorf("%w (SASL %s as user %q): the broker closed the connection, which during authentication means it refused the credentials: check user, password and sasl.mechanism in the Kafka Secret (if they are right, the connection dropped)",
			ErrAuthentication, c.SASLMechanism, c.User)
	}
	var nerr net.Error
	var operr *net.OpError
	if errors.As(err, &operr) || (errors.As(err, &nerr) && nerr.Timeout()) {
		return fmt.Errorf("kafka brokers %s unreachable: %w", strings.Join(c.Brokers, ","), err)
	}
	return err
}
