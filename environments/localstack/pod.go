package localstack

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/kafkachannel/kafkachannel/environments/proc"
	"github.com/kafkachannel/kafkachannel/internal/observability"
)

// Restart backoff of a crashed container: kubelet starts at 10 s and caps at 5 min; locally a
// shorter curve keeps the demo and the tests responsive while still not spinning.
const (
	restartBackoffMin = 500 * time.Millisecond
	restartBackoffMax = 20 * time.Second
	// A container that ran this long before exiting resets the backoff, like kubelet does.
	restartBackoffReset = 10 * time.Second
	// Readiness is probed at most this far apart so a replica turns ready quickly; the
	// probe's failure and success thresholds are honoured as written.
	maxReadinessPeriod = time.Second
	// Grace period cap on shutdown: a local demo should stop in seconds.
	maxGracePeriod = 10 * time.Second
)

// pod is one replica of a Deployment run as a local process, restarted on exit.
type pod struct {
	node       *Node
	name       string
	uid        string
	namespace  string
	deployment string
	hash       string
	template   corev1.PodTemplateSpec
	dir        string
	logFile    string
	// hostPorts maps each containerPort to the host port the process listens on.
	hostPorts map[int32]int
	log       logr.Logger

	cancel context.CancelFunc
	done   chan struct{}
	// fake pods run no process (Node.FakeComponents).
	fake bool

	mu         sync.Mutex
	pid        int
	ready      bool
	readySince time.Time
	restarts   int
	// failure is why the container is not running (e.g. an unresolvable secretKeyRef), empty
	// while it runs.
	failure string
}

// PodInfo is a snapshot of one replica, for .demo/pods, tests and the demo.
type PodInfo struct {
	Namespace  string
	Deployment string
	Name       string
	PID        int
	Ready      bool
	Restarts   int
	// Failure says why the container is not running, if it is not.
	Failure string
	// Fake replicas run no process (Node.FakeComponents): PID stays 0 while Ready.
	Fake bool
	// TemplateHash identifies the pod template the replica runs.
	TemplateHash string
	// Ports maps container port numbers to host ports.
	Ports map[int32]int
	// MetricsURL and HealthURL are on the host port of the `metrics` container port.
	MetricsURL string
	HealthURL  string
	LogFile    string
}

func (p *pod) info() PodInfo {
	p.mu.Lock()
	defer p.mu.Unlock()
	pi := PodInfo{
		Namespace: p.namespace, Deployment: p.deployment, Name: p.name, PID: p.pid, Ready: p.ready,
		Restarts: p.restarts, Failure: p.failure, TemplateHash: p.hash, Ports: map[int32]int{},
		LogFile: p.logFile, Fake: p.fake,
	}
	for k, v := range p.hostPorts {
		pi.Ports[k] = v
	}
	if hp := p.portByName("metrics", observability.MetricsPort); hp != 0 {
		pi.MetricsURL = fmt.Sprintf("http://127.0.0.1:%d/metrics", hp)
		pi.HealthURL = fmt.Sprintf("http://127.0.0.1:%d/healthz", hp)
	}
	if c := p.container(); c != nil && c.LivenessProbe != nil && c.LivenessProbe.HTTPGet != nil {
		if hp := p.resolvePort(c.LivenessProbe.HTTPGet.Port); hp != 0 {
			pi.HealthURL = fmt.Sprintf("http://127.0.0.1:%d%s", hp, c.LivenessProbe.HTTPGet.Path)
		}
	}
	return pi
}

func (p *pod) container() *corev1.Container {
	if len(p.template.Spec.Containers) == 0 {
		return nil
	}
	return &p.template.Spec.Containers[0]
}

// portByName finds the host port of a named container port, falling back to a port number.
func (p *pod) portByName(name string, fallback int32) int {
	if c := p.container(); c != nil {
		for _, cp := range c.Ports {
			if cp.Name == name {
				return p.hostPorts[cp.ContainerPort]
			}
		}
	}
	return p.hostPorts[fallback]
}

func (p *pod) resolvePort(port intstr.IntOrString) int {
	if port.Type == intstr.String {
		return p.portByName(port.StrVal, -1)
	}
	return p.hostPorts[port.IntVal]
}

func (p *pod) isReady(minReady time.Duration, now time.Time) (ready, available bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ready, p.ready && now.Sub(p.readySince) >= minReady
}

func newPodName(deployment, hash string) string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%s-%s-%s", deployment, hash, hex.EncodeToString(b)[:5])
}

func newUID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6] = (b[6] & 0x0f) | 0x40
	b[8] = (b[8] & 0x3f) | 0x80
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// runFake stands in for run when the pod is faked: Ready at once, with no process, until
// stopped.
func (p *pod) runFake(ctx context.Context) {
	defer close(p.done)
	p.setReady(true)
	<-ctx.Done()
}

// run keeps the container running until ctx ends, like restartPolicy Always.
func (p *pod) run(ctx context.Context) {
	defer close(p.done)
	backoff := restartBackoffMin
	for ctx.Err() == nil {
		started := time.Now()
		err := p.runOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		p.mu.Lock()
		p.ready = false
		p.pid = 0
		p.restarts++
		if err != nil {
			p.failure = err.Error()
		}
		p.mu.Unlock()
		p.node.poke()
		if time.Since(started) > restartBackoffReset {
			backoff = restartBackoffMin
		}
		p.log.Info("container exited; restarting", "reason", errString(err), "backoff", backoff.String())
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, restartBackoffMax)
	}
}

func errString(err error) string {
	if err == nil {
		return "exit 0"
	}
	return err.Error()
}

// runOnce prepares the container (env, volumes), starts it, probes it and waits for its exit.
func (p *pod) runOnce(ctx context.Context) error {
	c := p.container()
	if c == nil {
		return errors.New("the pod template has no container")
	}
	if len(p.template.Spec.Containers) > 1 {
		return fmt.Errorf("the local node runs one container per pod, the template has %d", len(p.template.Spec.Containers))
	}
	root, err := p.node.materialiseVolumes(ctx, p)
	if err != nil {
		return fmt.Errorf("CreateContainerConfigError: %w", err)
	}
	env, err := p.node.resolveEnv(ctx, p, c)
	if err != nil {
		return fmt.Errorf("CreateContainerConfigError: %w", err)
	}
	argv, err := p.node.commandLine(c, env)
	if err != nil {
		return err
	}
	mounts := mountPaths(c)
	for i := range argv[1:] {
		argv[i+1] = rewritePath(argv[i+1], mounts, root, true)
	}
	procEnv := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "HOSTNAME=" + p.name}
	for _, e := range env {
		procEnv = append(procEnv, e.name+"="+rewritePath(e.value, mounts, root, false))
	}
	procEnv = append(procEnv,
		"KUBECONFIG="+p.node.Kubeconfig,
		observability.PortMapEnv+"="+p.portMap(),
	)

	logf, err := os.OpenFile(p.logFile, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("opening the pod log: %w", err)
	}
	defer func() { _ = logf.Close() }()
	_, _ = fmt.Fprintf(logf, "--- %s starting %s (restart %d)\n", time.Now().Format(time.RFC3339), strings.Join(argv, " "), p.restarts)

	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = procEnv
	cmd.Dir = root
	if c.WorkingDir != "" {
		cmd.Dir = rewritePath(c.WorkingDir, mounts, root, false)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = proc.Attrs()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", argv[0], err)
	}
	p.mu.Lock()
	p.pid = cmd.Process.Pid
	p.failure = ""
	p.mu.Unlock()
	p.node.poke()
	p.log.V(1).Info("container started", "pid", cmd.Process.Pid)

	exited := make(chan exitResult, 1)
	go func() { exited <- exitResult{cmd.Wait()} }()
	probeCtx, stopProbes := context.WithCancel(ctx)
	defer stopProbes()
	unhealthy := make(chan string, 1)
	go p.probeReadiness(probeCtx, c)
	go p.probeLiveness(probeCtx, c, unhealthy)

	select {
	case res := <-exited:
		_, _ = fmt.Fprintf(logf, "--- %s exited: %v\n", time.Now().Format(time.RFC3339), errString(res.err))
		if res.err != nil {
			return fmt.Errorf("container exited: %w", res.err)
		}
		return nil
	case reason := <-unhealthy:
		p.stopProcess(cmd, exited)
		return fmt.Errorf("liveness probe failed, container killed: %s", reason)
	case <-ctx.Done():
		p.stopProcess(cmd, exited)
		return ctx.Err()
	}
}

// stopProcess sends SIGTERM to the process group, then SIGKILL after the grace period.
// exitResult carries a process's exit status out of the goroutine that waits for it.
type exitResult struct{ err error }

func (p *pod) stopProcess(cmd *exec.Cmd, exited <-chan exitResult) {
	grace := maxGracePeriod
	if g := p.template.Spec.TerminationGracePeriodSeconds; g != nil {
		grace = min(grace, time.Duration(*g)*time.Second)
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(grace):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	}
}

func (p *pod) portMap() string {
	var parts []string
	for cp, hp := range p.hostPorts {
		parts = append(parts, fmt.Sprintf("%d=%d", cp, hp))
	}
	return strings.Join(parts, ",")
}

var probeClient = &http.Client{Timeout: 2 * time.Second}

// probe runs one httpGet probe against the mapped host port.
func (p *pod) probe(pr *corev1.Probe) error {
	if pr.HTTPGet == nil {
		if pr.TCPSocket != nil {
			hp := p.resolvePort(pr.TCPSocket.Port)
			conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", hp), 2*time.Second)
			if err != nil {
				return err
			}
			return conn.Close()
		}
		return nil // exec and gRPC probes are not run locally: they count as passing
	}
	hp := p.resolvePort(pr.HTTPGet.Port)
	if hp == 0 {
		return fmt.Errorf("probe port %s is not a container port", pr.HTTPGet.Port.String())
	}
	timeout := 2 * time.Second
	if pr.TimeoutSeconds > 0 {
		timeout = time.Duration(pr.TimeoutSeconds) * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d%s", hp, pr.HTTPGet.Path), nil)
	if err != nil {
		return err
	}
	resp, err := probeClient.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return fmt.Errorf("HTTP probe failed with statuscode: %d", resp.StatusCode)
	}
	return nil
}

func (p *pod) setReady(r bool) {
	p.mu.Lock()
	changed := p.ready != r
	p.ready = r
	if r && changed {
		p.readySince = time.Now()
	}
	p.mu.Unlock()
	if changed {
		p.node.poke()
	}
}

func (p *pod) probeReadiness(ctx context.Context, c *corev1.Container) {
	pr := c.ReadinessProbe
	if pr == nil {
		p.setReady(true)
		return
	}
	if !sleepCtx(ctx, time.Duration(pr.InitialDelaySeconds)*time.Second) {
		return
	}
	period := maxReadinessPeriod
	if pr.PeriodSeconds > 0 {
		period = min(period, time.Duration(pr.PeriodSeconds)*time.Second)
	}
	success, failure := thresholds(pr)
	var ok, bad int
	for {
		if err := p.probe(pr); err != nil {
			ok, bad = 0, bad+1
			if bad >= failure {
				p.setReady(false)
			}
		} else {
			ok, bad = ok+1, 0
			if ok >= success {
				p.setReady(true)
			}
		}
		if !sleepCtx(ctx, period) {
			return
		}
	}
}

func (p *pod) probeLiveness(ctx context.Context, c *corev1.Container, unhealthy chan<- string) {
	pr := c.LivenessProbe
	if pr == nil {
		return
	}
	if !sleepCtx(ctx, time.Duration(pr.InitialDelaySeconds)*time.Second) {
		return
	}
	period := 10 * time.Second
	if pr.PeriodSeconds > 0 {
		period = time.Duration(pr.PeriodSeconds) * time.Second
	}
	_, failure := thresholds(pr)
	bad := 0
	for sleepCtx(ctx, period) {
		if err := p.probe(pr); err != nil {
			bad++
			if bad >= failure {
				unhealthy <- err.Error()
				return
			}
		} else {
			bad = 0
		}
	}
}

func thresholds(pr *corev1.Probe) (success, failure int) {
	success, failure = 1, 3
	if pr.SuccessThreshold > 0 {
		success = int(pr.SuccessThreshold)
	}
	if pr.FailureThreshold > 0 {
		failure = int(pr.FailureThreshold)
	}
	return success, failure
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// mountPaths lists the container's mount paths.
func mountPaths(c *corev1.Container) []string {
	var out []string
	for _, m := range c.VolumeMounts {
		out = append(out, filepath.Clean(m.MountPath))
	}
	return out
}

// rewritePath is the local node's stand-in for mounts: a process cannot see a volume at its
// mountPath, so a value that names a path at or below a mountPath, or a directory above one
// (CONFIG_DIR=/etc/config above /etc/config/config-tracing), gets the pod's root directory
// prefixed, where the node materialised the volumes at the same relative paths. The value is the
// whole env value or argument, or for an argument of the form --flag=/path the part after '='.
// Nothing else is rewritten, so a binary that reads a path the pod template never names fails
// locally just as it would in a cluster with a missing mount.
func rewritePath(v string, mounts []string, root string, isArg bool) string {
	prefix, path := "", v
	if isArg && strings.HasPrefix(v, "-") {
		k, val, ok := strings.Cut(v, "=")
		if !ok {
			return v
		}
		prefix, path = k+"=", val
	}
	if !strings.HasPrefix(path, "/") || path == "/" {
		return v
	}
	clean := filepath.Clean(path)
	for _, m := range mounts {
		if clean == m || strings.HasPrefix(clean, m+"/") || strings.HasPrefix(m, clean+"/") {
			return prefix + filepath.Join(root, path) + trailingSlash(path)
		}
	}
	return v
}

func trailingSlash(p string) string {
	if strings.HasSuffix(p, "/") {
		return "/"
	}
	return ""
}

// expandVars does Kubernetes' $(VAR) expansion of command, args and env values: $(NAME) of a
// defined variable becomes its value, $$ escapes a $, anything else stays as written.
func expandVars(s string, lookup func(string) (string, bool)) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString(s[i:])
				return b.String()
			}
			name := s[i+2 : i+2+end]
			if v, ok := lookup(name); ok {
				b.WriteString(v)
			} else {
				b.WriteString(s[i : i+3+end])
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}

// quantityInt formats a resource quantity for resourceFieldRef, rounding up like kubelet.
func quantityInt(v int64) string { return strconv.FormatInt(v, 10) }
