// Command dispatcher delivers the events of one KafkaChannel to its subscribers (see package
// dispatcher). The manager runs it as one Deployment per channel, scaled up to the partition
// count; its image runs it as /dispatcher.
//
// Environment (each also a flag): CHANNEL_NAMESPACE, CHANNEL_NAME, KAFKA_TOPIC (default
// <namespace>.<name>), KAFKA_SECRET_DIR (default /etc/kafka-secret), POD_NAME and POD_NAMESPACE
// (for logs), KAFKACHANNEL_PORT_MAP (observability.Addr). Port: /metrics /healthz /readyz on 8081.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"sync"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/client/config"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/kafkachannel/kafkachannel/api/v1beta1"
	"github.com/kafkachannel/kafkachannel/dispatcher"
	"github.com/kafkachannel/kafkachannel/dispatcher/kube"
	"github.com/kafkachannel/kafkachannel/internal/features"
	"github.com/kafkachannel/kafkachannel/internal/kafkaconn"
	"github.com/kafkachannel/kafkachannel/internal/memlimit"
	"github.com/kafkachannel/kafkachannel/internal/naming"
	"github.com/kafkachannel/kafkachannel/internal/observability"
	"github.com/kafkachannel/kafkachannel/internal/oidc"
)

type options struct {
	namespace, name, topic    string
	secretDir                 string
	maxInFlight               int
	commitInterval            time.Duration
	drainTimeout              time.Duration
	sessionTimeout            time.Duration
	carryWhileCoordinatorDown time.Duration
	logLevel                  string
}

func main() {
	var o options
	flag.StringVar(&o.namespace, "channel-namespace", os.Getenv("CHANNEL_NAMESPACE"), "namespace of the KafkaChannel (env CHANNEL_NAMESPACE)")
	flag.StringVar(&o.name, "channel-name", os.Getenv("CHANNEL_NAME"), "name of the KafkaChannel (env CHANNEL_NAME)")
	flag.StringVar(&o.topic, "kafka-topic", os.Getenv("KAFKA_TOPIC"), "the channel's topic (env KAFKA_TOPIC; default <namespace>.<name>)")
	flag.StringVar(&o.secretDir, "kafka-secret-dir", kafkaconn.SecretDir(),
		"directory of the mounted Kafka Secret (env KAFKA_SECRET_DIR)")
	flag.IntVar(&o.maxInFlight, "max-in-flight", dispatcher.DefaultMaxInFlight,
		"deliveries in flight per partition and subscriber when the channel is annotated "+v1beta1.DeliveryOrderAnnotation+": "+v1beta1.DeliveryOrderUnordered+" or "+v1beta1.DeliveryOrderOrderedByKey)
	flag.DurationVar(&o.commitInterval, "commit-interval", dispatcher.DefaultCommitInterval, "how often handled offsets are committed")
	flag.DurationVar(&o.drainTimeout, "drain-timeout", dispatcher.DefaultDrainTimeout,
		"on shutdown or rebalance, how long deliveries in flight may finish before they are left to the next owner; must end 5s before the session timeout")
	flag.DurationVar(&o.sessionTimeout, "session-timeout", dispatcher.DefaultSessionTimeout,
		"Kafka consumer group session timeout: how soon a vanished replica's partitions move")
	flag.DurationVar(&o.carryWhileCoordinatorDown, "carry-while-coordinator-down", dispatcher.DefaultCarryWhileCoordinatorDown,
		"how long after its last answered heartbeat a subscriber goes on delivering its partitions while the group coordinator's broker refuses connections; negative: no longer than the session")
	flag.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, o, ctrlconfig.GetConfig); err != nil {
		fmt.Fprintln(os.Stderr, "dispatcher:", err)
		stop()
		os.Exit(1)
	}
}

// run dispatches until ctx ends (SIGTERM), then shuts down gracefully.
func run(ctx context.Context, o options, kubeConfig func() (*rest.Config, error)) error {
	if o.namespace == "" || o.name == "" {
		return errors.New("the channel is not set: CHANNEL_NAMESPACE and CHANNEL_NAME (or --channel-namespace, --channel-name) are required")
	}
	if o.topic == "" {
		o.topic = naming.Topic(o.namespace, o.name)
	}
	// Logging, tracing and profiling follow the mounted config-* ConfigMaps, live; the admin
	// server (/metrics, /healthz, /readyz) starts here too.
	obs, log, stopObservability, err := observability.StartDataPlane(ctx, observability.ComponentDispatcher, o.logLevel)
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
	log.Info("kafka connection", "kafka", kc.String(), "topic", o.topic)

	restCfg, err := kubeConfig()
	if err != nil {
		return fmt.Errorf("finding the Kubernetes API: %w", err)
	}
	scheme, err := kube.NewScheme()
	if err != nil {
		return err
	}
	k8s, err := client.New(restCfg, client.Options{Scheme: scheme})
	if err != nil {
		return fmt.Errorf("creating the Kubernetes client: %w", err)
	}

	// config-features applies live: strict transport encryption and OIDC tokens per delivery.
	clientset, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return fmt.Errorf("creating the Kubernetes clientset: %w", err)
	}
	d, err := dispatcher.New(dispatcher.Config{
		Brokers:                   kc.Brokers,
		Dialer:                    kc.Dialer(),
		Transport:                 kc.Transport(o.topic),
		Explain:                   kc.Explain,
		ChannelNamespace:          o.namespace,
		ChannelName:               o.name,
		Topic:                     o.topic,
		Registry:                  obs.Registry,
		Log:                       log,
		MaxInFlight:               o.maxInFlight,
		CommitInterval:            o.commitInterval,
		DrainTimeout:              o.drainTimeout,
		SessionTimeout:            o.sessionTimeout,
		CarryWhileCoordinatorDown: o.carryWhileCoordinatorDown,
		Features:                  features.Watch(ctx, obs.ConfigDir(), 0, log, obs.Registry),
		Tokens:                    &oidc.TokenProvider{Client: clientset},
	})
	if err != nil {
		return err
	}

	obs.Admin.AddReadinessCheck("channel", d.Started)

	if _, err := kube.Watch(ctx, restCfg, scheme, o.namespace, o.name, func(ch *v1beta1.KafkaChannel) {
		if ch == nil {
			log.Info("the KafkaChannel is gone: stopping every subscriber")
			d.Update(dispatcher.Channel{})
			return
		}
		d.Update(dispatcher.ChannelFrom(ch))
	}); err != nil {
		log.Error(err, "cannot watch the KafkaChannel; exiting so that the pod is restarted")
		return err
	}
	log.Info("watching the KafkaChannel", "addr", obs.Admin.Addr)

	reporter := &kube.Reporter{Client: k8s, Namespace: o.namespace, Name: o.name, Source: d, Log: log.WithName("status")}
	var wg sync.WaitGroup
	// The reporter keeps going until the dispatcher stopped, so it does not write "gone"
	// states; it stops with the process.
	rctx, rcancel := context.WithCancel(context.Background())
	wg.Add(1)
	go func() { defer wg.Done(); reporter.Run(rctx, d.Changed()) }()

	go func() {
		<-ctx.Done()
		log.Info("shutting down: finishing deliveries in flight, committing, leaving the consumer groups")
	}()
	err = d.Run(ctx)
	rcancel()
	wg.Wait()
	if err != nil {
		return fmt.Errorf("dispatching: %w", err)
	}
	log.Info("stopped")
	return nil
}
