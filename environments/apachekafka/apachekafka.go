// Package apachekafka runs real Apache Kafka brokers (KRaft, combined broker and controller) as
// local JVM processes, from the jars hack/kafka/dist.sh assembles from Maven Central: the local
// stack, the interop tests and the fault suite use it to prove the system on the Kafka people
// run, not only on the in-process emulator.
package apachekafka

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/segmentio/kafka-go"

	"github.com/kafkachannel/kafkachannel/environments/proc"
)

// ClusterID is the fixed KRaft cluster id every cluster is formatted with (22 characters of
// base64url, 16 bytes): a restarted node finds the id it was formatted with.
const ClusterID = "a2Fma2FjaGFubmVsLXRzdA"

// Options configure a cluster.
type Options struct {
	// Version of Apache Kafka; DefaultVersion when empty.
	Version string
	// Brokers is the number of nodes, each a broker and a controller: 1 (default) or 3.
	Brokers int
	// Dir holds each node's configuration, data and log (Dir/node-<id>/). Start removes what an
	// earlier cluster left there: every Start makes a new cluster.
	Dir string
	// Home holds libs/ with the jars; DistDir(Version) when empty.
	Home string
	// Heap is the JVM's maximum heap per node; 512m when empty (three nodes fit a small machine).
	Heap string
	// Config is added to (and overrides) every node's server.properties.
	Config map[string]string
	// RequestLog has every node log each request it completes (the API, its version, the
	// client and the error codes) to Dir/node-<id>/requests.log, for Requests.
	RequestLog bool
	// StartTimeout bounds Start and Restart; 3 minutes when zero (JVMs start slowly on a loaded
	// two-core machine).
	StartTimeout time.Duration
	// Log receives what the cluster does (starts, stops, readiness).
	Log logr.Logger
	// Security adds listeners that need credentials next to the PLAINTEXT one (which the
	// nodes keep using among themselves); nil for none.
	Security *Security
}

// Security describes the SASL and TLS listeners of every node.
type Security struct {
	// Users (name: password) can log in on a SASL_PLAINTEXT listener with PLAIN and with
	// SCRAM-SHA-512; the listener exists when Users is not empty. PLAIN users are the broker's
	// JAAS configuration; SCRAM credentials are written into the cluster metadata by Kafka's
	// own `kafka-storage format --add-scram`. Names and passwords must not contain quotes,
	// commas, brackets or backslashes.
	Users map[string]string
	// TLSCertPEM (the certificate chain, leaf first) and TLSKeyPEM (an unencrypted PKCS #8
	// key), when set, add an SSL listener on 127.0.0.1 with that identity (a PEM key store).
	// With Users as well, a SASL_SSL listener is added: the same users over the same TLS.
	TLSCertPEM, TLSKeyPEM []byte
}

func (s *Security) sasl() bool { return s != nil && len(s.Users) > 0 }
func (s *Security) tls() bool  { return s != nil && len(s.TLSCertPEM) > 0 }

// Cluster is a running set of brokers.
type Cluster struct {
	opts  Options
	nodes []*node
}

type node struct {
	id                             int
	port, ctrlPort                 int
	saslPort, tlsPort, saslSSLPort int
	dir                            string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	err    error
	// stopped marks a node killed or stopped on purpose: its exit is not a failure of the
	// nodes being waited for (two nodes restarted at once each wait for the cluster while the
	// other may still be the killed process).
	stopped bool
}

// Start writes each node's server.properties, formats its storage, starts the JVMs and waits
// until the cluster answers metadata with every broker and can create a topic replicated on
// all of them. On error everything started is stopped again.
func Start(ctx context.Context, o Options) (c *Cluster, err error) {
	if o.Version == "" {
		o.Version = DefaultVersion
	}
	if o.Brokers == 0 {
		o.Brokers = 1
	}
	if o.Brokers != 1 && o.Brokers != 3 {
		return nil, fmt.Errorf("a cluster of %d brokers: 1 or 3 are supported", o.Brokers)
	}
	if o.Home == "" {
		o.Home = DistDir(o.Version)
	}
	if o.Heap == "" {
		o.Heap = "512m"
	}
	if o.StartTimeout == 0 {
		o.StartTimeout = 3 * time.Minute
	}
	if o.Log.GetSink() == nil {
		o.Log = logr.Discard()
	}
	if _, err := exec.LookPath("java"); err != nil {
		return nil, fmt.Errorf("%w: Apache Kafka needs a Java 17 runtime", ErrNoJava)
	}
	if _, err := os.Stat(filepath.Join(o.Home, "libs", "kafka_2.13-"+o.Version+".jar")); err != nil {
		return nil, fmt.Errorf("the jars of Apache Kafka %s are not in %s: run `make kafka-dist KAFKA_VERSION=%s`", o.Version, o.Home, o.Version)
	}
	if o.Dir, err = filepath.Abs(o.Dir); err != nil {
		return nil, err
	}
	c = &Cluster{opts: o}
	for i := 0; i < o.Brokers; i++ {
		n := &node{id: i + 1, dir: filepath.Join(o.Dir, fmt.Sprintf("node-%d", i+1))}
		if n.port, err = proc.FreePort(); err != nil {
			return nil, err
		}
		if n.ctrlPort, err = proc.FreePort(); err != nil {
			return nil, err
		}
		if o.Security.sasl() {
			if n.saslPort, err = proc.FreePort(); err != nil {
				return nil, err
			}
		}
		if o.Security.tls() {
			if n.tlsPort, err = proc.FreePort(); err != nil {
				return nil, err
			}
		}
		if o.Security.sasl() && o.Security.tls() {
			if n.saslSSLPort, err = proc.FreePort(); err != nil {
				return nil, err
			}
		}
		c.nodes = append(c.nodes, n)
	}
	defer func() {
		if err != nil {
			c.Close()
			c = nil
		}
	}()
	if err := c.writeConfig(); err != nil {
		return c, err
	}
	start := time.Now()
	// Formatting runs a JVM per node: in parallel it takes the time of one.
	errs := make(chan error, len(c.nodes))
	for _, n := range c.nodes {
		go func() { errs <- c.format(ctx, n) }()
	}
	for range c.nodes {
		if e := <-errs; e != nil && err == nil {
			err = e
		}
	}
	if err != nil {
		return c, err
	}
	for _, n := range c.nodes {
		if err := c.startNode(n); err != nil {
			return c, err
		}
	}
	if err := c.waitReady(ctx, nil); err != nil {
		return c, err
	}
	o.Log.Info("Apache Kafka is up", "version", o.Version, "brokers", c.BootstrapServers(), "took", time.Since(start).Round(100*time.Millisecond))
	return c, nil
}

// Version is the Kafka version the cluster runs.
func (c *Cluster) Version() string { return c.opts.Version }

// Brokers are the bootstrap servers, one per node.
func (c *Cluster) Brokers() []string {
	var out []string
	for _, n := range c.nodes {
		out = append(out, n.addr())
	}
	return out
}

// SASLBrokers are the SASL_PLAINTEXT listeners (Options.Security.Users), one per node.
func (c *Cluster) SASLBrokers() []string { return c.listeners(func(n *node) int { return n.saslPort }) }

// SASLSSLBrokers are the SASL_SSL listeners (Options.Security with Users and a certificate),
// one per node.
func (c *Cluster) SASLSSLBrokers() []string {
	return c.listeners(func(n *node) int { return n.saslSSLPort })
}

// TLSBrokers are the SSL listeners (Options.Security.TLSCertPEM), one per node.
func (c *Cluster) TLSBrokers() []string { return c.listeners(func(n *node) int { return n.tlsPort }) }

// listeners are the addresses of one kind of listener, one per node that has it.
func (c *Cluster) listeners(port func(*node) int) []string {
	var out []string
	for _, n := range c.nodes {
		if p := port(n); p != 0 {
			out = append(out, fmt.Sprintf("127.0.0.1:%d", p))
		}
	}
	return out
}

// BootstrapServers joins Brokers with commas, as KAFKA_BOOTSTRAP_SERVERS holds them.
func (c *Cluster) BootstrapServers() string { return strings.Join(c.Brokers(), ",") }

// PID is node i's JVM, 0 when it is not running.
func (c *Cluster) PID(i int) int {
	n := c.nodes[i]
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil || n.exitedLocked() {
		return 0
	}
	return n.cmd.Process.Pid
}

func (n *node) addr() string { return fmt.Sprintf("127.0.0.1:%d", n.port) }

func (n *node) exitedLocked() bool {
	select {
	case <-n.exited:
		return true
	default:
		return false
	}
}

func (c *Cluster) writeConfig() error {
	if err := os.MkdirAll(c.opts.Dir, 0o755); err != nil {
		return err
	}
	var voters []string
	for _, n := range c.nodes {
		voters = append(voters, fmt.Sprintf("%d@127.0.0.1:%d", n.id, n.ctrlPort))
	}
	rf := min(3, len(c.nodes))
	minISR := 1
	if len(c.nodes) >= 3 {
		minISR = 2
	}
	for _, n := range c.nodes {
		// A new cluster: data of an earlier one would carry another quorum's ports.
		if err := os.RemoveAll(n.dir); err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Join(n.dir, "data"), 0o755); err != nil {
			return err
		}
		props := map[string]string{
			"process.roles":                    "broker,controller",
			"node.id":                          strconv.Itoa(n.id),
			"controller.quorum.voters":         strings.Join(voters, ","),
			"listeners":                        fmt.Sprintf("PLAINTEXT://127.0.0.1:%d,CONTROLLER://127.0.0.1:%d", n.port, n.ctrlPort),
			"advertised.listeners":             "PLAINTEXT://" + n.addr(),
			"listener.security.protocol.map":   "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
			"controller.listener.names":        "CONTROLLER",
			"inter.broker.listener.name":       "PLAINTEXT",
			"log.dirs":                         filepath.Join(n.dir, "data"),
			"num.partitions":                   "1",
			"default.replication.factor":       "1",
			"min.insync.replicas":              strconv.Itoa(minISR),
			"offsets.topic.replication.factor": strconv.Itoa(rf),
			// Fewer than the default 50: the offsets topic is created at the first group join,
			// and 50 partitions times three replicas are slow to create on two cores.
			"offsets.topic.num.partitions":                     "10",
			"transaction.state.log.replication.factor":         strconv.Itoa(rf),
			"transaction.state.log.min.isr":                    strconv.Itoa(minISR),
			"share.coordinator.state.topic.replication.factor": strconv.Itoa(rf),
			"share.coordinator.state.topic.min.isr":            strconv.Itoa(minISR),
			// The 3 s default delays every first join of a group; tests and the demo want the
			// consumer to start at once (production keeps the default: see docs).
			"group.initial.rebalance.delay.ms": "0",
			// Like kfake: a client never creates a topic by asking for it, so a deleted
			// channel's topic stays deleted.
			"auto.create.topics.enable":         "false",
			"num.network.threads":               "2",
			"num.io.threads":                    "4",
			"num.recovery.threads.per.data.dir": "1",
		}
		c.securityProps(n, props)
		for k, v := range c.opts.Config {
			props[k] = v
		}
		if err := writeProps(filepath.Join(n.dir, "server.properties"), props); err != nil {
			return err
		}
	}
	return c.writeLogConfig()
}

// securityProps adds the SASL, TLS and SASL_SSL listeners of Options.Security to a node's
// properties.
func (c *Cluster) securityProps(n *node, props map[string]string) {
	sec := c.opts.Security
	listener := func(name string, port int) {
		props["listeners"] += fmt.Sprintf(",%s://127.0.0.1:%d", name, port)
		props["advertised.listeners"] += fmt.Sprintf(",%s://127.0.0.1:%d", name, port)
		props["listener.security.protocol.map"] += fmt.Sprintf(",%s:%s", name, name)
	}
	saslProps := func(lname string) {
		props["listener.name."+lname+".sasl.enabled.mechanisms"] = "PLAIN,SCRAM-SHA-512"
		names := make([]string, 0, len(sec.Users))
		for u := range sec.Users {
			names = append(names, u)
		}
		slices.Sort(names)
		plain := "org.apache.kafka.common.security.plain.PlainLoginModule required"
		for _, u := range names {
			plain += fmt.Sprintf(" user_%s=%q", u, sec.Users[u])
		}
		props["listener.name."+lname+".plain.sasl.jaas.config"] = plain + ";"
		props["listener.name."+lname+".scram-sha-512.sasl.jaas.config"] = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
	}
	tlsProps := func(lname string) {
		props["listener.name."+lname+".ssl.keystore.type"] = "PEM"
		// Java properties turn \n back into line breaks.
		props["listener.name."+lname+".ssl.keystore.certificate.chain"] = pemProp(sec.TLSCertPEM)
		props["listener.name."+lname+".ssl.keystore.key"] = pemProp(sec.TLSKeyPEM)
		props["listener.name."+lname+".ssl.client.auth"] = "none"
	}
	if sec.sasl() {
		listener("SASL_PLAINTEXT", n.saslPort)
		saslProps("sasl_plaintext")
	}
	if sec.tls() {
		listener("SSL", n.tlsPort)
		tlsProps("ssl")
	}
	if sec.sasl() && sec.tls() {
		listener("SASL_SSL", n.saslSSLPort)
		saslProps("sasl_ssl")
		tlsProps("sasl_ssl")
	}
}

func pemProp(b []byte) string {
	return strings.ReplaceAll(strings.TrimSpace(string(b)), "\n", `\n`)
}

func writeProps(path string, props map[string]string) error {
	keys := make([]string, 0, len(props))
	for k := range props {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	b.WriteString("# Written by environments/apachekafka; a new cluster rewrites it.\n")
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%s\n", k, props[k])
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// writeLogConfig writes logging configurations for both logging backends: Kafka 4.x reads the
// log4j2 one, 3.9 the reload4j one. Brokers log INFO to their server.log; tools log warnings
// to stderr so their stdout is only their output.
func (c *Cluster) writeLogConfig() error {
	server2, server1 := log4j2("INFO", "SYSTEM_OUT"), log4j1("INFO", "System.out")
	if c.opts.RequestLog {
		// kafka.logs.dir is each node's directory (a system property of its JVM).
		server2 += `appender.requests.type = File
appender.requests.name = REQUESTS
appender.requests.fileName = ${sys:kafka.logs.dir}/requests.log
appender.requests.layout.type = PatternLayout
appender.requests.layout.pattern = %m%n
logger.request.name = kafka.request.logger
logger.request.level = DEBUG
logger.request.additivity = false
logger.request.appenderRef.requests.ref = REQUESTS
`
		server1 += `log4j.appender.requests=org.apache.log4j.FileAppender
log4j.appender.requests.File=${kafka.logs.dir}/requests.log
log4j.appender.requests.layout=org.apache.log4j.PatternLayout
log4j.appender.requests.layout.ConversionPattern=%m%n
log4j.logger.kafka.request.logger=DEBUG, requests
log4j.additivity.kafka.request.logger=false
`
	}
	files := map[string]string{
		"log4j2-server.properties": server2,
		"log4j2-tools.properties":  log4j2("WARN", "SYSTEM_ERR"),
		"log4j-server.properties":  server1,
		"log4j-tools.properties":   log4j1("WARN", "System.err"),
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(c.opts.Dir, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func log4j2(level, target string) string {
	return `status = warn
appender.console.type = Console
appender.console.name = CONSOLE
appender.console.target = ` + target + `
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = ` + level + `
rootLogger.appenderRef.console.ref = CONSOLE
logger.state.name = state.change.logger
logger.state.level = WARN
`
}

func log4j1(level, target string) string {
	return `log4j.rootLogger=` + level + `, console
log4j.appender.console=org.apache.log4j.ConsoleAppender
log4j.appender.console.Target=` + target + `
log4j.appender.console.layout=org.apache.log4j.PatternLayout
log4j.appender.console.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.state.change.logger=WARN
`
}

// javaArgs are the JVM options and class path for a main class; role is "server" or "tools".
func (c *Cluster) javaArgs(role, heap string) []string {
	return []string{
		"-Xms64m", "-Xmx" + heap,
		"-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
		"-Djava.awt.headless=true",
		"-Dlog4j2.configurationFile=" + filepath.Join(c.opts.Dir, "log4j2-"+role+".properties"),
		"-Dlog4j.configuration=file:" + filepath.Join(c.opts.Dir, "log4j-"+role+".properties"),
		"-cp", filepath.Join(c.opts.Home, "libs", "*"),
	}
}

func (c *Cluster) format(ctx context.Context, n *node) error {
	class, _ := MainClass(c.opts.Version, "kafka-storage")
	args := append(c.javaArgs("tools", "256m"), class, "format",
		"--cluster-id", ClusterID, "--config", filepath.Join(n.dir, "server.properties"), "--ignore-formatted")
	if sec := c.opts.Security; sec.sasl() {
		// SCRAM users are metadata records: formatting writes them into the first snapshot.
		names := make([]string, 0, len(sec.Users))
		for u := range sec.Users {
			names = append(names, u)
		}
		slices.Sort(names)
		for _, u := range names {
			args = append(args, "--add-scram", fmt.Sprintf("SCRAM-SHA-512=[name=%s,password=%s]", u, sec.Users[u]))
		}
	}
	cmd := exec.CommandContext(ctx, "java", args...)
	cmd.SysProcAttr = proc.Attrs()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("formatting node %d's storage (kafka-storage format): %w\n%s", n.id, err, out)
	}
	return nil
}

func (c *Cluster) startNode(n *node) error {
	f, err := os.OpenFile(filepath.Join(n.dir, "server.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	class, _ := MainClass(c.opts.Version, "kafka-server")
	args := append(c.javaArgs("server", c.opts.Heap), "-Dkafka.logs.dir="+n.dir, class, filepath.Join(n.dir, "server.properties"))
	cmd := exec.Command("java", args...)
	cmd.Stdout, cmd.Stderr, cmd.SysProcAttr = f, f, proc.Attrs()
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := cmd.Start(); err != nil {
		_ = f.Close()
		return fmt.Errorf("starting node %d: %w", n.id, err)
	}
	n.cmd, n.exited, n.err, n.stopped = cmd, make(chan struct{}), nil, false
	exited := n.exited
	go func() {
		err := cmd.Wait()
		_ = f.Close()
		n.mu.Lock()
		n.err = err
		n.mu.Unlock()
		close(exited)
	}()
	c.opts.Log.Info("started Apache Kafka node", "node", n.id, "pid", cmd.Process.Pid, "port", n.port, "log", filepath.Join(n.dir, "server.log"))
	return nil
}

// waitReady waits until every running node answers metadata listing all running nodes, and
// (without only) a topic replicated on every node can be created and deleted. only restricts
// the check to nodes that must answer (a restarted one).
func (c *Cluster) waitReady(ctx context.Context, only *node) error {
	ctx, cancel := context.WithTimeout(ctx, c.opts.StartTimeout)
	defer cancel()
	var last error
	for {
		if err := c.exitedEarly(); err != nil {
			return err
		}
		if last = c.probe(ctx, only); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the Apache Kafka %s cluster did not become ready within %s: %v\nnode logs end with:\n%s",
				c.opts.Version, c.opts.StartTimeout, last, c.tails(15))
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func (c *Cluster) exitedEarly() error {
	for _, n := range c.nodes {
		n.mu.Lock()
		dead := n.cmd != nil && !n.stopped && n.exitedLocked()
		err := n.err
		n.mu.Unlock()
		if dead {
			return fmt.Errorf("node %d of Apache Kafka exited (%v); %s ends with:\n%s", n.id, err,
				filepath.Join(n.dir, "server.log"), proc.Tail(filepath.Join(n.dir, "server.log"), 30))
		}
	}
	return nil
}

func (c *Cluster) tails(lines int) string {
	var b strings.Builder
	for _, n := range c.nodes {
		fmt.Fprintf(&b, "--- node %d (%s)\n%s\n", n.id, filepath.Join(n.dir, "server.log"), proc.Tail(filepath.Join(n.dir, "server.log"), lines))
	}
	return b.String()
}

// probe asks over fresh connections: kafka-go's Transport caches metadata for seconds.
func (c *Cluster) probe(ctx context.Context, only *node) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for _, n := range c.nodes {
		if only != nil && n != only {
			continue
		}
		tr := &kafka.Transport{}
		cl := &kafka.Client{Addr: kafka.TCP(n.addr()), Transport: tr}
		md, err := cl.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{}})
		tr.CloseIdleConnections()
		if err != nil {
			return fmt.Errorf("metadata from node %d: %w", n.id, err)
		}
		if len(md.Brokers) != len(c.nodes) {
			return fmt.Errorf("node %d knows %d of %d brokers", n.id, len(md.Brokers), len(c.nodes))
		}
	}
	if only != nil {
		return nil
	}
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	cl := &kafka.Client{Addr: kafka.TCP(c.Brokers()...), Transport: tr}
	const topic = "__kafkachannel_ready"
	resp, err := cl.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{
		{Topic: topic, NumPartitions: 1, ReplicationFactor: len(c.nodes)},
	}})
	if err != nil {
		return fmt.Errorf("creating a topic: %w", err)
	}
	if err := resp.Errors[topic]; err != nil && !errors.Is(err, kafka.TopicAlreadyExists) {
		return fmt.Errorf("creating a topic: %w", err)
	}
	del, err := cl.DeleteTopics(ctx, &kafka.DeleteTopicsRequest{Topics: []string{topic}})
	if err != nil {
		return fmt.Errorf("deleting the probe topic: %w", err)
	}
	if err := del.Errors[topic]; err != nil {
		return fmt.Errorf("deleting the probe topic: %w", err)
	}
	return nil
}

// Kill SIGKILLs node i (0-based), like a crashed machine, and waits until it is gone.
func (c *Cluster) Kill(i int) error { return c.signal(i, syscall.SIGKILL, 0) }

// Stop stops node i gracefully (SIGTERM: controlled shutdown), SIGKILL after grace.
func (c *Cluster) Stop(i int, grace time.Duration) error { return c.signal(i, syscall.SIGTERM, grace) }

// Pause freezes node i with SIGSTOP: its sockets stay open but nothing answers, as if the
// network dropped every packet to and from it (a partition, not a crash). Resume ends it.
func (c *Cluster) Pause(i int) error { return c.signal(i, syscall.SIGSTOP, 0) }

// Resume lets a paused node i run again (SIGCONT).
func (c *Cluster) Resume(i int) error { return c.signal(i, syscall.SIGCONT, 0) }

// ActiveController asks the KRaft quorum (kafka-metadata-quorum describe --status through the
// running nodes) which node leads it, and returns its index (0-based).
func (c *Cluster) ActiveController(ctx context.Context) (int, error) {
	var bootstrap []string
	for i, n := range c.nodes {
		if c.PID(i) != 0 {
			bootstrap = append(bootstrap, n.addr())
		}
	}
	out, err := c.Tool(ctx, "kafka-metadata-quorum", "--bootstrap-server", strings.Join(bootstrap, ","), "describe", "--status")
	if err != nil {
		return 0, err
	}
	return parseQuorumLeader(out, len(c.nodes))
}

// parseQuorumLeader reads the LeaderId line of kafka-metadata-quorum describe --status.
func parseQuorumLeader(out string, nodes int) (int, error) {
	for _, line := range strings.Split(out, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || strings.TrimSpace(k) != "LeaderId" {
			continue
		}
		id, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || id < 1 || id > nodes {
			return 0, fmt.Errorf("kafka-metadata-quorum names leader %q, not one of nodes 1-%d", strings.TrimSpace(v), nodes)
		}
		return id - 1, nil
	}
	return 0, fmt.Errorf("no LeaderId in the output of kafka-metadata-quorum:\n%s", out)
}

func (c *Cluster) signal(i int, sig syscall.Signal, grace time.Duration) error {
	if i < 0 || i >= len(c.nodes) {
		return fmt.Errorf("no node %d (the cluster has %d)", i, len(c.nodes))
	}
	n := c.nodes[i]
	n.mu.Lock()
	cmd, exited := n.cmd, n.exited
	if sig == syscall.SIGKILL || sig == syscall.SIGTERM {
		n.stopped = true
	}
	n.mu.Unlock()
	if cmd == nil {
		return nil
	}
	_ = syscall.Kill(-cmd.Process.Pid, sig)
	if sig == syscall.SIGSTOP || sig == syscall.SIGCONT {
		return nil
	}
	// A paused node acts on SIGTERM only once it runs again.
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGCONT)
	if sig == syscall.SIGKILL {
		<-exited
		return nil
	}
	select {
	case <-exited:
	case <-time.After(grace):
		c.opts.Log.Info("node did not stop in time; killing it", "node", n.id, "grace", grace)
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	}
	return nil
}

// Restart starts a stopped or killed node i again with its ports and data, and waits until it
// answers metadata listing every broker.
func (c *Cluster) Restart(ctx context.Context, i int) error {
	if i < 0 || i >= len(c.nodes) {
		return fmt.Errorf("no node %d (the cluster has %d)", i, len(c.nodes))
	}
	n := c.nodes[i]
	n.mu.Lock()
	running := n.cmd != nil && !n.exitedLocked()
	n.mu.Unlock()
	if running {
		return fmt.Errorf("node %d is running", n.id)
	}
	if err := c.startNode(n); err != nil {
		return err
	}
	return c.waitReady(ctx, n)
}

// Close stops every node (SIGTERM, SIGKILL after 15 s) at the same time: one by one, the last
// nodes of a three-node cluster would wait for a controller quorum that is already gone.
func (c *Cluster) Close() {
	var wg sync.WaitGroup
	for i := range c.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = c.Stop(i, 15*time.Second)
		}()
	}
	wg.Wait()
}

// Command prepares Kafka's command-line tool `name` (a script name of the binary
// distribution, e.g. kafka-console-consumer) with args, on the cluster's jars; --bootstrap-server
// is not added.
func (c *Cluster) Command(ctx context.Context, name string, args ...string) (*exec.Cmd, error) {
	class, err := MainClass(c.opts.Version, name)
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, "java", append(append(c.javaArgs("tools", "256m"), class), args...)...)
	cmd.SysProcAttr = proc.Attrs()
	return cmd, nil
}

// Tool runs Kafka's command-line tool `name` with args and returns its standard output; the
// error carries its standard error.
func (c *Cluster) Tool(ctx context.Context, name string, args ...string) (string, error) {
	cmd, err := c.Command(ctx, name, args...)
	if err != nil {
		return "", err
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	return string(out), nil
}
