package localstack

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kafkachannel/kafkachannel/environments/proc"
	"github.com/kafkachannel/kafkachannel/internal/naming"
)

// NodeName is what spec.nodeName reads as for local pods.
const NodeName = "localnode"

// resyncPeriod bounds how stale the node's view can get without an event (probe results,
// minReadySeconds and progress deadlines are time based).
const resyncPeriod = time.Second

// Node stands in for the Deployment controller and kubelet, for the operator's own Deployments
// only: those labelled app.kubernetes.io/part-of=kafkachannel in Namespace. It runs each replica
// as a local process of BinDir, writes the Deployments' status and keeps the pods file current.
type Node struct {
	// Config reaches the API server.
	Config *rest.Config
	// Namespace is the operator namespace whose Deployments the node runs.
	Namespace string
	// BinDir holds the binaries the containers' commands name (/dispatcher -> BinDir/dispatcher).
	BinDir string
	// Dir holds one directory per pod (volumes, logs).
	Dir string
	// Kubeconfig is the path handed to every pod as KUBECONFIG: its API access.
	Kubeconfig string
	// PodsFile, if set, is rewritten with one line per replica whenever they change.
	PodsFile string
	// FakeComponents lists app.kubernetes.io/component values (e.g. "dispatcher") whose
	// replicas are not run: each such pod is Ready the moment it is created and has no
	// process, no ports and no volumes, like a kwok node's. The Deployment's status is written
	// exactly as for real replicas, so whatever reads it (the manager's DispatcherReady) cannot
	// tell; whatever the process itself would have written (a dispatcher's subscriber status)
	// is never written. For control-plane figures at a scale the machine cannot run.
	FakeComponents []string
	Log            logr.Logger

	client client.Client
	cache  cache.Cache

	mu     sync.Mutex
	deps   map[types.NamespacedName]*deployState
	pokeCh chan struct{}
	wg     sync.WaitGroup
	runCtx context.Context
}

type deployState struct {
	pods []*pod
	// lastProgress is when the rollout last moved, for the Progressing condition's deadline.
	lastProgress time.Time
	progressKey  string
}

// Start runs the node until ctx ends; Stop then waits for every process to exit.
func (n *Node) Start(ctx context.Context) error {
	scheme := runtime.NewScheme()
	_ = corev1.AddToScheme(scheme)
	_ = appsv1.AddToScheme(scheme)
	sel := labels.SelectorFromSet(labels.Set{naming.LabelPartOf: naming.PartOf})
	c, err := cache.New(n.Config, cache.Options{
		Scheme:            scheme,
		DefaultNamespaces: map[string]cache.Config{n.Namespace: {}},
		ByObject:          map[client.Object]cache.ByObject{&appsv1.Deployment{}: {Label: sel}},
		SyncPeriod:        ptr(10 * time.Minute),
	})
	if err != nil {
		return fmt.Errorf("creating the local node's cache: %w", err)
	}
	n.cache = c
	n.client, err = client.New(n.Config, client.Options{Scheme: scheme, Cache: &client.CacheOptions{Reader: c}})
	if err != nil {
		return fmt.Errorf("creating the local node's client: %w", err)
	}
	n.deps = map[types.NamespacedName]*deployState{}
	n.pokeCh = make(chan struct{}, 1)
	n.runCtx = ctx
	for _, obj := range []client.Object{&appsv1.Deployment{}, &corev1.Secret{}, &corev1.ConfigMap{}} {
		inf, err := c.GetInformer(ctx, obj)
		if err != nil {
			return fmt.Errorf("watching %T: %w", obj, err)
		}
		_, _ = inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
			AddFunc:    func(any) { n.poke() },
			UpdateFunc: func(any, any) { n.poke() },
			DeleteFunc: func(any) { n.poke() },
		})
	}
	go func() { _ = c.Start(ctx) }()
	if !c.WaitForCacheSync(ctx) {
		return fmt.Errorf("the local node's cache did not sync")
	}
	n.wg.Add(1)
	go n.loop(ctx)
	return nil
}

func ptr[T any](v T) *T { return &v }

// Wait blocks until every pod process has stopped, after the Start context ended.
func (n *Node) Wait() { n.wg.Wait() }

func (n *Node) poke() {
	select {
	case n.pokeCh <- struct{}{}:
	default:
	}
}

func (n *Node) loop(ctx context.Context) {
	defer n.wg.Done()
	t := time.NewTicker(resyncPeriod)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			n.stopAll()
			return
		case <-n.pokeCh:
		case <-t.C:
		}
		if err := n.sync(ctx); err != nil && ctx.Err() == nil {
			n.Log.Error(err, "local node sync")
		}
	}
}

func (n *Node) stopAll() {
	n.mu.Lock()
	var all []*pod
	for _, st := range n.deps {
		all = append(all, st.pods...)
		st.pods = nil
	}
	n.mu.Unlock()
	for _, p := range all {
		p.cancel()
	}
	for _, p := range all {
		<-p.done
	}
	n.writePodsFile()
}

func (n *Node) getSecret(ctx context.Context, ns, name string) (*corev1.Secret, error) {
	s := &corev1.Secret{}
	if err := n.client.Get(ctx, key(ns, name), s); err != nil {
		return nil, err
	}
	return s, nil
}

func (n *Node) getConfigMap(ctx context.Context, ns, name string) (*corev1.ConfigMap, error) {
	cm := &corev1.ConfigMap{}
	if err := n.client.Get(ctx, key(ns, name), cm); err != nil {
		return nil, err
	}
	return cm, nil
}

// sync brings every Deployment's pods to what its spec asks and writes its status.
func (n *Node) sync(ctx context.Context) error {
	var list appsv1.DeploymentList
	if err := n.client.List(ctx, &list, client.InNamespace(n.Namespace)); err != nil {
		return fmt.Errorf("listing Deployments: %w", err)
	}
	seen := map[types.NamespacedName]bool{}
	var errs []error
	for i := range list.Items {
		d := &list.Items[i]
		k := key(d.Namespace, d.Name)
		seen[k] = true
		if err := n.syncDeployment(ctx, d); err != nil {
			errs = append(errs, fmt.Errorf("deployment %s: %w", k, err))
		}
	}
	n.mu.Lock()
	for k, st := range n.deps {
		if !seen[k] {
			n.Log.Info("deployment gone; stopping its pods", "deployment", k.String())
			for _, p := range st.pods {
				p.cancel()
			}
			delete(n.deps, k)
		}
	}
	pods := n.allPodsLocked()
	n.mu.Unlock()
	// Secrets and ConfigMaps may have changed: volumes follow them while pods run.
	for _, p := range pods {
		if p.info().PID != 0 {
			if err := n.refreshVolumes(ctx, p); err != nil {
				n.Log.V(1).Info("refreshing volumes", "pod", p.name, "error", err.Error())
			}
		}
	}
	n.writePodsFile()
	if len(errs) > 0 {
		return errs[0]
	}
	return nil
}

func (n *Node) allPodsLocked() []*pod {
	var out []*pod
	for _, st := range n.deps {
		out = append(out, st.pods...)
	}
	return out
}

// TemplateHash identifies a pod template, like the pod-template-hash of a ReplicaSet.
func TemplateHash(t *corev1.PodTemplateSpec) string {
	b, _ := json.Marshal(t)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])[:10]
}

func scaled(v *intstr.IntOrString, total int, roundUp bool, def string) int {
	x := intstr.FromString(def)
	if v != nil {
		x = *v
	}
	r, err := intstr.GetScaledValueFromIntOrPercent(&x, total, roundUp)
	if err != nil {
		return 0
	}
	return r
}

func (n *Node) syncDeployment(ctx context.Context, d *appsv1.Deployment) error {
	k := key(d.Namespace, d.Name)
	desired := 1
	if d.Spec.Replicas != nil {
		desired = int(*d.Spec.Replicas)
	}
	deleting := d.DeletionTimestamp != nil
	if deleting {
		desired = 0
	}
	hash := TemplateHash(&d.Spec.Template)
	now := time.Now()
	minReady := time.Duration(d.Spec.MinReadySeconds) * time.Second

	n.mu.Lock()
	st := n.deps[k]
	if st == nil {
		st = &deployState{lastProgress: now}
		n.deps[k] = st
	}
	var cur, old []*pod
	for _, p := range st.pods {
		if p.hash == hash {
			cur = append(cur, p)
		} else {
			old = append(old, p)
		}
	}
	var stop []*pod
	// Scale down first the replicas that are not ready, then the newest.
	sortForScaleDown(cur)
	for len(cur) > desired {
		stop = append(stop, cur[len(cur)-1])
		cur = cur[:len(cur)-1]
	}
	maxSurge := scaled(rollingParam(d, true), desired, true, "25%")
	maxUnavailable := scaled(rollingParam(d, false), desired, false, "25%")
	if maxSurge == 0 && maxUnavailable == 0 {
		maxUnavailable = 1
	}
	recreate := d.Spec.Strategy.Type == appsv1.RecreateDeploymentStrategyType
	var start int
	switch {
	case len(old) == 0:
		start = desired - len(cur)
	case recreate:
		stop = append(stop, old...)
		old = nil
	default:
		// Rolling update: surge new replicas, then retire old ones as long as enough stay ready.
		start = max(0, min(desired-len(cur), desired+maxSurge-len(cur)-len(old)))
		ready := 0
		for _, p := range append(append([]*pod{}, cur...), old...) {
			if _, a := p.isReady(minReady, now); a {
				ready++
			}
		}
		minAvailable := desired - maxUnavailable
		sortForScaleDown(old)
		var keep []*pod
		for _, p := range old {
			_, a := p.isReady(minReady, now)
			switch {
			case !a:
				stop = append(stop, p)
			case ready-1 >= minAvailable:
				stop = append(stop, p)
				ready--
			default:
				keep = append(keep, p)
			}
		}
		old = keep
	}
	for i := 0; i < start; i++ {
		p, err := n.newPod(d, hash)
		if err != nil {
			n.mu.Unlock()
			return err
		}
		cur = append(cur, p)
	}
	st.pods = append(append([]*pod{}, cur...), old...)
	n.mu.Unlock()

	for _, p := range stop {
		p.log.Info("stopping replica")
		p.cancel()
	}
	if deleting {
		for _, p := range stop {
			<-p.done
		}
		return n.releaseFinalizers(ctx, d)
	}
	return n.writeStatus(ctx, d, st, cur, old, desired, maxUnavailable, minReady, now)
}

func rollingParam(d *appsv1.Deployment, surge bool) *intstr.IntOrString {
	ru := d.Spec.Strategy.RollingUpdate
	if ru == nil {
		return nil
	}
	if surge {
		return ru.MaxSurge
	}
	return ru.MaxUnavailable
}

func sortForScaleDown(ps []*pod) {
	now := time.Now()
	sort.SliceStable(ps, func(i, j int) bool {
		ri, _ := ps[i].isReady(0, now)
		rj, _ := ps[j].isReady(0, now)
		return ri && !rj
	})
}

// releaseFinalizers stands in for the garbage collector, which envtest does not run: a
// Deployment deleted with foreground or orphan propagation would otherwise never go away.
func (n *Node) releaseFinalizers(ctx context.Context, d *appsv1.Deployment) error {
	keep := slices.DeleteFunc(slices.Clone(d.Finalizers), func(f string) bool {
		return f == metav1.FinalizerDeleteDependents || f == metav1.FinalizerOrphanDependents
	})
	if len(keep) == len(d.Finalizers) {
		return nil
	}
	orig := d.DeepCopy()
	d.Finalizers = keep
	if err := n.client.Patch(ctx, d, client.MergeFrom(orig)); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("removing the garbage collector's finalizers: %w", err)
	}
	return nil
}

func (n *Node) newPod(d *appsv1.Deployment, hash string) (*pod, error) {
	name := newPodName(d.Name, hash)
	p := &pod{
		node: n, name: name, uid: newUID(), namespace: d.Namespace, deployment: d.Name, hash: hash,
		template: *d.Spec.Template.DeepCopy(), dir: filepath.Join(n.Dir, "run", name),
		hostPorts: map[int32]int{}, done: make(chan struct{}),
	}
	p.logFile = filepath.Join(p.dir, "container.log")
	p.log = n.Log.WithValues("deployment", d.Name, "pod", name)
	if p.template.Labels == nil {
		p.template.Labels = map[string]string{}
	}
	p.template.Labels["pod-template-hash"] = hash
	if n.isFake(d) {
		ctx, cancel := context.WithCancel(n.runCtx)
		p.cancel, p.fake = cancel, true
		p.log.V(1).Info("starting fake replica")
		go p.runFake(ctx)
		return p, nil
	}
	if err := os.MkdirAll(p.dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating the pod directory: %w", err)
	}
	for _, c := range p.template.Spec.Containers {
		for _, cp := range c.Ports {
			hp, err := proc.FreePort()
			if err != nil {
				return nil, err
			}
			p.hostPorts[cp.ContainerPort] = hp
		}
	}
	ctx, cancel := context.WithCancel(n.runCtx)
	p.cancel = cancel
	p.log.Info("starting replica", "ports", p.portMap())
	go p.run(ctx)
	return p, nil
}

// isFake says whether the Deployment's replicas are faked (FakeComponents), by its component
// label.
func (n *Node) isFake(d *appsv1.Deployment) bool {
	c := d.Labels[naming.LabelComponent]
	return c != "" && slices.Contains(n.FakeComponents, c)
}

// writeStatus reports the replicas the way the Deployment controller does, so the manager reads
// honest Available and Progressing conditions.
func (n *Node) writeStatus(ctx context.Context, d *appsv1.Deployment, st *deployState, cur, old []*pod,
	desired, maxUnavailable int, minReady time.Duration, now time.Time) error {
	var ready, available, updatedAvailable int
	for _, p := range append(append([]*pod{}, cur...), old...) {
		r, a := p.isReady(minReady, now)
		if r {
			ready++
		}
		if a {
			available++
		}
	}
	for _, p := range cur {
		if _, a := p.isReady(minReady, now); a {
			updatedAvailable++
		}
	}
	s := appsv1.DeploymentStatus{
		ObservedGeneration:  d.Generation,
		Replicas:            int32(len(cur) + len(old)),
		UpdatedReplicas:     int32(len(cur)),
		ReadyReplicas:       int32(ready),
		AvailableReplicas:   int32(available),
		UnavailableReplicas: int32(max(0, len(cur)+len(old)-available)),
	}
	availCond := appsv1.DeploymentCondition{Type: appsv1.DeploymentAvailable, Status: corev1.ConditionTrue,
		Reason: "MinimumReplicasAvailable", Message: "Deployment has minimum availability."}
	if available < desired-maxUnavailable {
		availCond.Status, availCond.Reason, availCond.Message = corev1.ConditionFalse, "MinimumReplicasUnavailable",
			"Deployment does not have minimum availability."
	}
	progressKey := fmt.Sprintf("%d/%d/%d/%d", len(cur), len(old), ready, available)
	if progressKey != st.progressKey {
		st.progressKey, st.lastProgress = progressKey, now
	}
	rs := d.Name + "-" + TemplateHash(&d.Spec.Template)
	progCond := appsv1.DeploymentCondition{Type: appsv1.DeploymentProgressing, Status: corev1.ConditionTrue,
		Reason: "ReplicaSetUpdated", Message: fmt.Sprintf("ReplicaSet %q is progressing.", rs)}
	deadline := 600 * time.Second
	if d.Spec.ProgressDeadlineSeconds != nil {
		deadline = time.Duration(*d.Spec.ProgressDeadlineSeconds) * time.Second
	}
	switch {
	case len(cur) == desired && len(old) == 0 && updatedAvailable == desired:
		progCond.Reason, progCond.Message = "NewReplicaSetAvailable", fmt.Sprintf("ReplicaSet %q has successfully progressed.", rs)
	case now.Sub(st.lastProgress) > deadline:
		progCond.Status, progCond.Reason, progCond.Message = corev1.ConditionFalse, "ProgressDeadlineExceeded",
			fmt.Sprintf("ReplicaSet %q has timed out progressing.", rs)
	}
	for _, c := range []appsv1.DeploymentCondition{availCond, progCond} {
		c.LastUpdateTime = metav1.NewTime(now)
		c.LastTransitionTime = metav1.NewTime(now)
		for _, old := range d.Status.Conditions {
			if old.Type != c.Type {
				continue
			}
			if old.Status == c.Status {
				c.LastTransitionTime = old.LastTransitionTime
			}
			if old.Status == c.Status && old.Reason == c.Reason && old.Message == c.Message {
				c.LastUpdateTime = old.LastUpdateTime
			}
		}
		s.Conditions = append(s.Conditions, c)
	}
	if equality.Semantic.DeepEqual(s, d.Status) {
		return nil
	}
	orig := d.DeepCopy()
	d.Status = s
	if err := n.client.Status().Patch(ctx, d, client.MergeFrom(orig)); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("writing the Deployment status: %w", err)
	}
	return nil
}

// Pods is a snapshot of every replica the node runs, sorted by deployment and name.
func (n *Node) Pods() []PodInfo {
	n.mu.Lock()
	pods := n.allPodsLocked()
	n.mu.Unlock()
	out := make([]PodInfo, 0, len(pods))
	for _, p := range pods {
		out = append(out, p.info())
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Deployment != out[j].Deployment {
			return out[i].Deployment < out[j].Deployment
		}
		return out[i].Name < out[j].Name
	})
	return out
}

// ReadyEndpoints lists 127.0.0.1:port of the ready replicas of a Deployment for a container port.
func (n *Node) ReadyEndpoints(deployment string, containerPort int32) []string {
	var out []string
	for _, p := range n.Pods() {
		if p.Deployment == deployment && p.Ready && p.PID != 0 && p.Ports[containerPort] != 0 {
			out = append(out, fmt.Sprintf("127.0.0.1:%d", p.Ports[containerPort]))
		}
	}
	return out
}

var podsFileMu sync.Mutex

// writePodsFile keeps PodsFile at one line per running replica:
// namespace deployment replica pid metrics-URL health-URL.
func (n *Node) writePodsFile() {
	if n.PodsFile == "" {
		return
	}
	var b strings.Builder
	for _, p := range n.Pods() {
		if p.PID == 0 {
			continue
		}
		fmt.Fprintf(&b, "%s %s %s %d %s %s\n", p.Namespace, p.Deployment, p.Name, p.PID, orDash(p.MetricsURL), orDash(p.HealthURL))
	}
	podsFileMu.Lock()
	defer podsFileMu.Unlock()
	if cur, err := os.ReadFile(n.PodsFile); err == nil && string(cur) == b.String() {
		return
	}
	tmp := n.PodsFile + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err == nil {
		_ = os.Rename(tmp, n.PodsFile)
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
