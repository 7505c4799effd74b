// The KafkaChannel manager: it reconciles each KafkaChannel into a Kafka topic, a dispatcher
// Deployment, Services, an address and conditions. Its configuration is environment variables
// (docs/architecture.md, "Manager configuration"); flags only cover how it runs.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	goruntime "runtime"

	"go.uber.org/zap/zapcore"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/kafkachannel/kafkachannel/api/v1alpha1"
	"github.com/kafkachannel/kafkachannel/api/v1beta1"
	"github.com/kafkachannel/kafkachannel/controllers"
	"github.com/kafkachannel/kafkachannel/internal/memlimit"
	"github.com/kafkachannel/kafkachannel/internal/observability"
	"github.com/kafkachannel/kafkachannel/internal/version"
)

func main() {
	var metricsAddr, probeAddr, pprofAddr, logLevel string
	var leaderElect, secureMetrics bool
	flag.StringVar(&metricsAddr, "metrics-bind-address", ":8443", "address of the Prometheus /metrics endpoint (0 disables it)")
	flag.BoolVar(&secureMetrics, "metrics-secure", true, "serve /metrics over HTTPS, only to callers allowed to get the /metrics URL")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "address of /healthz and /readyz")
	flag.StringVar(&pprofAddr, "pprof-bind-address", "", "address of /debug/pprof (empty or 0: off)")
	flag.BoolVar(&leaderElect, "leader-elect", true, "elect a leader, so only one of several manager replicas reconciles")
	flag.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	flag.Parse()

	level, err := zapcore.ParseLevel(logLevel)
	if err != nil {
		level = zapcore.InfoLevel
	}
	ctx := ctrl.SetupSignalHandler()
	// Logging and tracing follow the config-* ConfigMaps mounted under CONFIG_DIR (live);
	// controller-runtime serves the manager's metrics, so no admin server of our own.
	obs, err := observability.Start(ctx, observability.Options{
		Component: observability.ComponentController, DisableAdmin: true, DefaultLogLevel: level,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "manager:", err)
		os.Exit(1)
	}
	defer func() { _ = obs.Shutdown(context.Background()) }()
	log := obs.Log
	ctrl.SetLogger(log)
	mem, err := memlimit.Set(os.Getenv)
	if err != nil {
		log.Error(err, "setting the memory limit")
		os.Exit(1)
	}
	log.Info("process limits", "memoryLimit", mem.Limit, "memoryLimitFrom", mem.Source, "gomaxprocs", goruntime.GOMAXPROCS(0))

	cfg, err := controllers.ConfigFromOSEnv()
	if err != nil {
		log.Error(err, "invalid configuration")
		os.Exit(1)
	}

	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		log.Error(err, "registering Kubernetes types")
		os.Exit(1)
	}
	if err := v1beta1.AddToScheme(scheme); err != nil {
		log.Error(err, "registering KafkaChannel types")
		os.Exit(1)
	}
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		log.Error(err, "registering ResetOffset types")
		os.Exit(1)
	}

	metricsOpts := metricsserver.Options{BindAddress: metricsAddr, SecureServing: secureMetrics}
	if secureMetrics {
		// Token and access reviews, as kubebuilder v4 does: metrics can reveal channel names.
		metricsOpts.FilterProvider = filters.WithAuthenticationAndAuthorization
	}
	mgr, err := ctrl.NewManager(ctrl.GetConfigOrDie(), ctrl.Options{
		Scheme:                        scheme,
		Metrics:                       metricsOpts,
		HealthProbeBindAddress:        probeAddr,
		PprofBindAddress:              pprofAddr,
		LeaderElection:                leaderElect,
		LeaderElectionID:              "kafkachannel-manager.messaging.knative.dev",
		LeaderElectionNamespace:       cfg.OperatorNamespace,
		LeaderElectionReleaseOnCancel: true,
		Cache:                         controllers.CacheOptions(cfg),
	})
	if err != nil {
		log.Error(err, "creating the manager")
		os.Exit(1)
	}
	r := &controllers.KafkaChannelReconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		Recorder:  mgr.GetEventRecorder(controllers.FieldManager),
		Config:    cfg,
	}
	if err := r.SetupWithManager(mgr); err != nil {
		log.Error(err, "setting up the KafkaChannel controller")
		os.Exit(1)
	}
	ro := &controllers.ResetOffsetReconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		Recorder:  mgr.GetEventRecorder(controllers.FieldManager),
		Config:    cfg,
	}
	if err := ro.SetupWithManager(mgr); err != nil {
		log.Error(err, "setting up the ResetOffset controller")
		os.Exit(1)
	}
	if err := crmetrics.Registry.Register(&controllers.ChannelsCollector{Reader: mgr.GetClient()}); err != nil {
		log.Error(err, "registering the channels gauge")
		os.Exit(1)
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		log.Error(err, "adding the health check")
		os.Exit(1)
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		log.Error(err, "adding the readiness check")
		os.Exit(1)
	}

	log.Info("starting", "version", version.Version, "operatorNamespace", cfg.OperatorNamespace, "kafkaSecret", cfg.SecretName,
		"dispatcherImage", cfg.Dispatcher.Image, "receiverImage", cfg.Receiver.Image)
	if err := mgr.Start(ctx); err != nil {
		log.Error(err, "manager stopped")
		_ = obs.Shutdown(context.Background())
		os.Exit(1)
	}
}
