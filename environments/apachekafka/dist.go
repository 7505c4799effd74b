package apachekafka

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// DefaultVersion is the newest 4.x Maven Central serves; the Makefile's KAFKA_VERSION_39 is
// the 3.9 line `make test-kafka` also runs.
const DefaultVersion = "4.4.0"

// ErrNoJava marks a machine without the Java runtime or Maven that Apache Kafka needs.
var ErrNoJava = errors.New("java is not installed")

// CacheDir is where the Makefile caches tools, envtest binaries and Kafka jars: $CACHE_DIR,
// else $XDG_CACHE_HOME/kafkachannel, else ~/.cache/kafkachannel.
func CacheDir() string {
	if d := os.Getenv("CACHE_DIR"); d != "" {
		return d
	}
	cache := os.Getenv("XDG_CACHE_HOME")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache")
	}
	return filepath.Join(cache, "kafkachannel")
}

// DistDir is where `make kafka-dist` puts version's jars (in DistDir/libs).
func DistDir(version string) string {
	return filepath.Join(CacheDir(), "kafka-"+version)
}

// DistReady reports whether version's jars are all there (hack/kafka/dist.sh writes the marker
// only after the last jar).
func DistReady(version string) bool {
	_, err := os.Stat(filepath.Join(DistDir(version), ".complete"))
	return err == nil
}

// EnsureDist makes version's jars available, running hack/kafka/dist.sh of the repository
// above the working directory when they are not cached yet (a cold download takes a minute or
// more). Progress goes to progress.
func EnsureDist(ctx context.Context, version string, progress io.Writer) (string, error) {
	if _, err := exec.LookPath("java"); err != nil {
		return "", fmt.Errorf("%w: Apache Kafka needs a Java 17 runtime (Debian: apt-get install openjdk-17-jre-headless)", ErrNoJava)
	}
	if DistReady(version) {
		return DistDir(version), nil
	}
	script, err := findScript()
	if err != nil {
		return "", fmt.Errorf("the jars of Apache Kafka %s are not in %s (`make kafka-dist KAFKA_VERSION=%s` puts it there): %w", version, DistDir(version), version, err)
	}
	cmd := exec.CommandContext(ctx, script, version, DistDir(version))
	cmd.Stdout, cmd.Stderr = progress, progress
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("assembling Apache Kafka %s from Maven Central (%s): %w", version, script, err)
	}
	return DistDir(version), nil
}

func findScript() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := dir; ; d = filepath.Dir(d) {
		p := filepath.Join(d, "hack", "kafka", "dist.sh")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no hack/kafka/dist.sh above %s", dir)
		}
	}
}

// Tools maps the script names of Kafka's binary distribution to their main classes. Kafka 4.0
// moved several from the Scala core into kafka-tools.
var tools = map[string][2]string{ // name: {3.x class, 4.x class}
	"kafka-server":              {"kafka.Kafka", "kafka.Kafka"},
	"kafka-storage":             {"kafka.tools.StorageTool", "kafka.tools.StorageTool"},
	"kafka-console-consumer":    {"org.apache.kafka.tools.consumer.ConsoleConsumer", "org.apache.kafka.tools.consumer.ConsoleConsumer"},
	"kafka-console-producer":    {"kafka.tools.ConsoleProducer", "org.apache.kafka.tools.ConsoleProducer"},
	"kafka-consumer-groups":     {"org.apache.kafka.tools.consumer.group.ConsumerGroupCommand", "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand"},
	"kafka-configs":             {"kafka.admin.ConfigCommand", "org.apache.kafka.tools.ConfigCommand"},
	"kafka-topics":              {"org.apache.kafka.tools.TopicCommand", "org.apache.kafka.tools.TopicCommand"},
	"kafka-broker-api-versions": {"kafka.admin.BrokerApiVersionsCommand", "org.apache.kafka.tools.BrokerApiVersionsCommand"},
	"kafka-metadata-quorum":     {"org.apache.kafka.tools.MetadataQuorumCommand", "org.apache.kafka.tools.MetadataQuorumCommand"},
	// The perf tools are the bench's anchors on Apache Kafka (docs/benchmarks.md).
	"kafka-producer-perf-test": {"org.apache.kafka.tools.ProducerPerformance", "org.apache.kafka.tools.ProducerPerformance"},
	"kafka-consumer-perf-test": {"org.apache.kafka.tools.ConsumerPerformance", "org.apache.kafka.tools.ConsumerPerformance"},
}

// MainClass is the Java class the distribution's script `name` (e.g. kafka-console-consumer)
// runs in version.
func MainClass(version, name string) (string, error) {
	c, ok := tools[strings.TrimSuffix(name, ".sh")]
	if !ok {
		var names []string
		for n := range tools {
			names = append(names, n)
		}
		return "", fmt.Errorf("unknown Kafka tool %q (known: %s)", name, strings.Join(names, ", "))
	}
	if strings.HasPrefix(version, "3.") {
		return c[0], nil
	}
	return c[1], nil
}

// PropertyFlag is the option that passes a formatter (console consumer) or reader (console
// producer) property in version: 4.x deprecated 3.x's --property and prints a warning to stdout.
func PropertyFlag(version, tool string) string {
	if strings.HasPrefix(version, "3.") {
		return "--property"
	}
	if strings.TrimSuffix(tool, ".sh") == "kafka-console-producer" {
		return "--reader-property"
	}
	return "--formatter-property"
}
