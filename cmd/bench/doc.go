package main

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/kafkachannel/kafkachannel/bench"
)

// document renders docs/benchmarks.md: how the figures were made, the table, the plot and what
// each miss means. Everything in it is rewritten by every run.
func document(rows []bench.Row, r *runner, external bool, took time.Duration) string {
	var b strings.Builder
	kafka := "embedded Kafka (kfake, one broker, in the bench process)"
	if external {
		kafka = "the Kafka cluster of KAFKA_BOOTSTRAP_SERVERS"
	}
	fmt.Fprintf(&b, `# Benchmarks

Written by `+"`make bench`"+` (= `+"`go run ./cmd/bench`"+`); do not edit by hand, run it again.

- command: `+"`make bench`"+` (`+"`go run ./cmd/bench -events %d`"+`)
- date: %s, commit %s, run took %s
- machine: %s
- Kafka: %s

Every baseline is measured in the same run on the same Kafka, minutes apart, because absolute
figures on a shared 2-core machine vary by 1.5x between runs; the ratio is the figure to
compare. Throughput is counted from the first delivery to the last, so joining the consumer
group is not in it (P6 measures that).

`, r.events, time.Now().UTC().Format("2006-01-02 15:04 MST"), gitCommit(), took.Round(time.Second), machine(), kafka)
	b.WriteString(bench.Markdown(rows))
	var notes []string
	for _, row := range rows {
		if row.Note != "" {
			notes = append(notes, fmt.Sprintf("- %s: %s", row.ID, row.Note))
		}
	}
	if len(notes) > 0 {
		b.WriteString("\nErrors of this run:\n\n" + strings.Join(notes, "\n") + "\n")
	}
	b.WriteString(`
## Ordered throughput against partitions

![ordered dispatcher throughput (events/s, y) against partitions (x), sink answering after 5 ms; red ticks: the bound partitions / latency](benchmarks.png)

Blue bars: events/s the dispatcher delivered in ordered mode to a subscriber that answers after
5 ms, for 1, 2, 4 and 8 partitions (x axis). Red ticks: the bound partitions / latency (one
delivery in flight per partition). The bars track the bound: ordered throughput scales with
partitions, which is why a channel that needs more should get more partitions, or be unordered.

`)
	for _, p := range r.points {
		fmt.Fprintf(&b, "- %d partitions: %.0f/s of a bound of %.0f/s (%.2f)\n", p.Partitions, p.Rate, p.Bound, p.Rate/p.Bound)
	}
	b.WriteString(analysis)
	return b.String()
}

// Markers of the section `make bench KAFKA=apache` writes: the kfake run rewrites the rest of
// the document and keeps it.
const (
	apacheBegin = "<!-- apache bench: begin -->"
	apacheEnd   = "<!-- apache bench: end -->"
)

// apacheSection is the table of a run on real Apache Kafka, between the markers.
func apacheSection(rows []bench.Row, r *runner, took time.Duration) string {
	var b strings.Builder
	version := os.Getenv("KAFKA_VERSION")
	if version == "" {
		version = "(KAFKA_VERSION unset)"
	}
	fmt.Fprintf(&b, "%s\n- command: `make bench KAFKA=apache` (`go run ./cmd/bench -apache -events %d` on one broker `localstack kafka` started)\n"+
		"- Kafka: Apache Kafka %s, one KRaft node (JVM, -Xmx512m) on the same machine\n- date: %s, commit %s, run took %s\n- machine: %s\n\n",
		apacheBegin, r.events, version, time.Now().UTC().Format("2006-01-02 15:04 MST"), gitCommit(), took.Round(time.Second), machine())
	b.WriteString(bench.Markdown(rows))
	for _, row := range rows {
		if row.Note != "" {
			fmt.Fprintf(&b, "- %s: %s\n", row.ID, row.Note)
		}
	}
	b.WriteString(apacheEnd + "\n")
	return b.String()
}

// apacheHeading introduces the section in a document that has none yet.
const apacheHeading = `
## On Apache Kafka

The same figures with a real broker instead of kfake, baselines again from the same run and
the same broker (` + "`make bench KAFKA=apache`" + `, ` + "`KAFKA_VERSION`" + `). The broker is a JVM sharing the two
cores with everything measured, so compare ratios with the table above, not absolute rates.

`

// keptApacheSection is the Apache Kafka section of an existing document, with its heading, or
// the heading and an empty section.
func keptApacheSection(old string) string {
	i, j := strings.Index(old, apacheBegin), strings.Index(old, apacheEnd)
	if i < 0 || j < i {
		return apacheHeading + apacheBegin + "\nNot run yet: `make bench KAFKA=apache`.\n" + apacheEnd + "\n"
	}
	return apacheHeading + old[i:j+len(apacheEnd)] + "\n"
}

// withApacheSection replaces the Apache Kafka section of doc with section.
func withApacheSection(doc, section string) (string, error) {
	i, j := strings.Index(doc, apacheBegin), strings.Index(doc, apacheEnd)
	if i < 0 || j < i {
		return "", fmt.Errorf("the document has no %q ... %q section: run `make bench` once first", apacheBegin, apacheEnd)
	}
	return doc[:i] + strings.TrimSuffix(section, "\n") + doc[j+len(apacheEnd):], nil
}

// analysis explains each figure, what it is compared with and what a miss means. It is prose
// about the method; the numbers above are the run's own.
const analysis = `
## What each row measures

- **P1**: 20k CloudEvents (256-byte JSON data) pre-filled on 8 partitions; one dispatcher
  (the real ` + "`dispatcher`" + ` library, unordered, MaxInFlight 64 per partition) delivers them
  to a local sink that answers 202 at once. Baselines: a kafka-go group reader with the same
  commit interval that only reads the records, and 16 goroutines POSTing the same records as
  binary-mode CloudEvents with plain net/http. The dispatcher does both jobs, so the slower
  baseline is the ceiling it is compared with.
- **P2**: ordered delivery (one event in flight per partition) to a sink that answers after
  5 ms: no implementation can beat partitions / latency = 1,600/s.
- **P3**: events POSTed to the real receiver library at 1,000/s (paced, not closed-loop), through
  Kafka (acks=all) and the dispatcher (ordered, the default) to the sink; the latency is from
  just before the POST to the sink receiving the event. Baseline: a kafka-go Writer with the
  receiver's settings and partition readers, at the same rate.
- **P4**: 20k events POSTed to the receiver by 32 concurrent senders, each answered 202 only
  after acks=all. Baseline: a kafka-go Writer with the same acks, batch timeout (1 ms) and batch
  size, written by 32 goroutines one record at a time.
- **P5**: the bench binary re-executes itself as a separate process running ` + "`dispatcher.New`" + `
  with 100 subscribers (100 consumer groups x 4 partitions) against the Kafka of the parent; VmRSS
  from /proc/PID/status once all are Ready and 3 s idle, then the peak while 200 events go to
  each subscriber (20k deliveries).
- **P6**: with one Ready subscriber, the time from ` + "`Update`" + ` adding a second until that one is
  Ready; then the time from a second dispatcher replica starting until the group is Stable with
  both members owning partitions. Both are the dispatcher's share, measured on the library;
  through the whole system the manager's reconcile and the status patch come on top (not
  measured here). On kfake there is no initial rebalance delay: on a real cluster
  add ` + "`group.initial.rebalance.delay.ms`" + ` (3 s by default).
- **P7**: the loop a user writes first: FetchMessage, POST, CommitMessages, one record at a time.
  The ratio P1/naive and P2/naive is what the dispatcher's per-partition pipelining and batched
  commits buy.

## Misses seen on this machine, and why

Figures from the runs made while writing this (2 cores shared with other builds); the table
above is the latest run's.

- **P1 (0.55-0.74 of the POST baseline since the fix below, target 0.8; missed by 8-30%).** The
  slower baseline is the plain POST loop (27-38k/s), which only sends records already in
  memory. The dispatcher, in the same process as the sink and on the same two cores as kfake,
  fetches each record, decodes it into a CloudEvent, encodes it again for HTTP, tracks its
  offset for the contiguous commit, updates four metrics and opens a (no-op) span. A CPU
  profile of the run (` + "`" + `go run ./cmd/bench -only P1 -cpuprofile p1.prof` + "`" + `) shows no single hot
  spot of ours: syscalls ~18%, allocation ~17%, the binding's ` + "`" + `ToEvent` + "`" + ` ~4%, the rest spread
  over net/http on both ends. One cause was ours and is fixed: the in-flight window is per
  partition, and with 64 (the first default) 8 partitions kept up to 512 requests open to one
  subscriber, which opened ~600 connections in a 20k run and gave 0.44-0.49. With the default
  now 16 (~170 connections) the ratio is 0.55-0.74 (the dispatcher steady at 21-25k/s, the POST
  baseline swinging between 30k and 38k/s); the rest is the work the baseline does not
  do, on a machine where every component competes for two cores.
- **P2 (0.84-0.86 of the bound, target 0.9).** The bound assumes the 5 ms answer is the whole
  round trip. Eight serial POST loops against the same sink (the second baseline) reach
  1,390-1,440/s, i.e. each round trip costs ~5.6-5.75 ms here (timer slack under load plus HTTP), and the
  dispatcher reaches 0.93-0.97 of that: ordered delivery adds little per event.
- **P4 (0.68-0.84 of the raw Writer, target 0.7).** Around the target: per event the receiver
  parses HTTP, validates the CloudEvent and builds the record, on the same cores as the 32
  senders and kfake. Both sides use the same writer tuning, so the ratio is the cost of HTTP
  and validation.
- **P7a (1.3-1.7, target >> 1).** With an instant sink the naive loop is not slow on kfake,
  because its synchronous commit is a loopback round trip to an in-process broker (~50 us). On
  a real cluster each commit is a network round trip to the group coordinator (1-5 ms), which
  caps the naive loop at a few hundred per second per consumer. With a sink that takes 5 ms
  (P7b) the naive loop does one event at a time and the dispatcher is 7x faster: that is the
  real-world shape.

## Reading a miss

A MISS says by how much in its ratio column. On this machine the two baselines of P1 and the
dispatcher share two cores with the embedded Kafka (kfake serves every request from one event
loop), so any figure that needs Kafka and HTTP at once is bounded by the CPU more than by the
code; the ratios are stable to about +-15% between runs. Run it against a real cluster with
` + "`KAFKA_BOOTSTRAP_SERVERS=host:9092 make bench`" + ` to take kfake out of the picture.
`
