package bench

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/kafkachannel/kafkachannel/environments/apachekafka"
)

// PerfResult is what one of Kafka's own perf tools reported: its rate and its summary line.
type PerfResult struct {
	Rate float64
	Line string
}

// Anchors run Apache Kafka's own perf tools (the jars of version, as `make kafka-dist` puts
// them) against the same broker as the rest of the run: a reader sees how close the receiver and
// the dispatcher come to what Kafka's own Java clients do on the same machine.
type Anchors struct {
	Version string
	Brokers []string
}

// tool runs one of Kafka's tools with a small heap and returns its standard output.
func (a Anchors) tool(ctx context.Context, name string, args ...string) (string, error) {
	class, err := apachekafka.MainClass(a.Version, name)
	if err != nil {
		return "", err
	}
	libs := filepath.Join(apachekafka.DistDir(a.Version), "libs", "*")
	cmd := exec.CommandContext(ctx, "java", append([]string{"-Xms64m", "-Xmx512m", "-Djava.awt.headless=true", "-cp", libs, class}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s: %w: %s", name, err, lastLines(stderr.String(), 5))
	}
	return stdout.String(), nil
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(l[max(len(l)-n, 0):], " / ")
}

// ProducerPerf is kafka-producer-perf-test: n records of size bytes to topic with acks=all, as
// fast as it can (P4's anchor).
func (a Anchors) ProducerPerf(topic string, n, size int, budget time.Duration) (PerfResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), budget)
	defer cancel()
	out, err := a.tool(ctx, "kafka-producer-perf-test", "--topic", topic, "--num-records", strconv.Itoa(n),
		"--record-size", strconv.Itoa(size), "--throughput", "-1",
		"--producer-props", "bootstrap.servers="+strings.Join(a.Brokers, ","), "acks=all")
	if err != nil {
		return PerfResult{}, err
	}
	return parseProducerPerf(out)
}

// parseProducerPerf reads the tool's closing summary (the one with percentiles; the lines before
// it are interim reports): "N records sent, R records/sec (M MB/sec), ...".
func parseProducerPerf(out string) (PerfResult, error) {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		l := strings.TrimSpace(lines[i])
		if !strings.Contains(l, " records sent, ") || !strings.Contains(l, "50th") {
			continue
		}
		f := strings.Fields(strings.SplitN(l, " records sent, ", 2)[1])
		if len(f) < 2 || f[1] != "records/sec" {
			break
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return PerfResult{}, fmt.Errorf("producer perf test rate %q: %w", f[0], err)
		}
		return PerfResult{Rate: v, Line: l}, nil
	}
	return PerfResult{}, fmt.Errorf("no summary in the producer perf test's output: %q", lastLines(out, 3))
}

// ConsumerPerf is kafka-consumer-perf-test: n records of topic read from the beginning by a
// fresh group (the consume baseline's anchor).
func (a Anchors) ConsumerPerf(topic, group string, n int, budget time.Duration) (PerfResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), budget)
	defer cancel()
	count := "--num-records"
	if strings.HasPrefix(a.Version, "3.") {
		count = "--messages"
	}
	out, err := a.tool(ctx, "kafka-consumer-perf-test", "--bootstrap-server", strings.Join(a.Brokers, ","), "--topic", topic,
		"--group", group, count, strconv.Itoa(n), "--timeout", "30000")
	if err != nil {
		return PerfResult{}, err
	}
	return parseConsumerPerf(out)
}

// parseConsumerPerf reads the tool's CSV: a header and one line of values. The rate is
// fetch.nMsg.sec, which leaves the group join out (rebalance.time.ms), as the consume baseline
// counts from its first record.
func parseConsumerPerf(out string) (PerfResult, error) {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	for i := 0; i+1 < len(lines); i++ {
		if !strings.HasPrefix(strings.TrimSpace(lines[i]), "start.time") {
			continue
		}
		keys := strings.Split(lines[i], ",")
		vals := strings.Split(lines[i+1], ",")
		if len(vals) != len(keys) {
			break
		}
		for k, key := range keys {
			if strings.TrimSpace(key) != "fetch.nMsg.sec" {
				continue
			}
			v, err := strconv.ParseFloat(strings.TrimSpace(vals[k]), 64)
			if err != nil {
				return PerfResult{}, fmt.Errorf("consumer perf test fetch.nMsg.sec %q: %w", vals[k], err)
			}
			return PerfResult{Rate: v, Line: strings.TrimSpace(lines[i+1])}, nil
		}
	}
	return PerfResult{}, fmt.Errorf("no fetch.nMsg.sec in the consumer perf test's output: %q", lastLines(out, 3))
}
