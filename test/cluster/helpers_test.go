package cluster

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// env is what the tests learn about the cluster and the images from make.
type env struct {
	kubeconfig, registry string
	eventdisplayImage    string
	senderImage          string
	nodeIP               string
	kafkaPort            string
	root                 string
}

const operatorNS = "kafkachannel-system"

// clusterEnv reads the cluster's env file, or skips: these tests need a real cluster.
func clusterEnv(t *testing.T) *env {
	t.Helper()
	root, _ := filepath.Abs(filepath.Join("..", ".."))
	file := os.Getenv("CLUSTER_ENV")
	if file == "" {
		file = filepath.Join(root, ".cluster", "env")
	}
	b, err := os.ReadFile(file)
	if err != nil || !strings.HasSuffix(strings.TrimSpace(string(b)), "READY=1") {
		t.Skipf("no ready cluster at %s (make cluster): %v", file, err)
	}
	if os.Getenv("KAFKACHANNEL_CLUSTER") != "1" {
		t.Skip("make test-cluster runs these (KAFKACHANNEL_CLUSTER=1): they deploy onto the cluster")
	}
	e := &env{root: root, kafkaPort: os.Getenv("KAFKA_NODE_PORT")}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(line, "=")
		switch k {
		case "KUBECONFIG":
			e.kubeconfig = v
		case "REGISTRY":
			e.registry = v
		}
	}
	if e.kafkaPort == "" {
		e.kafkaPort = "19092"
	}
	e.eventdisplayImage = os.Getenv("EVENTDISPLAY_IMG")
	if e.eventdisplayImage == "" {
		e.eventdisplayImage = e.registry + "/kafkachannel/kafkachannel-eventdisplay:v0.1.0"
	}
	return e
}

// kubectl runs kubectl against the cluster with stdin.
func (e *env) kubectl(stdin string, args ...string) (string, error) {
	cmd := exec.Command("kubectl", args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+e.kubeconfig)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (e *env) mustKubectl(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	out, err := e.kubectl(stdin, args...)
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// eventually polls cond every second until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	last := ""
	for {
		ok, state := cond()
		if ok {
			return
		}
		last = state
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s; last: %s", what, timeout, last)
		}
		time.Sleep(time.Second)
	}
}

// buildSender puts test/cluster/sender into an image the way make docker-build builds the
// operator's (hack/image/build.sh, FROM scratch) and pushes it to the cluster's registry,
// tagged by its content: a kubelet does not pull a tag it already has again.
func (e *env) buildSender(t *testing.T) {
	t.Helper()
	// The Makefile alone pins crane; make test-cluster and make test-olm pass it.
	crane := os.Getenv("CRANE")
	if crane == "" {
		t.Fatal("CRANE is unset: run this through make test-cluster or make test-olm, which pass the pinned crane")
	}
	dir := t.TempDir()
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", filepath.Join(dir, "bin", "sender"), "./test/cluster/sender")
	build.Dir = e.root
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the sender: %v\n%s", err, out)
	}
	sum, err := exec.Command("sha256sum", filepath.Join(dir, "bin", "sender")).Output()
	if err != nil {
		t.Fatal(err)
	}
	e.senderImage = e.registry + "/kafkachannel-test/sender:" + string(sum[:12])
	img := exec.Command("./hack/image/build.sh", crane, "scratch", "test", filepath.Join(dir, "bin"), filepath.Join(dir, "images"), "sender="+e.senderImage)
	img.Dir = e.root
	if out, err := img.CombinedOutput(); err != nil {
		t.Fatalf("building the sender image: %v\n%s", err, out)
	}
	// :latest too, for sending by hand (README): the kubelet always pulls a :latest.
	for _, ref := range []string{e.senderImage, e.registry + "/kafkachannel-test/sender:latest"} {
		if out, err := exec.Command(crane, "push", "--insecure", filepath.Join(dir, "images", "sender.tar"), ref).CombinedOutput(); err != nil {
			t.Fatalf("pushing the sender image: %v\n%s", err, out)
		}
	}
}

// restricted is the securityContext of every pod the tests run: the namespace enforces the
// restricted Pod Security profile, as the operator's does.
const restricted = `
        securityContext:
          runAsNonRoot: true
          runAsUser: 65532
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          capabilities: {drop: ["ALL"]}
          seccompProfile: {type: RuntimeDefault}`

// subscriber is an eventdisplay Deployment and its Service, addressed as
// http://NAME.NS.svc.cluster.local/; extra arguments go to eventdisplay.
func (e *env) subscriber(ns, name string, args ...string) string {
	quoted := `"--port=8080"`
	for _, a := range args {
		quoted += `, "` + a + `"`
	}
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: %[1]s, namespace: %[2]s}
spec:
  replicas: 1
  selector: {matchLabels: {app: %[1]s}}
  template:
    metadata: {labels: {app: %[1]s}}
    spec:
      containers:
      - name: eventdisplay
        image: %[3]s
        args: [%[5]s]
        ports: [{name: http, containerPort: 8080}]
        readinessProbe: {tcpSocket: {port: http}, periodSeconds: 2}
        resources: {requests: {cpu: 10m, memory: 16Mi}, limits: {memory: 128Mi}}%[4]s
---
apiVersion: v1
kind: Service
metadata: {name: %[1]s, namespace: %[2]s}
spec:
  selector: {app: %[1]s}
  ports: [{name: http, port: 80, targetPort: http}]
`, name, ns, e.eventdisplayImage, restricted, quoted)
}

// send starts a sender pod posting count events with ids PREFIX-1..count to url; with caConfigMap
// it trusts the ca.crt of that ConfigMap (an https address).
func (e *env) send(t *testing.T, ns, prefix, url string, count int, interval time.Duration, caConfigMap ...string) {
	t.Helper()
	args := fmt.Sprintf(`"--url=%s", "--prefix=%s", "--count=%d", "--interval=%s"`, url, prefix, count, interval)
	volumes := ""
	if len(caConfigMap) > 0 {
		args += `, "--ca=/ca/ca.crt"`
		volumes = fmt.Sprintf(`
    volumeMounts: [{name: ca, mountPath: /ca, readOnly: true}]
  volumes:
  - {name: ca, configMap: {name: %s}}`, caConfigMap[0])
	}
	e.mustKubectl(t, fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: send-%[1]s, namespace: %[2]s}
spec:
  restartPolicy: Never
  containers:
  - name: sender
    image: %[3]s
    args: [%[4]s]
    resources: {requests: {cpu: 10m, memory: 16Mi}, limits: {memory: 64Mi}}%[5]s%[6]s
`, prefix, ns, e.senderImage, args, strings.ReplaceAll(restricted, "\n      ", "\n  "), volumes), "apply", "-f", "-")
}

// sent waits for the sender pod to finish and returns its summary line.
func (e *env) sent(t *testing.T, ns, prefix string, timeout time.Duration) string {
	t.Helper()
	pod := "send-" + prefix
	eventually(t, timeout, "sender "+pod+" finishes", func() (bool, string) {
		out, _ := e.kubectl("", "-n", ns, "get", "pod", pod, "-o", "jsonpath={.status.phase}")
		if out == "Failed" {
			logs, _ := e.kubectl("", "-n", ns, "logs", pod, "--tail=20")
			t.Fatalf("sender %s failed:\n%s", pod, logs)
		}
		return out == "Succeeded", out
	})
	logs := e.mustKubectl(t, "", "-n", ns, "logs", pod)
	for _, l := range strings.Split(logs, "\n") {
		if strings.HasPrefix(l, "SENT ") {
			return l
		}
	}
	t.Fatalf("sender %s printed no summary:\n%s", pod, logs)
	return ""
}

// received is what one subscriber printed: per event id, how often it came, and every way an
// event differed from what the sender posted.
type received struct {
	count   map[string]int
	altered []string
}

var idLine = regexp.MustCompile(`^received event id=(\S+) type=(\S+) source=(\S+)`)

// delivered parses the eventdisplay log of deployment name (sdk-go's Event.String blocks).
func (e *env) delivered(t *testing.T, ns, name string) received {
	t.Helper()
	logs := e.mustKubectl(t, "", "-n", ns, "logs", "deploy/"+name, "--tail=-1")
	r := received{count: map[string]int{}}
	var id string
	var attrs map[string]string
	var data bytes.Buffer
	section := ""
	flush := func() {
		if id == "" {
			return
		}
		prefix, seqText, _ := strings.Cut(id, "-")
		seq, _ := strconv.Atoi(seqText)
		want := map[string]string{"type": "dev.kafkachannel.cluster-test", "source": "/cluster-test/" + prefix,
			"id": id, "datacontenttype": "application/json", "seq": seqText}
		for k, v := range want {
			if attrs[k] != v {
				r.altered = append(r.altered, fmt.Sprintf("%s: %s=%q, sent %q", id, k, attrs[k], v))
			}
		}
		var got bytes.Buffer
		if err := json.Compact(&got, data.Bytes()); err != nil || got.String() != Payload(seq) {
			r.altered = append(r.altered, fmt.Sprintf("%s: data %q, sent %q", id, data.String(), Payload(seq)))
		}
		id = ""
	}
	sc := bufio.NewScanner(strings.NewReader(logs))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if m := idLine.FindStringSubmatch(line); m != nil {
			flush()
			id, attrs, section = m[1], map[string]string{}, ""
			data.Reset()
			r.count[id]++
			continue
		}
		if id == "" {
			continue
		}
		switch {
		case line == "Context Attributes," || line == "Extensions," || line == "Data,":
			section = line
		case section == "Data,":
			data.WriteString(line)
		case strings.HasPrefix(line, "  "):
			k, v, _ := strings.Cut(strings.TrimSpace(line), ": ")
			attrs[k] = v
		}
	}
	flush()
	return r
}

// allDelivered waits until every subscriber got PREFIX-1..count at least once, and returns how
// many deliveries were duplicates, per subscriber.
func (e *env) allDelivered(t *testing.T, ns, prefix string, count int, timeout time.Duration, subscribers ...string) map[string]int {
	t.Helper()
	dups := map[string]int{}
	for _, sub := range subscribers {
		var r received
		eventually(t, timeout, fmt.Sprintf("%s receives %s-1..%d", sub, prefix, count), func() (bool, string) {
			r = e.delivered(t, ns, sub)
			missing := 0
			first := ""
			for i := 1; i <= count; i++ {
				if r.count[fmt.Sprintf("%s-%d", prefix, i)] == 0 {
					if first == "" {
						first = fmt.Sprintf("%s-%d", prefix, i)
					}
					missing++
				}
			}
			return missing == 0, fmt.Sprintf("%d missing (first %s)", missing, first)
		})
		for id, n := range r.count {
			if strings.HasPrefix(id, prefix+"-") && n > 1 {
				dups[sub] += n - 1
			}
		}
		for _, a := range r.altered {
			if strings.Contains(a, prefix+"-") {
				t.Errorf("%s: altered in delivery: %s", sub, a)
			}
		}
	}
	return dups
}

// podsOf names the pods matching a label selector in ns.
func (e *env) podsOf(t *testing.T, ns, selector string) []string {
	t.Helper()
	out := e.mustKubectl(t, "", "-n", ns, "get", "pods", "-l", selector, "-o", "jsonpath={range .items[*]}{.metadata.name}{\"\\n\"}{end}")
	return strings.Fields(out)
}

// rolledOut waits until the Deployments matching selector have every replica updated and ready.
func (e *env) rolledOut(t *testing.T, ns, selector string, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, "deployments "+selector+" rolled out", func() (bool, string) {
		out, err := e.kubectl("", "-n", ns, "get", "deploy", "-l", selector, "-o",
			`jsonpath={range .items[*]}{.metadata.name} {.spec.replicas} {.status.updatedReplicas} {.status.readyReplicas} {.status.replicas}{"\n"}{end}`)
		if err != nil || strings.TrimSpace(out) == "" {
			return false, out
		}
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			f := strings.Fields(l)
			if len(f) != 5 || f[1] != f[2] || f[1] != f[3] || f[1] != f[4] {
				return false, out
			}
		}
		return true, out
	})
}

// signalProcess sends SIGSTOP or SIGCONT to a process on the node.
func signalProcess(pid int, sig string) error {
	out, err := exec.Command("kill", "-"+sig, strconv.Itoa(pid)).CombinedOutput()
	if err != nil {
		return fmt.Errorf("kill -%s %d: %w: %s", sig, pid, err, out)
	}
	return nil
}
