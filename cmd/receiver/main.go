// Command receiver is the shared ingress of all KafkaChannels: it accepts CloudEvents posted to
// a channel's address and writes them to the channel's Kafka topic (see package receiver). The
// manager runs it as one Deployment for every channel; its image runs it as /receiver.
//
// Environment: KAFKA_SECRET_DIR (the mounted Kafka Secret, default /etc/kafka-secret),
// POD_NAME and POD_NAMESPACE (for logs), KAFKACHANNEL_PORT_MAP (observability.Addr).
// Ports: events on 8080 (http) and 8443 (https, with the certificate mounted at --tls-dir),
// /metrics /healthz /readyz on 8081. config-features (under CONFIG_DIR) is followed live.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/client/config"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/kafkachannel/kafkachannel/internal/features"
	"github.com/kafkachannel/kafkachannel/internal/kafkaconn"
	"github.com/kafkachannel/kafkachannel/internal/memlimit"
	"github.com/kafkachannel/kafkachannel/internal/observability"
	"github.com/kafkachannel/kafkachannel/internal/oidc"
	"github.com/kafkachannel/kafkachannel/receiver"
)

type options struct {
	secretDir      string
	maxBodyBytes   int64
	bodyBudget     int64
	bodyIdle       time.Duration
	policyRecheck  time.Duration
	batchTimeout   time.Duration
	batchSize      int
	produceTimeout time.Duration
	shutdownGrace  time.Duration
	logLevel       string
	tlsDir         string
}

func main() {
	var o options
	flag.StringVar(&o.secretDir, "kafka-secret-dir", kafkaconn.SecretDir(),
		"directory of the mounted Kafka Secret (env KAFKA_SECRET_DIR)")
	flag.Int64Var(&o.maxBodyBytes, "max-body-bytes", receiver.DefaultMaxBodyBytes,
		"largest event body accepted; larger ones get 413; the default is Kafka's default max.message.bytes")
	flag.Int64Var(&o.bodyBudget, "body-budget-bytes", 0,
		"most bytes of event bodies held at once; more get 503 with Retry-After; 0: a quarter of GOMEMLIMIT when set, else 64 MiB")
	flag.DurationVar(&o.bodyIdle, "body-idle-timeout", receiver.DefaultBodyIdleTimeout,
		"how long a request body may go without a byte arriving before the request is dropped (408)")
	flag.DurationVar(&o.policyRecheck, "eventpolicy-api-recheck", receiver.DefaultPolicyAPIRecheck,
		"while the EventPolicy API is not installed, how often to ask whether it has been")
	flag.DurationVar(&o.batchTimeout, "batch-timeout", receiver.DefaultBatchTimeout,
		"how long the first record for an idle partition waits for others before its produce request is sent (linger; 0: at once). Records that arrive while a partition's request is in flight always go together in its next one")
	flag.IntVar(&o.batchSize, "batch-size", receiver.DefaultBatchSize, "most records in one produce request per partition")
	flag.DurationVar(&o.produceTimeout, "produce-timeout", receiver.DefaultProduceTimeout,
		"how long to wait for Kafka's acknowledgement before answering 503")
	flag.DurationVar(&o.shutdownGrace, "shutdown-grace", 25*time.Second,
		"on SIGTERM, how long requests in flight may take to finish")
	flag.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	flag.StringVar(&o.tlsDir, "tls-dir", tlsDirDefault(),
		"directory of the mounted certificate Secret (tls.crt, tls.key) served on the https port (env RECEIVER_TLS_DIR)")
	flag.Parse()

	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "receiver:", err)
		os.Exit(1)
	}
}

func run(o options) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	// Logging, tracing and profiling follow the mounted config-* ConfigMaps, live; the admin
	// server (/metrics, /healthz, /readyz) starts here too.
	obs, log, stopObservability, err := observability.StartDataPlane(ctx, observability.ComponentReceiver, o.logLevel)
	if err != nil {
		return err
	}
	defer stopObservability()
	ctrllog.SetLogger(log)
	mem, err := memlimit.Set(os.Getenv)
	if err != nil {
		return err
	}
	log.Info("process limits", "memoryLimit", mem.Limit, "memoryLimitFrom", mem.Source, "gomaxprocs", runtime.GOMAXPROCS(0))

	kc, err := kafkaconn.ReadDir(o.secretDir)
	if err != nil {
		return err
	}
	log.Info("kafka connection", "kafka", kc.String())

	restCfg, err := ctrlconfig.GetConfig()
	if err != nil {
		return fmt.Errorf("finding the Kubernetes API: %w", err)
	}

	idx := receiver.NewIndex()
	synced, err := receiver.WatchChannels(ctx, restCfg, idx)
	if err != nil {
		return err
	}
	obs.Admin.AddReadinessCheck("channels", synced)
	log.Info("channel cache synced", "channels", idx.Len())

	writer := receiver.NewWriter(kc, receiver.WriterOptions{
		BatchTimeout: o.batchTimeout,
		BatchSize:    o.batchSize,
		MaxBodyBytes: o.maxBodyBytes,
	})
	// Sender authentication (authentication-oidc): tokens are checked against the apiserver's
	// service-account issuer, senders against the EventPolicies of their channel.
	keys, err := oidc.NewAPIServerKeys(restCfg)
	if err != nil {
		return err
	}
	policies, err := receiver.WatchPolicies(ctx, restCfg, o.policyRecheck, log)
	if err != nil {
		return err
	}
	if !policies.Installed() {
		log.Info("the EventPolicy API is not installed: with authentication-oidc, default-authorization-mode decides for every channel until it is",
			"recheck", o.policyRecheck.String())
	}
	obs.Admin.AddReadinessCheck("eventpolicies", policies.Ready)
	auth := &receiver.Auth{Verifier: &oidc.Verifier{Source: keys}, Policies: policies}
	feats := features.Watch(ctx, obs.ConfigDir(), 0, log, obs.Registry)
	rcv, err := receiver.New(receiver.Config{
		Channels:        idx,
		Writer:          writer,
		Kafka:           kc,
		Registry:        obs.Registry,
		Log:             log,
		MaxBodyBytes:    o.maxBodyBytes,
		BodyBudgetBytes: o.bodyBudget,
		BodyIdleTimeout: o.bodyIdle,
		ProduceTimeout:  o.produceTimeout,
		Features:        feats,
		Auth:            auth,
		// https is always served: config-features may turn encryption on at any time, and
		// the certificate (rotated in place) may arrive after the pod started.
		TLS: receiver.NewCertReloader(o.tlsDir).TLSConfig(),
	})
	if err != nil {
		return err
	}
	addr, tlsAddr := observability.Addr(observability.IngressPort), observability.Addr(observability.IngressTLSPort)
	log.Info("receiving events", "addr", addr, "tlsAddr", tlsAddr, "tlsDir", o.tlsDir)
	go func() {
		<-ctx.Done()
		log.Info("shutting down: finishing requests in flight and flushing the Kafka writer")
	}()
	if err := rcv.Run(ctx, addr, tlsAddr, o.shutdownGrace); err != nil {
		return fmt.Errorf("shutting down: %w", err)
	}
	log.Info("stopped")
	return nil
}

func tlsDirDefault() string {
	if d := os.Getenv(receiver.TLSDirEnv); d != "" {
		return d
	}
	return receiver.DefaultTLSDir
}
