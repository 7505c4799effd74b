// Package kafkatest gives tests a Kafka: an in-process kfake cluster (the real Kafka wire
// protocol) by default, or the real cluster named by KAFKA_BOOTSTRAP_SERVERS.
package kafkatest

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
)

// Kafka is a broker (set) for one test.
type Kafka struct {
	// Brokers are the bootstrap servers.
	Brokers []string
	// Cluster is the in-process cluster, nil when testing against a real one.
	Cluster *kfake.Cluster
}

// BootstrapServers joins Brokers the way the Kafka Secret's `brokers` key holds them.
func (k *Kafka) BootstrapServers() string { return strings.Join(k.Brokers, ",") }

// External reports whether a real cluster from KAFKA_BOOTSTRAP_SERVERS is in use.
func External() bool { return os.Getenv("KAFKA_BOOTSTRAP_SERVERS") != "" }

// Start returns a Kafka for the test, closed when the test ends. Extra kfake options (SASL, TLS,
// DataDir...) only apply to the in-process cluster; a test that needs them should skip when
// External() is true.
func Start(t testing.TB, opts ...kfake.Opt) *Kafka {
	t.Helper()
	if s := os.Getenv("KAFKA_BOOTSTRAP_SERVERS"); s != "" {
		return &Kafka{Brokers: strings.Split(s, ",")}
	}
	c, err := NewCluster(opts...)
	if err != nil {
		t.Fatalf("starting kfake: %v", err)
	}
	t.Cleanup(c.Close)
	return &Kafka{Brokers: c.ListenAddrs(), Cluster: c}
}

// NewCluster starts a single-broker kfake with the settings kafka-go needs: kafka-go's default
// session timeout is below kfake's default minimum, which would make joins fail silently.
func NewCluster(opts ...kfake.Opt) (*kfake.Cluster, error) {
	base := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.GroupMinSessionTimeout(time.Second),
		kfake.ClusterID("kafkachannel-test"),
	}
	return kfake.NewCluster(append(base, opts...)...)
}
