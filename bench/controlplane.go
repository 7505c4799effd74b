package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"time"

	"github.com/go-logr/logr"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/kafkachannel/kafkachannel/api/v1beta1"
	"github.com/kafkachannel/kafkachannel/environments/localstack"
	"github.com/kafkachannel/kafkachannel/internal/naming"
	"github.com/kafkachannel/kafkachannel/internal/observability"
)

// ScaleOptions size the control-plane run (S1, S3).
type ScaleOptions struct {
	// Dir is the local stack's directory; BinDir holds manager, dispatcher and receiver.
	Dir, BinDir string
	// Channels are created at once, each with Subscribers subscribers.
	Channels, Subscribers int
	// Idle is how long reconciles and status writes are counted after all are Ready.
	Idle time.Duration
	// Changes is the number of spec changes timed for S3.
	Changes int
	// Budget bounds each wait (all Ready, one change's Deployment update).
	Budget time.Duration
	// PprofAddr, if set, is where the manager serves /debug/pprof during the run.
	PprofAddr string
}

// ScaleResult holds the control-plane figures.
type ScaleResult struct {
	Channels, Subscribers int
	// ToReady is from the first create to every channel Ready at its generation.
	ToReady time.Duration
	// RSSReady and RSSIdle are the manager's VmRSS in MB when all were Ready and after the
	// idle window; HWMMB is its peak (VmHWM) over the whole run.
	RSSReady, RSSIdle, HWMMB float64
	// Idle is the idle window; Reconciles the manager's controller_runtime_reconcile_total
	// delta over it (every controller), ChannelWrites the channels' resourceVersion changes and
	// DeploymentWrites the dispatcher Deployments'.
	Idle                                        time.Duration
	Reconciles, ChannelWrites, DeploymentWrites int
	// ReconcilesByController splits Reconciles.
	ReconcilesByController map[string]int
	// Latencies are S3's: a channel's numPartitions grows -> its dispatcher Deployment's
	// spec.replicas follows, as seen by a watch; sorted.
	Latencies Latencies
}

// scaleNamespace holds the channels of the run.
const scaleNamespace = "scale"

// Scale runs S1 and S3 on a local stack whose dispatcher pods are faked (LOCALSTACK_FAKE_PODS):
// the control plane is real (API server, the manager, kfake topics), the dispatchers are not,
// so status.subscribers readiness, which only a running dispatcher writes, is not measured.
func Scale(ctx context.Context, o ScaleOptions) (ScaleResult, error) {
	res := ScaleResult{Channels: o.Channels, Subscribers: o.Subscribers, Idle: o.Idle}
	// The clients here log nothing worth reading; without a logger controller-runtime warns.
	ctrllog.SetLogger(logr.Discard())
	s, err := localstack.Start(ctx, localstack.Options{
		Dir: o.Dir, BinDir: o.BinDir, FakeComponents: []string{naming.ComponentDispatch},
		// Two replicas at most per channel, so growing a channel from one partition to two
		// changes its Deployment (spec.replicas) for S3.
		ManagerEnv:  map[string]string{"DISPATCHER_REPLICAS": "2"},
		ManagerArgs: pprofArgs(o.PprofAddr),
	})
	if err != nil {
		return res, fmt.Errorf("starting the local stack: %w", err)
	}
	defer s.Stop()
	c := s.Client
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: scaleNamespace}}); err != nil {
		return res, fmt.Errorf("creating namespace %s: %w", scaleNamespace, err)
	}
	names := make([]string, o.Channels)
	for i := range names {
		names[i] = fmt.Sprintf("ch-%04d", i)
	}

	// S1: every channel at once, from a few clients as a GitOps apply would.
	start := time.Now()
	if _, err := parallel(len(names), 16, func(i int) error {
		name := names[i]
		var subs []v1beta1.SubscriberSpec
		for j := range o.Subscribers {
			subs = append(subs, Subscriber(fmt.Sprintf("%s-sub-%d", name, j), fmt.Sprintf("http://127.0.0.1:9/%s/%d", name, j)))
		}
		ch := &v1beta1.KafkaChannel{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: scaleNamespace},
			Spec: v1beta1.KafkaChannelSpec{NumPartitions: 1, Subscribers: subs}}
		return c.Create(ctx, ch)
	}); err != nil {
		return res, fmt.Errorf("creating the channels: %w", err)
	}
	if err := waitChannels(ctx, c, scaleNamespace, o.Channels, o.Budget, channelReady); err != nil {
		return res, err
	}
	res.ToReady = time.Since(start)
	pid := s.ManagerPID()
	if res.RSSReady, err = procStatusMB(pid, "VmRSS"); err != nil {
		return res, err
	}

	// Idle: let the last writes of the rollout (Deployment status, conditions) settle for a
	// moment, then count.
	time.Sleep(5 * time.Second)
	before, err := reconcileTotals(s.ManagerMetricsURL())
	if err != nil {
		return res, err
	}
	// Creating the channels reconciled each at least once: none counted means the counter is
	// not being read, and "0 while idle" would prove nothing.
	if before["kafkachannel"] < o.Channels {
		return res, fmt.Errorf("read %d kafkachannel reconciles after creating %d channels from %s: the reconcile counter is not being read", before["kafkachannel"], o.Channels, s.ManagerMetricsURL())
	}
	wctx, cancel := context.WithTimeout(ctx, o.Idle)
	chWrites, depWrites := make(chan int, 1), make(chan int, 1)
	go func() { chWrites <- countModified(wctx, s, &v1beta1.KafkaChannelList{}, scaleNamespace) }()
	go func() { depWrites <- countModified(wctx, s, &appsv1.DeploymentList{}, s.Opts.OperatorNamespace) }()
	<-wctx.Done()
	cancel()
	res.ChannelWrites, res.DeploymentWrites = <-chWrites, <-depWrites
	after, err := reconcileTotals(s.ManagerMetricsURL())
	if err != nil {
		return res, err
	}
	res.ReconcilesByController = map[string]int{}
	for k, v := range after {
		if d := v - before[k]; d > 0 {
			res.ReconcilesByController[k] = d
			res.Reconciles += d
		}
	}
	if res.RSSIdle, err = procStatusMB(pid, "VmRSS"); err != nil {
		return res, err
	}

	// S3: grow one channel at a time and time its Deployment's update.
	var lat []time.Duration
	for i := 0; i < o.Changes && i < len(names); i++ {
		d, err := timeChange(ctx, s, names[i], o.Budget)
		if err != nil {
			return res, err
		}
		lat = append(lat, d)
	}
	res.Latencies = percentiles(lat)
	if res.HWMMB, err = procStatusMB(pid, "VmHWM"); err != nil {
		return res, err
	}
	return res, nil
}

func pprofArgs(addr string) []string {
	if addr == "" {
		return nil
	}
	return []string{"--pprof-bind-address=" + addr}
}

func channelReady(ch *v1beta1.KafkaChannel) bool {
	if ch.Status.ObservedGeneration != ch.Generation {
		return false
	}
	for _, cond := range ch.Status.Conditions {
		if cond.Type == v1beta1.ConditionReady {
			return cond.Status == metav1.ConditionTrue
		}
	}
	return false
}

// waitChannels polls the channels of ns until want of them are ready by ready; on timeout
// the error counts the others by why they are not.
func waitChannels(ctx context.Context, c client.Client, ns string, want int, budget time.Duration, ready func(*v1beta1.KafkaChannel) bool) error {
	deadline := time.Now().Add(budget)
	for {
		var list v1beta1.KafkaChannelList
		if err := c.List(ctx, &list, client.InNamespace(ns)); err != nil {
			return fmt.Errorf("listing channels: %w", err)
		}
		n := 0
		why := map[string]int{}
		for i := range list.Items {
			ch := &list.Items[i]
			if ready(ch) {
				n++
				continue
			}
			reason := fmt.Sprintf("observedGeneration %d of %d", ch.Status.ObservedGeneration, ch.Generation)
			for _, cond := range ch.Status.Conditions {
				if cond.Type == v1beta1.ConditionReady {
					reason = cond.Reason + ": " + cond.Message
				}
			}
			why[reason]++
		}
		if n >= want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d channels ready after %s; the others: %v", n, want, budget, why)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// countModified counts MODIFIED events (resourceVersion changes) of the objects in ns until
// ctx ends.
func countModified(ctx context.Context, s *localstack.Stack, list client.ObjectList, ns string) int {
	wc, err := client.NewWithWatch(s.Config, client.Options{Scheme: localstack.Scheme()})
	if err != nil {
		return -1
	}
	// From "now": a list's resourceVersion, so the initial objects are not counted as adds.
	if err := wc.List(ctx, list, client.InNamespace(ns)); err != nil {
		return -1
	}
	w, err := wc.Watch(ctx, list, client.InNamespace(ns), &client.ListOptions{Raw: &metav1.ListOptions{
		ResourceVersion: list.GetResourceVersion()}})
	if err != nil {
		return -1
	}
	defer w.Stop()
	n := 0
	for {
		select {
		case <-ctx.Done():
			return n
		case ev, ok := <-w.ResultChan():
			if !ok {
				return n
			}
			if ev.Type == watch.Modified {
				n++
			}
		}
	}
}

// timeChange grows channel name from one partition to two and waits for its dispatcher
// Deployment's spec.replicas to read 2.
func timeChange(ctx context.Context, s *localstack.Stack, name string, budget time.Duration) (time.Duration, error) {
	wc, err := client.NewWithWatch(s.Config, client.Options{Scheme: localstack.Scheme()})
	if err != nil {
		return 0, err
	}
	depName := naming.DispatcherName(scaleNamespace, name)
	var deps appsv1.DeploymentList
	ns := s.Opts.OperatorNamespace
	if err := wc.List(ctx, &deps, client.InNamespace(ns)); err != nil {
		return 0, err
	}
	wctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	w, err := wc.Watch(wctx, &deps, client.InNamespace(ns), &client.ListOptions{Raw: &metav1.ListOptions{
		ResourceVersion: deps.GetResourceVersion(), FieldSelector: "metadata.name=" + depName}})
	if err != nil {
		return 0, err
	}
	defer w.Stop()
	ch := &v1beta1.KafkaChannel{}
	if err := s.Client.Get(ctx, client.ObjectKey{Namespace: scaleNamespace, Name: name}, ch); err != nil {
		return 0, err
	}
	orig := ch.DeepCopy()
	ch.Spec.NumPartitions = 2
	t0 := time.Now()
	if err := s.Client.Patch(ctx, ch, client.MergeFrom(orig)); err != nil {
		return 0, fmt.Errorf("growing %s: %w", name, err)
	}
	for {
		select {
		case <-wctx.Done():
			return 0, fmt.Errorf("deployment %s not updated within %s of growing channel %s", depName, budget, name)
		case ev, ok := <-w.ResultChan():
			if !ok {
				return 0, fmt.Errorf("the watch of %s ended", depName)
			}
			if d, isDep := ev.Object.(*appsv1.Deployment); isDep && ptr.Deref(d.Spec.Replicas, 1) == 2 {
				return time.Since(t0), nil
			}
		}
	}
}

// scrape reads and parses a Prometheus text endpoint.
func scrape(url string) (map[string]*dto.MetricFamily, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, fmt.Errorf("reading the metrics of %s: %w", url, err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("parsing the metrics of %s: %w", url, err)
	}
	return fams, nil
}

// reconcileTotals reads controller_runtime_reconcile_total per controller (all results).
func reconcileTotals(url string) (map[string]int, error) {
	fams, err := scrape(url)
	if err != nil {
		return nil, err
	}
	out := map[string]int{}
	if f := fams["controller_runtime_reconcile_total"]; f != nil {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "controller" {
					out[l.GetValue()] += int(m.GetCounter().GetValue())
				}
			}
		}
	}
	return out, nil
}

// RealIdleOptions size S2 measured on the real `dispatcher` binary in the local stack.
type RealIdleOptions struct {
	Dir, BinDir string
	// Channels of Partitions partitions each get one subscriber (a sink answering 202).
	Channels, Partitions int
	// Settle is how long all idle before the measurement; Window how long requests are
	// counted.
	Settle, Window time.Duration
	Budget         time.Duration
}

// RealIdle is S2 on the binary a pod runs: a few channels on the local stack with real
// dispatcher processes (with their API-server watch and status writes), idle; Scale fakes them.
func RealIdle(ctx context.Context, o RealIdleOptions) (IdleResult, error) {
	ctrllog.SetLogger(logr.Discard())
	res := IdleResult{Channels: o.Channels, Partitions: o.Partitions, Window: o.Window}
	sink, err := startCountingSink(-1)
	if err != nil {
		return res, err
	}
	defer func() { _ = sink.srv.Close() }()
	s, err := localstack.Start(ctx, localstack.Options{Dir: o.Dir, BinDir: o.BinDir})
	if err != nil {
		return res, fmt.Errorf("starting the local stack: %w", err)
	}
	defer s.Stop()
	if s.Kafka == nil {
		return res, errors.New("the sample needs the embedded Kafka, whose requests it counts (unset KAFKA_BOOTSTRAP_SERVERS and KAFKA)")
	}
	counts, reset := countRequests(s.Kafka)
	c := s.Client
	const ns = "idle"
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		return res, fmt.Errorf("creating namespace %s: %w", ns, err)
	}
	var deps []string
	for i := range o.Channels {
		name := fmt.Sprintf("idle-%02d", i)
		ch := &v1beta1.KafkaChannel{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: v1beta1.KafkaChannelSpec{NumPartitions: int32(o.Partitions),
				Subscribers: []v1beta1.SubscriberSpec{Subscriber(name+"-sub", sink.URL+name)}}}
		if err := c.Create(ctx, ch); err != nil {
			return res, fmt.Errorf("creating channel %s: %w", name, err)
		}
		deps = append(deps, naming.DispatcherName(ns, name))
	}
	if err := waitChannels(ctx, c, ns, o.Channels, o.Budget, subscribersReady); err != nil {
		return res, err
	}
	time.Sleep(o.Settle)
	reset()
	time.Sleep(o.Window)
	res.Requests, res.Counted = counts(), true

	_, port, _ := net.SplitHostPort(s.Brokers[0])
	for _, p := range s.Node.Pods() {
		if !slices.Contains(deps, p.Deployment) || p.PID == 0 {
			continue
		}
		g, err := gauge(fmt.Sprintf("http://127.0.0.1:%d/metrics", p.Ports[observability.MetricsPort]), "go_goroutines")
		if err != nil {
			return res, fmt.Errorf("dispatcher %s: %w", p.Name, err)
		}
		if err := res.sample(p.PID, port, g); err != nil {
			return res, err
		}
	}
	if res.n != o.Channels {
		return res, fmt.Errorf("found %d running dispatcher processes for %d channels", res.n, o.Channels)
	}
	res.average()
	return res, nil
}

// subscribersReady is a channel Ready at its generation with every subscriber Ready in status
// (which running dispatchers write).
func subscribersReady(ch *v1beta1.KafkaChannel) bool {
	ok := channelReady(ch) && len(ch.Status.Subscribers) == len(ch.Spec.Subscribers)
	for _, st := range ch.Status.Subscribers {
		ok = ok && st.Ready == string(metav1.ConditionTrue)
	}
	return ok
}

// gauge reads one unlabelled gauge from a Prometheus text endpoint.
func gauge(url, name string) (float64, error) {
	fams, err := scrape(url)
	if err != nil {
		return 0, err
	}
	f := fams[name]
	if f == nil || len(f.GetMetric()) == 0 {
		return 0, fmt.Errorf("no %s in %s", name, url)
	}
	return f.GetMetric()[0].GetGauge().GetValue(), nil
}
