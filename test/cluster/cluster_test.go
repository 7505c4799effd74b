package cluster

import (
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

// The story on real pods, in order: what a user installs (make deploy) serves a channel with
// two in-cluster subscribers; then the faults (pods deleted mid-stream, the Kafka Secret
// rotated), the probes, RBAC and logs, and a channel with 100 subscribers under load.
func TestOnRealPods(t *testing.T) {
	e := clusterEnv(t)
	// Logs are judged from here on: a manager that lived through an earlier run saw its
	// namespace deleted, and client-go logs the Events a terminating namespace refuses as errors.
	started := time.Now().UTC().Add(-time.Second).Format(time.RFC3339)
	ns := fmt.Sprintf("kc-test-%d", time.Now().Unix()%100000)
	e.mustKubectl(t, "", "create", "namespace", ns)
	e.mustKubectl(t, "", "label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted")
	t.Cleanup(func() {
		if t.Failed() && os.Getenv("KEEP") != "" {
			t.Logf("kept namespace %s (KEEP set)", ns)
			return
		}
		_, _ = e.kubectl("", "delete", "namespace", ns, "--wait=false")
	})
	nodeIP := strings.TrimSpace(e.mustKubectl(t, "", "get", "nodes", "-o", `jsonpath={.items[0].status.addresses[?(@.type=="InternalIP")].address}`))
	e.nodeIP = nodeIP

	t.Log("the manager from make deploy: Running and Ready as its ServiceAccount")
	e.rolledOut(t, operatorNS, "app.kubernetes.io/component=manager", 3*time.Minute)
	if sa := e.mustKubectl(t, "", "-n", operatorNS, "get", "pods", "-l", "app.kubernetes.io/component=manager",
		"-o", "jsonpath={.items[0].spec.serviceAccountName}"); sa != "kafkachannel-manager" {
		t.Fatalf("the manager runs as %q", sa)
	}
	e.buildSender(t)
	e.mustKubectl(t, e.subscriber(ns, "sub-a")+"---\n"+e.subscriber(ns, "sub-b"), "apply", "-f", "-")
	e.rolledOut(t, ns, "", 3*time.Minute)

	channel := "story"
	e.mustKubectl(t, fmt.Sprintf(`apiVersion: messaging.knative.dev/v1beta1
kind: KafkaChannel
metadata: {name: %[1]s, namespace: %[2]s}
spec:
  numPartitions: 4
  replicationFactor: 1
  delivery: {retry: 10, backoffPolicy: exponential, backoffDelay: PT0.2S}
  subscribers:
  - {uid: 00000000-0000-0000-0000-00000000000a, generation: 1, subscriberUri: "http://sub-a.%[2]s.svc.cluster.local/"}
  - {uid: 00000000-0000-0000-0000-00000000000b, generation: 1, subscriberUri: "http://sub-b.%[2]s.svc.cluster.local/"}
`, channel, ns), "apply", "-f", "-")
	url := e.readyChannel(t, ns, channel)
	t.Logf("kubectl get kafkachannels:\n%s", e.mustKubectl(t, "", "-n", ns, "get", "kafkachannels"))
	e.subscribersReady(t, ns, channel, 2, 2*time.Minute)
	dispatchers := "messaging.knative.dev/channel=" + channel + ",app.kubernetes.io/component=dispatcher"
	receivers := "app.kubernetes.io/component=receiver,app.kubernetes.io/managed-by=kafkachannel-manager"

	if !t.Run("happy path: two subscribers get every event unaltered", func(t *testing.T) {
		e.send(t, ns, "happy", url, 200, 5*time.Millisecond)
		t.Log(e.sent(t, ns, "happy", 5*time.Minute))
		dups := e.allDelivered(t, ns, "happy", 200, 3*time.Minute, "sub-a", "sub-b")
		t.Logf("duplicates: %v", dups)
		for sub, d := range dups {
			if d > 0 {
				t.Errorf("%s got %d duplicates with nothing failing", sub, d)
			}
		}
	}) {
		t.FailNow()
	}

	t.Run("logs of every component are free of errors on the happy path", func(t *testing.T) {
		for _, c := range []struct{ ns, selector string }{
			{operatorNS, "app.kubernetes.io/component=manager"},
			{operatorNS, receivers},
			{operatorNS, dispatchers},
			{ns, "app=sub-a"},
		} {
			for _, pod := range e.podsOf(t, c.ns, c.selector) {
				logs := e.mustKubectl(t, "", "-n", c.ns, "logs", pod, "--since-time="+started)
				for _, l := range strings.Split(logs, "\n") {
					low := strings.ToLower(l)
					if strings.Contains(low, `"level":"error"`) || strings.Contains(low, "panic") || strings.HasPrefix(l, "E1") || strings.HasPrefix(l, "E0") {
						t.Errorf("%s: %s", pod, l)
					}
				}
				if all := e.mustKubectl(t, "", "-n", c.ns, "logs", pod, "--tail=-1"); c.ns == operatorNS && !strings.Contains(all, `"memoryLimitFrom":"MEMORY_LIMIT"`) {
					t.Errorf("%s did not take its memory limit from the downward API; its log has no process limits line with it", pod)
				}
			}
		}
	})

	t.Run("RBAC of each ServiceAccount, asked of the cluster", func(t *testing.T) {
		sa := func(name string) string { return "system:serviceaccount:" + operatorNS + ":kafkachannel-" + name }
		for _, tc := range []struct {
			who, verb, what, ns string
			allow               bool
		}{
			{sa("dispatcher"), "get", "kafkachannels.messaging.knative.dev", ns, true},
			{sa("dispatcher"), "patch", "kafkachannels.messaging.knative.dev/status", ns, true},
			{sa("dispatcher"), "update", "kafkachannels.messaging.knative.dev", ns, false},
			{sa("dispatcher"), "get", "secrets", operatorNS, false},
			{sa("dispatcher"), "create", "serviceaccounts/token", ns, true},
			{sa("dispatcher"), "create", "deployments.apps", operatorNS, false},
			{sa("receiver"), "watch", "kafkachannels.messaging.knative.dev", ns, true},
			{sa("receiver"), "patch", "kafkachannels.messaging.knative.dev/status", ns, false},
			{sa("receiver"), "get", "secrets", operatorNS, false},
			{sa("receiver"), "create", "pods", operatorNS, false},
			{sa("manager"), "create", "deployments.apps", operatorNS, true},
			{sa("manager"), "get", "secrets", operatorNS, true},
			{sa("manager"), "delete", "secrets", operatorNS, false},
			{sa("manager"), "create", "leases.coordination.k8s.io", operatorNS, true},
			{sa("manager"), "create", "leases.coordination.k8s.io", ns, false},
			{sa("manager"), "create", "pods/exec", operatorNS, false},
			{sa("manager"), "create", "serviceaccounts/token", ns, false},
		} {
			resource, sub, _ := strings.Cut(tc.what, "/")
			args := []string{"auth", "can-i", tc.verb, resource, "--as=" + tc.who, "-n", tc.ns}
			if sub != "" {
				args = append(args, "--subresource="+sub)
			}
			out, _ := e.kubectl("", args...)
			lines := strings.Split(strings.TrimSpace(out), "\n")
			got := strings.HasPrefix(strings.TrimSpace(lines[len(lines)-1]), "yes")
			if got != tc.allow {
				t.Errorf("%s %s %s in %s: can-i says %q, want allowed=%v", tc.who, tc.verb, tc.what, tc.ns, out, tc.allow)
			}
		}
		// The manager really holds the leader-election lease as its ServiceAccount.
		holder := e.mustKubectl(t, "", "-n", operatorNS, "get", "lease", "kafkachannel-manager.messaging.knative.dev", "-o", "jsonpath={.spec.holderIdentity}")
		if !strings.HasPrefix(holder, "kafkachannel-manager-") {
			t.Errorf("the leader-election lease is held by %q, not a manager pod", holder)
		}
	})

	// A pod deleted mid-stream: the ReplicaSet replaces it, the sender retries what the receiver
	// refused or dropped, and the dispatcher redelivers what it had not committed.
	for _, tc := range []struct{ name, prefix, selector string }{
		{"dispatcher pod deleted mid-stream: 0 lost, duplicates bounded", "ddel", dispatchers},
		{"receiver pod deleted mid-stream: 0 lost, duplicates bounded", "rdel", receivers},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const count = 600
			e.send(t, ns, tc.prefix, url, count, 20*time.Millisecond)
			e.arrived(t, ns, "sub-a", tc.prefix, 100)
			pods := e.podsOf(t, operatorNS, tc.selector)
			t.Logf("deleting %v", pods)
			e.mustKubectl(t, "", append([]string{"-n", operatorNS, "delete", "pod", "--wait=false"}, pods...)...)
			t.Log(e.sent(t, ns, tc.prefix, 10*time.Minute))
			dups := e.allDelivered(t, ns, tc.prefix, count, 5*time.Minute, "sub-a", "sub-b")
			t.Logf("duplicates: %v", dups)
			for sub, d := range dups {
				// At most what was in flight or uncommitted when the pod went: far below the
				// batch; every event redelivered would mean offsets are not committed at all.
				if d > count/2 {
					t.Errorf("%s got %d duplicates of %d events", sub, d, count)
				}
			}
			e.rolledOut(t, operatorNS, tc.selector, 3*time.Minute)
		})
	}

	t.Run("the Kafka Secret rotated: the data plane rolls, 0 lost", func(t *testing.T) {
		hashes := func() string {
			return e.mustKubectl(t, "", "-n", operatorNS, "get", "deploy", "-l", "app.kubernetes.io/managed-by=kafkachannel-manager",
				"-o", `jsonpath={range .items[*]}{.spec.template.metadata.annotations.kafkachannel\.knative\.dev/config-hash}{" "}{end}`)
		}
		before := hashes()
		brokers := strings.TrimSpace(e.mustKubectl(t, "", "-n", operatorNS, "get", "secret", "kafka-secret", "-o", "jsonpath={.data.brokers}"))
		// The same Kafka under its other name: the node's address instead of the Service's.
		rotated := e.nodeIP + ":" + e.kafkaPort
		t.Cleanup(func() {
			_, _ = e.kubectl("", "-n", operatorNS, "patch", "secret", "kafka-secret", "-p", `{"data":{"brokers":"`+brokers+`"}}`)
		})
		const count = 600
		e.send(t, ns, "rot", url, count, 20*time.Millisecond)
		e.arrived(t, ns, "sub-a", "rot", 50) // rotate mid-stream
		e.mustKubectl(t, "", "-n", operatorNS, "patch", "secret", "kafka-secret", "-p", `{"stringData":{"brokers":"`+rotated+`"}}`)
		eventually(t, 2*time.Minute, "the manager rolls the data plane", func() (bool, string) {
			h := hashes()
			return h != before && !strings.Contains(h, strings.Fields(before)[0]), h
		})
		e.rolledOut(t, operatorNS, "app.kubernetes.io/managed-by=kafkachannel-manager", 4*time.Minute)
		t.Log(e.sent(t, ns, "rot", 10*time.Minute))
		dups := e.allDelivered(t, ns, "rot", count, 5*time.Minute, "sub-a", "sub-b")
		t.Logf("duplicates: %v", dups)
	})

	t.Run("https without cert-manager, set up as docs/security.md says", func(t *testing.T) {
		doc, err := os.ReadFile(filepath.Join(e.root, "docs", "security.md"))
		if err != nil {
			t.Fatal(err)
		}
		_, block, ok := strings.Cut(string(doc), "<!-- receiver-tls-without-cert-manager -->\n```sh\n")
		block, _, ok2 := strings.Cut(block, "```")
		if !ok || !ok2 {
			t.Fatal("docs/security.md has no receiver-tls-without-cert-manager block")
		}
		_, _ = e.kubectl("", "-n", operatorNS, "delete", "secret", "kafkachannel-receiver-tls", "--ignore-not-found")
		sh := exec.Command("bash", "-euo", "pipefail", "-c", block)
		sh.Dir = t.TempDir()
		sh.Env = append(os.Environ(), "KUBECONFIG="+e.kubeconfig)
		if out, err := sh.CombinedOutput(); err != nil {
			t.Fatalf("the documented commands failed: %v\n%s", err, out)
		}
		var httpsURL, ca string
		eventually(t, 2*time.Minute, "the channel has an https address with CACerts", func() (bool, string) {
			out, _ := e.kubectl("", "-n", ns, "get", "kafkachannel", channel, "-o", "jsonpath={.status.addresses}")
			var addrs []struct {
				URL     string `json:"url"`
				CACerts string `json:"CACerts"`
			}
			_ = json.Unmarshal([]byte(out), &addrs)
			for _, a := range addrs {
				if strings.HasPrefix(a.URL, "https://") && strings.Contains(a.CACerts, "BEGIN CERTIFICATE") {
					httpsURL, ca = a.URL, a.CACerts
					return true, out
				}
			}
			return false, out
		})
		e.mustKubectl(t, "", "-n", ns, "create", "configmap", "channel-ca", "--from-literal=ca.crt="+ca)
		// The receiver learns of the Secret only when the kubelet refreshes its volume; until
		// then the https port refuses and the sender retries.
		e.send(t, ns, "tls", httpsURL, 100, 5*time.Millisecond, "channel-ca")
		t.Log(e.sent(t, ns, "tls", 5*time.Minute))
		e.allDelivered(t, ns, "tls", 100, 3*time.Minute, "sub-a", "sub-b")
	})

	t.Run("make deploy again keeps the settings a user changed", func(t *testing.T) {
		// An upgrade re-runs make deploy after the user followed the docs (transport-encryption
		// patched into config-features above, the Kafka Secret rotated): it must neither fail on
		// the fields the user now owns nor undo them.
		features := func() string {
			return e.mustKubectl(t, "", "-n", operatorNS, "get", "configmap", "config-features", "-o", "jsonpath={.data.transport-encryption}")
		}
		before := features()
		img := e.mustKubectl(t, "", "-n", operatorNS, "get", "deploy", "kafkachannel-manager", "-o", "jsonpath={.spec.template.spec.containers[0].image}")
		envOf := func(name string) string {
			return e.mustKubectl(t, "", "-n", operatorNS, "get", "deploy", "kafkachannel-manager", "-o",
				`jsonpath={.spec.template.spec.containers[0].env[?(@.name=="`+name+`")].value}`)
		}
		deploy := exec.Command("make", "--no-print-directory", "deploy", "IMG="+img,
			"DISPATCHER_IMG="+envOf("DISPATCHER_IMAGE"), "RECEIVER_IMG="+envOf("RECEIVER_IMAGE"))
		deploy.Dir = e.root
		deploy.Env = append(os.Environ(), "KUBECONFIG="+e.kubeconfig)
		if out, err := deploy.CombinedOutput(); err != nil {
			t.Fatalf("make deploy failed on a cluster whose settings a user changed: %v\n%s", err, out)
		}
		if after := features(); after != before {
			t.Errorf("make deploy changed transport-encryption from %q to %q", before, after)
		}
	})

	t.Run("100 subscribers under load: the dispatcher stays inside its memory limit", func(t *testing.T) {
		// Summary lines only: 10,000 whole events would pass the kubelet's 10 MiB log rotation,
		// and kubectl logs shows only the newest file.
		e.mustKubectl(t, e.subscriber(ns, "sub-load", "--summary"), "apply", "-f", "-")
		e.rolledOut(t, ns, "", 3*time.Minute)
		var subs strings.Builder
		for i := range 100 {
			fmt.Fprintf(&subs, "  - {uid: 00000000-0000-0000-0001-%012d, generation: 1, subscriberUri: \"http://sub-load.%s.svc.cluster.local/s/%d\"}\n", i, ns, i)
		}
		e.mustKubectl(t, fmt.Sprintf(`apiVersion: messaging.knative.dev/v1beta1
kind: KafkaChannel
metadata: {name: load, namespace: %s}
spec:
  numPartitions: 4
  replicationFactor: 1
  delivery: {retry: 10, backoffPolicy: exponential, backoffDelay: PT0.2S}
  subscribers:
%s`, ns, subs.String()), "apply", "-f", "-")
		loadURL := e.readyChannel(t, ns, "load")
		e.subscribersReady(t, ns, "load", 100, 6*time.Minute)
		const count = 100
		e.send(t, ns, "load", loadURL, count, time.Millisecond)
		t.Log(e.sent(t, ns, "load", 5*time.Minute))
		var dups int
		eventually(t, 10*time.Minute, "every subscriber gets every event", func() (bool, string) {
			got := map[string]int{} // "path id" -> deliveries
			for _, l := range strings.Split(e.mustKubectl(t, "", "-n", ns, "logs", "deploy/sub-load", "--tail=-1"), "\n") {
				if m := pathLine.FindStringSubmatch(l); m != nil {
					got[m[2]+" "+m[1]]++
				}
			}
			missing, first := 0, ""
			dups = 0
			for i := range 100 {
				for seq := 1; seq <= count; seq++ {
					k := fmt.Sprintf("/s/%d load-%d", i, seq)
					if got[k] == 0 {
						missing++
						if first == "" {
							first = k
						}
					}
					dups += max(0, got[k]-1)
				}
			}
			return missing == 0, fmt.Sprintf("%d (subscriber, event) pairs missing, first %s", missing, first)
		})
		t.Logf("%d deliveries to 100 subscribers, %d duplicates", 100*count, dups)
		sel := "messaging.knative.dev/channel=load,app.kubernetes.io/component=dispatcher"
		for _, pod := range e.podsOf(t, operatorNS, sel) {
			state := e.mustKubectl(t, "", "-n", operatorNS, "get", "pod", pod, "-o",
				`jsonpath={.status.containerStatuses[0].restartCount} {.status.containerStatuses[0].lastState.terminated.reason} {.spec.containers[0].resources.limits.memory} {.metadata.uid}`)
			f := strings.Fields(state)
			if len(f) < 3 || f[0] != "0" {
				t.Errorf("%s restarted: %s", pod, state)
			}
			if strings.Contains(state, "OOMKilled") {
				t.Errorf("%s was OOMKilled", pod)
			}
			uid := f[len(f)-1]
			if peak, limit, err := cgroupMemory(uid); err != nil {
				t.Errorf("%s: %v", pod, err)
			} else {
				t.Logf("%s: peak memory %.1f MiB of a %.0f MiB limit (cgroup v1 max_usage_in_bytes)", pod, float64(peak)/(1<<20), float64(limit)/(1<<20))
				if peak >= limit {
					t.Errorf("%s reached its memory limit", pod)
				}
			}
		}
	})

	t.Run("probes: a frozen process is taken out of its Service, then restarted", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("freezing a container's process needs root on the node")
		}
		for _, c := range []struct{ name, selector, binary string }{
			{"dispatcher", dispatchers, "/dispatcher"},
			{"receiver", receivers, "/receiver"},
			{"manager", "app.kubernetes.io/component=manager", "/manager"},
		} {
			t.Run(c.name, func(t *testing.T) { e.freezeAndRecover(t, c.selector, c.binary) })
		}
	})
}

// freezeAndRecover stops (SIGSTOP) the process of the one pod matching selector from the node:
// what both probes watch is that process answering on its port. Readiness must turn the pod
// NotReady, liveness must get the container restarted, and it must come back Ready.
func (e *env) freezeAndRecover(t *testing.T, selector, binary string) {
	pod := e.podsOf(t, operatorNS, selector)[0]
	uid := e.mustKubectl(t, "", "-n", operatorNS, "get", "pod", pod, "-o", "jsonpath={.metadata.uid}")
	restarts := e.mustKubectl(t, "", "-n", operatorNS, "get", "pod", pod, "-o", "jsonpath={.status.containerStatuses[0].restartCount}")
	pid := processOfPod(t, uid, binary)
	t.Logf("freezing %s (pid %d on the node)", pod, pid)
	if err := signalProcess(pid, "STOP"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = signalProcess(pid, "CONT") })
	eventually(t, 2*time.Minute, pod+" turns NotReady (readiness)", func() (bool, string) {
		out, _ := e.kubectl("", "-n", operatorNS, "get", "pod", pod, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
		return out == "False", out
	})
	eventually(t, 4*time.Minute, pod+" is restarted (liveness)", func() (bool, string) {
		out, _ := e.kubectl("", "-n", operatorNS, "get", "pod", pod, "-o", "jsonpath={.status.containerStatuses[0].restartCount}")
		return out != restarts && out != "", out
	})
	eventually(t, 3*time.Minute, pod+" is Ready again", func() (bool, string) {
		out, _ := e.kubectl("", "-n", operatorNS, "get", "pod", pod, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
		return out == "True", out
	})
}

// processOfPod finds, on the node, the process running binary in the pod with uid: its cgroup
// path names the pod (cgroupfs driver: .../pod<uid>/<container>).
func processOfPod(t *testing.T, uid, binary string) int {
	t.Helper()
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		cg, err := os.ReadFile(filepath.Join(d, "cgroup"))
		if err != nil || !strings.Contains(string(cg), "pod"+uid) {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join(d, "cmdline"))
		if strings.SplitN(string(cmdline), "\x00", 2)[0] == binary {
			var pid int
			fmt.Sscan(filepath.Base(d), &pid)
			return pid
		}
	}
	t.Fatalf("no process %s of pod %s on this node", binary, uid)
	return 0
}

var pathLine = regexp.MustCompile(`^received event id=(\S+) .* path=(\S+)$`)

// cgroupMemory reads a pod's peak memory and limit from its cgroup on the node (cgroup v1,
// cgroupfs driver: kubepods[/<qos>]/pod<uid>).
func cgroupMemory(uid string) (peak, limit int64, err error) {
	var dirs []string
	for _, pattern := range []string{"/sys/fs/cgroup/memory/kubepods/pod%s", "/sys/fs/cgroup/memory/kubepods/*/pod%s", "/sys/fs/cgroup/memory/*/kubepods/*/pod%s"} {
		m, _ := filepath.Glob(fmt.Sprintf(pattern, uid))
		dirs = append(dirs, m...)
	}
	if len(dirs) == 0 {
		return 0, 0, fmt.Errorf("no memory cgroup of pod %s on this node", uid)
	}
	read := func(name string) (int64, error) {
		b, err := os.ReadFile(filepath.Join(dirs[0], name))
		if err != nil {
			return 0, err
		}
		return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	}
	if peak, err = read("memory.max_usage_in_bytes"); err != nil {
		return 0, 0, err
	}
	limit, err = read("memory.limit_in_bytes")
	return peak, limit, err
}

// subscribersReady waits until the channel's status lists n subscribers, all ready: a new
// subscription starts at the end of the topic once its consumer group has joined (as Knative
// channels do), so events sent before that are not its to receive. The channel's Ready does not
// wait for it; Knative's Subscription does.
func (e *env) subscribersReady(t *testing.T, ns, channel string, n int, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, fmt.Sprintf("%s has %d ready subscribers", channel, n), func() (bool, string) {
		out, _ := e.kubectl("", "-n", ns, "get", "kafkachannel", channel, "-o", `jsonpath={range .status.subscribers[*]}{.ready}{" "}{end}`)
		f := strings.Fields(out)
		ready := 0
		for _, r := range f {
			if r == "True" {
				ready++
			}
		}
		return ready == n && len(f) == n, fmt.Sprintf("%d of %d ready", ready, n)
	})
}

// readyChannel waits until kubectl get kafkachannels shows the channel Ready with its
// in-cluster address, and returns that address.
func (e *env) readyChannel(t *testing.T, ns, channel string) string {
	t.Helper()
	url := fmt.Sprintf("http://%s-kn-channel.%s.svc.cluster.local", channel, ns)
	eventually(t, 4*time.Minute, channel+" is Ready at "+url, func() (bool, string) {
		out, _ := e.kubectl("", "-n", ns, "get", "kafkachannels", channel, "--no-headers")
		f := strings.Fields(out)
		return len(f) >= 4 && f[1] == "True" && f[3] == url, out
	})
	return url
}

// arrived waits until sub got n distinct events of prefix: the stream is flowing.
func (e *env) arrived(t *testing.T, ns, sub, prefix string, n int) {
	t.Helper()
	eventually(t, 3*time.Minute, fmt.Sprintf("the first %d %s events arrive", n, prefix), func() (bool, string) {
		got := 0
		for id := range e.delivered(t, ns, sub).count {
			if strings.HasPrefix(id, prefix+"-") {
				got++
			}
		}
		return got >= n, fmt.Sprint(got)
	})
}
