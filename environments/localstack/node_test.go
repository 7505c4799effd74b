package localstack

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/kafkachannel/kafkachannel/environments/envtestbin"
	"github.com/kafkachannel/kafkachannel/environments/poll"
	"github.com/kafkachannel/kafkachannel/environments/testlog"
	"github.com/kafkachannel/kafkachannel/internal/naming"
)

const testNS = "knative-eventing"

type podView struct {
	Env  map[string]string `json:"env"`
	Args []string          `json:"args"`
	PID  int               `json:"pid"`
}

func getJSON(url string, v any) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("%s: %d %s", url, resp.StatusCode, b)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

func getText(url string) (string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %d %s", url, resp.StatusCode, b)
	}
	return string(b), err
}

func fakeDeployment(name string, replicas int32) *appsv1.Deployment {
	labels := map[string]string{naming.LabelPartOf: naming.PartOf, "app": name}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: testNS, Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					Containers: []corev1.Container{{
						Name:    "fake",
						Image:   "ignored",
						Command: []string{"/fakepod"},
						Args:    []string{"--secret-dir=/etc/kafka-secret", "--who=$(POD_NAME)"},
						Env: []corev1.EnvVar{
							{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
							{Name: "POD_NAMESPACE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
							{Name: "POD_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
							{Name: "PASSWORD", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
								LocalObjectReference: corev1.LocalObjectReference{Name: "kafka-secret"}, Key: "password"}}},
							{Name: "LEVEL", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
								LocalObjectReference: corev1.LocalObjectReference{Name: "config-logging"}, Key: "loglevel"}}},
							{Name: "KAFKA_SECRET_DIR", Value: "/etc/kafka-secret"},
							{Name: "CONFIG_DIR", Value: "/etc/config"},
							{Name: "UNRELATED_PATH", Value: "/etc/passwd"},
						},
						Ports: []corev1.ContainerPort{
							{Name: "http", ContainerPort: 8080},
							{Name: "metrics", ContainerPort: 8081},
						},
						ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{
							HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromString("metrics")}}},
						LivenessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{
							HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("metrics")}}},
						VolumeMounts: []corev1.VolumeMount{
							{Name: "kafka-secret", MountPath: "/etc/kafka-secret", ReadOnly: true},
							{Name: "config-logging", MountPath: "/etc/config/config-logging", ReadOnly: true},
						},
					}},
					Volumes: []corev1.Volume{
						{Name: "kafka-secret", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "kafka-secret"}}},
						{Name: "config-logging", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
							LocalObjectReference: corev1.LocalObjectReference{Name: "config-logging"}}}},
					},
				},
			},
		},
	}
}

// TestNode runs fake Deployments on the local node against a real API server: env and volume
// resolution, ports, readiness, status, restarts, live ConfigMap updates, scaling, rolling,
// failing pods, deletion and the receiver Service proxy.
func TestNode(t *testing.T) {
	assets := envtestbin.Require(t)
	bin := t.TempDir()
	build := exec.Command("go", "build", "-o", filepath.Join(bin, "fakepod"), "./testdata/fakepod")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the fake pod: %v\n%s", err, out)
	}

	ctrllog.SetLogger(testlog.New(t))
	env := &envtest.Environment{BinaryAssetsDirectory: assets}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("starting envtest: %v", err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	c, err := client.New(cfg, client.Options{Scheme: Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "kafka-secret", Namespace: testNS},
		Data: map[string][]byte{"brokers": []byte("127.0.0.1:1"), "password": []byte("s3cret")}}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "config-logging", Namespace: testNS},
		Data: map[string]string{"loglevel": "info"}}
	for _, o := range []client.Object{&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: testNS}}, secret, cm} {
		if err := c.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}

	dir := t.TempDir()
	nodeCtx, stop := context.WithCancel(ctx)
	n := &Node{Config: cfg, Namespace: testNS, BinDir: bin, Dir: dir, Kubeconfig: "/nonexistent/kubeconfig",
		PodsFile: filepath.Join(dir, "pods"), Log: testlog.New(t)}
	if err := n.Start(nodeCtx); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stopNode := func() {
		if !stopped {
			stopped = true
			stop()
			n.Wait()
		}
	}
	t.Cleanup(stopNode)

	d := fakeDeployment("fake", 1)
	if err := c.Create(ctx, d); err != nil {
		t.Fatal(err)
	}
	waitStatus := func(name string, ready, replicas int32, available corev1.ConditionStatus) *appsv1.Deployment {
		t.Helper()
		got := &appsv1.Deployment{}
		poll.Eventually(t, 30*time.Second, fmt.Sprintf("deployment %s: %d/%d ready, Available=%s", name, ready, replicas, available), func() error {
			if err := c.Get(ctx, key(testNS, name), got); err != nil {
				return err
			}
			s := got.Status
			var avail corev1.ConditionStatus
			for _, cond := range s.Conditions {
				if cond.Type == appsv1.DeploymentAvailable {
					avail = cond.Status
				}
			}
			if s.ObservedGeneration != got.Generation || s.ReadyReplicas != ready || s.Replicas != replicas ||
				s.UpdatedReplicas != replicas || avail != available {
				return fmt.Errorf("status %+v", s)
			}
			return nil
		})
		return got
	}
	podsOf := func(name string) []PodInfo {
		var out []PodInfo
		for _, p := range n.Pods() {
			if p.Deployment == name && p.PID != 0 {
				out = append(out, p)
			}
		}
		return out
	}
	waitStatus("fake", 1, 1, corev1.ConditionTrue)
	pods := podsOf("fake")
	if len(pods) != 1 {
		t.Fatalf("pods: %+v", pods)
	}
	p := pods[0]
	base := fmt.Sprintf("http://127.0.0.1:%d", p.Ports[8081])

	t.Run("environment", func(t *testing.T) {
		var v podView
		if err := getJSON(base+"/env", &v); err != nil {
			t.Fatal(err)
		}
		root := filepath.Join(dir, "run", p.Name, "root")
		want := map[string]string{
			"POD_NAME": p.Name, "POD_NAMESPACE": testNS, "POD_IP": "127.0.0.1", "PASSWORD": "s3cret", "LEVEL": "info",
			"KAFKA_SECRET_DIR": root + "/etc/kafka-secret", "CONFIG_DIR": root + "/etc/config",
			"UNRELATED_PATH": "/etc/passwd", "KUBECONFIG": "/nonexistent/kubeconfig",
			"KAFKACHANNEL_PORT_MAP": v.Env["KAFKACHANNEL_PORT_MAP"],
		}
		for k, w := range want {
			if v.Env[k] != w {
				t.Errorf("env %s = %q, want %q", k, v.Env[k], w)
			}
		}
		for _, pair := range []string{fmt.Sprintf("8080=%d", p.Ports[8080]), fmt.Sprintf("8081=%d", p.Ports[8081])} {
			if !strings.Contains(v.Env["KAFKACHANNEL_PORT_MAP"], pair) {
				t.Errorf("KAFKACHANNEL_PORT_MAP %q lacks %s", v.Env["KAFKACHANNEL_PORT_MAP"], pair)
			}
		}
		wantArgs := []string{"--secret-dir=" + root + "/etc/kafka-secret", "--who=" + p.Name}
		if strings.Join(v.Args, " ") != strings.Join(wantArgs, " ") {
			t.Errorf("args %q, want %q", v.Args, wantArgs)
		}
		if got, err := getText(base + "/file?path=" + v.Env["KAFKA_SECRET_DIR"] + "/password"); err != nil || got != "s3cret" {
			t.Errorf("secret file: %q, %v", got, err)
		}
		if got, err := getText(base + "/file?path=" + v.Env["CONFIG_DIR"] + "/config-logging/loglevel"); err != nil || got != "info" {
			t.Errorf("configmap file: %q, %v", got, err)
		}
	})

	t.Run("configmap changes reach the mounted file in place", func(t *testing.T) {
		cur := &corev1.ConfigMap{}
		if err := c.Get(ctx, key(testNS, "config-logging"), cur); err != nil {
			t.Fatal(err)
		}
		cur.Data["loglevel"] = "debug"
		if err := c.Update(ctx, cur); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, "run", p.Name, "root", "etc", "config", "config-logging", "loglevel")
		poll.Eventually(t, 10*time.Second, "file follows the ConfigMap", func() error {
			got, err := getText(base + "/file?path=" + path)
			if err != nil || got != "debug" {
				return fmt.Errorf("%q %v", got, err)
			}
			return nil
		})
		if now := podsOf("fake"); len(now) != 1 || now[0].PID != p.PID {
			t.Errorf("a ConfigMap change restarted the pod: %+v", now)
		}
	})

	t.Run("pods file", func(t *testing.T) {
		b, err := os.ReadFile(filepath.Join(dir, "pods"))
		if err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf("%s fake %s %d %s/metrics %s/healthz\n", testNS, p.Name, p.PID, base, base)
		if string(b) != want {
			t.Errorf("pods file:\n%s\nwant:\n%s", b, want)
		}
	})

	t.Run("receiver service proxy", func(t *testing.T) {
		sp := httptest.NewServer(newServiceProxy(n, "fake"))
		defer sp.Close()
		var v podView
		if err := getJSON(sp.URL+"/env", &v); err != nil || v.PID != p.PID {
			t.Fatalf("through the proxy: %+v %v", v, err)
		}
		none := httptest.NewServer(newServiceProxy(n, "absent"))
		defer none.Close()
		resp, err := http.Get(none.URL + "/env")
		if err != nil || resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("no replicas: %v %v", resp, err)
		}
		resp.Body.Close()
	})

	t.Run("SIGKILLed process is restarted", func(t *testing.T) {
		if err := syscall.Kill(p.PID, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		poll.Eventually(t, 30*time.Second, "restart", func() error {
			now := podsOf("fake")
			if len(now) != 1 || now[0].PID == p.PID || !now[0].Ready || now[0].Restarts != 1 || now[0].Name != p.Name {
				return fmt.Errorf("%+v", now)
			}
			return nil
		})
		waitStatus("fake", 1, 1, corev1.ConditionTrue)
	})

	t.Run("scale to 2 gives each replica its own ports", func(t *testing.T) {
		cur := &appsv1.Deployment{}
		if err := c.Get(ctx, key(testNS, "fake"), cur); err != nil {
			t.Fatal(err)
		}
		cur.Spec.Replicas = ptr(int32(2))
		if err := c.Update(ctx, cur); err != nil {
			t.Fatal(err)
		}
		waitStatus("fake", 2, 2, corev1.ConditionTrue)
		now := podsOf("fake")
		if len(now) != 2 || now[0].Ports[8081] == now[1].Ports[8081] || now[0].Name == now[1].Name {
			t.Fatalf("replicas: %+v", now)
		}
	})

	t.Run("template change rolls every replica", func(t *testing.T) {
		before := podsOf("fake")
		cur := &appsv1.Deployment{}
		if err := c.Get(ctx, key(testNS, "fake"), cur); err != nil {
			t.Fatal(err)
		}
		cur.Spec.Template.Spec.Containers[0].Env = append(cur.Spec.Template.Spec.Containers[0].Env, corev1.EnvVar{Name: "ROLLED", Value: "yes"})
		if err := c.Update(ctx, cur); err != nil {
			t.Fatal(err)
		}
		hash := TemplateHash(&cur.Spec.Template)
		poll.Eventually(t, 30*time.Second, "rollout", func() error {
			now := podsOf("fake")
			if len(now) != 2 {
				return fmt.Errorf("%d pods", len(now))
			}
			for _, q := range now {
				if q.TemplateHash != hash || !q.Ready {
					return fmt.Errorf("pod %s hash %s ready %v", q.Name, q.TemplateHash, q.Ready)
				}
				for _, b := range before {
					if b.Name == q.Name {
						return fmt.Errorf("old pod %s still there", q.Name)
					}
				}
			}
			return nil
		})
		waitStatus("fake", 2, 2, corev1.ConditionTrue)
		var v podView
		if err := getJSON(fmt.Sprintf("http://127.0.0.1:%d/env", podsOf("fake")[0].Ports[8081]), &v); err != nil || v.Env["ROLLED"] != "yes" {
			t.Fatalf("rolled env: %v %v", v.Env["ROLLED"], err)
		}
	})

	t.Run("unresolvable secretKeyRef fails the pod", func(t *testing.T) {
		bad := fakeDeployment("broken", 1)
		bad.Spec.Template.Spec.Containers[0].Env[3].ValueFrom.SecretKeyRef.Key = "no-such-key"
		if err := c.Create(ctx, bad); err != nil {
			t.Fatal(err)
		}
		poll.Eventually(t, 30*time.Second, "failure reported", func() error {
			for _, q := range n.Pods() {
				if q.Deployment == "broken" && strings.Contains(q.Failure, "couldn't find key no-such-key") && q.PID == 0 {
					return nil
				}
			}
			return fmt.Errorf("%+v", n.Pods())
		})
		waitStatus("broken", 0, 1, corev1.ConditionFalse)
	})

	t.Run("never ready keeps Available False and the old replica during a rollout", func(t *testing.T) {
		cur := &appsv1.Deployment{}
		if err := c.Get(ctx, key(testNS, "fake"), cur); err != nil {
			t.Fatal(err)
		}
		before := podsOf("fake")
		cur.Spec.Template.Spec.Containers[0].Env = append(cur.Spec.Template.Spec.Containers[0].Env, corev1.EnvVar{Name: "NEVER_READY", Value: "1"})
		if err := c.Update(ctx, cur); err != nil {
			t.Fatal(err)
		}
		// A surge replica starts and never turns ready: both old replicas must keep running.
		poll.Eventually(t, 30*time.Second, "surge replica started", func() error {
			if now := podsOf("fake"); len(now) != 3 {
				return fmt.Errorf("%d pods", len(now))
			}
			return nil
		})
		time.Sleep(3 * time.Second) // several readiness periods: nothing may change
		ready := 0
		for _, q := range podsOf("fake") {
			for _, b := range before {
				if b.Name == q.Name && q.Ready {
					ready++
				}
			}
		}
		if ready != 2 {
			t.Fatalf("old ready replicas %d, want 2: %+v", ready, podsOf("fake"))
		}
	})

	t.Run("deleting the Deployment stops its processes", func(t *testing.T) {
		pids := podsOf("fake")
		if err := c.Delete(ctx, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "fake", Namespace: testNS}},
			client.PropagationPolicy(metav1.DeletePropagationForeground)); err != nil {
			t.Fatal(err)
		}
		poll.Eventually(t, 30*time.Second, "processes gone", func() error {
			for _, q := range pids {
				if syscall.Kill(q.PID, 0) == nil {
					return fmt.Errorf("pid %d still alive", q.PID)
				}
			}
			if err := c.Get(ctx, key(testNS, "fake"), &appsv1.Deployment{}); err == nil {
				return fmt.Errorf("deployment still there (finalizers not released)")
			}
			return nil
		})
	})

	stopNode()
	for _, q := range n.Pods() {
		if q.PID != 0 {
			t.Errorf("pod %s still has pid %d after stop", q.Name, q.PID)
		}
	}
}

func TestRewritePath(t *testing.T) {
	mounts := []string{"/etc/kafka-secret", "/etc/config/config-tracing"}
	for _, tc := range []struct {
		in   string
		arg  bool
		want string
	}{
		{"/etc/kafka-secret", false, "/r/etc/kafka-secret"},
		{"/etc/kafka-secret/ca.crt", false, "/r/etc/kafka-secret/ca.crt"},
		{"/etc/config", false, "/r/etc/config"},
		{"/etc/config/", false, "/r/etc/config/"},
		{"/etc/kafka-secretx", false, "/etc/kafka-secretx"},
		{"/etc/passwd", false, "/etc/passwd"},
		{"/", false, "/"},
		{"relative", false, "relative"},
		{"--dir=/etc/config/config-tracing", true, "--dir=/r/etc/config/config-tracing"},
		{"--dir=/etc/config/config-tracing", false, "--dir=/etc/config/config-tracing"},
		{"--verbose", true, "--verbose"},
	} {
		if got := rewritePath(tc.in, mounts, "/r", tc.arg); got != tc.want {
			t.Errorf("rewritePath(%q, arg=%v) = %q, want %q", tc.in, tc.arg, got, tc.want)
		}
	}
}

func TestExpandVars(t *testing.T) {
	vars := map[string]string{"A": "x", "B": "y"}
	lookup := func(k string) (string, bool) { v, ok := vars[k]; return v, ok }
	for in, want := range map[string]string{
		"$(A)-$(B)": "x-y", "$$(A)": "$(A)", "$(C)": "$(C)", "plain": "plain", "$(A": "$(A", "a$b": "a$b", "end$": "end$",
	} {
		if got := expandVars(in, lookup); got != want {
			t.Errorf("expandVars(%q) = %q, want %q", in, got, want)
		}
	}
}
