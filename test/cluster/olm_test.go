package cluster

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// olmEnv is what make test-olm hands the OLM test: operator-sdk, the opm image that serves as
// index and decompression image, the two bundle images and the namespace OLM installs into.
type olmEnv struct {
	sdk, opm, bundle1, bundle2, ns string
	// index is the opm image through registryFront, caFile the CA operator-sdk trusts for it.
	index, caFile string
}

func olmSettings(t *testing.T) olmEnv {
	t.Helper()
	if os.Getenv("KAFKACHANNEL_OLM") != "1" {
		t.Skip("make test-olm runs this (KAFKACHANNEL_OLM=1): it needs OLM on the cluster")
	}
	o := olmEnv{sdk: os.Getenv("OPERATOR_SDK"), opm: os.Getenv("OPM_IMG"), bundle1: os.Getenv("BUNDLE_IMG"),
		bundle2: os.Getenv("BUNDLE_IMG_NEXT"), ns: os.Getenv("OLM_NAMESPACE")}
	if o.sdk == "" || o.opm == "" || o.bundle1 == "" || o.bundle2 == "" || o.ns == "" {
		t.Fatalf("make test-olm sets OPERATOR_SDK, OPM_IMG, BUNDLE_IMG, BUNDLE_IMG_NEXT and OLM_NAMESPACE: %+v", o)
	}
	return o
}

// csvOf names the CSV of a bundle image tagged vVERSION (make bundle names it kafkachannel.vVERSION).
func csvOf(bundleImage string) string {
	return "kafkachannel." + bundleImage[strings.LastIndex(bundleImage, ":")+1:]
}

// sdkRun runs operator-sdk against the cluster and logs how long it took.
func (e *env) sdkRun(t *testing.T, o olmEnv, args ...string) {
	t.Helper()
	start := time.Now()
	cmd := exec.Command(o.sdk, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+e.kubeconfig, "SSL_CERT_FILE="+o.caFile)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("operator-sdk %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	t.Logf("operator-sdk %s (%.0f s):\n%s", args[0]+" "+args[1], time.Since(start).Seconds(), out)
}

// csvPhase is the phase of the named ClusterServiceVersion in ns, or "" while it is absent.
func (e *env) csvPhase(ns, name string) string {
	out, _ := e.kubectl("", "-n", ns, "get", "csv", name, "-o", "jsonpath={.status.phase}")
	return strings.TrimSpace(out)
}

// The operator installed by OLM from its bundle (operator-sdk run bundle, the index served by
// the opm built here), a channel delivering through it, then an OLM upgrade to the next
// bundle while a sender keeps posting to that channel: every event the channel accepted
// before, during and after the upgrade reaches the subscriber.
func TestOLMInstallAndUpgrade(t *testing.T) {
	e := clusterEnv(t)
	o := olmSettings(t)

	e.mustKubectl(t, "", "create", "namespace", o.ns)
	ns := fmt.Sprintf("kc-olm-%d", time.Now().Unix()%100000)
	e.mustKubectl(t, "", "create", "namespace", ns)
	e.mustKubectl(t, "", "label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted")
	t.Cleanup(func() {
		if t.Failed() && os.Getenv("KEEP") != "" {
			t.Logf("kept namespaces %s and %s (KEEP set)", ns, o.ns)
			return
		}
		_, _ = e.kubectl("", "delete", "namespace", ns, "--wait=true", "--timeout=2m")
		// The CRD stays: other installations on the cluster (make deploy) serve it too.
		cmd := exec.Command(o.sdk, "cleanup", "kafkachannel", "--namespace", o.ns, "--delete-crds=false", "--timeout", "3m")
		cmd.Env = append(os.Environ(), "KUBECONFIG="+e.kubeconfig)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Logf("operator-sdk cleanup: %v\n%s", err, out)
		}
		_, _ = e.kubectl("", "delete", "namespace", o.ns, "--wait=false")
	})

	front, caFile := e.registryFront(t)
	o.index, o.caFile = strings.Replace(o.opm, e.registry, front, 1), caFile

	t.Log("operator-sdk run bundle: OLM installs the operator from the bundle image")
	e.sdkRun(t, o, "run", "bundle", o.bundle1, "--namespace", o.ns, "--index-image", o.index,
		"--decompression-image", o.opm, "--use-http", "--install-mode", "AllNamespaces", "--timeout", "8m")
	if p := e.csvPhase(o.ns, csvOf(o.bundle1)); p != "Succeeded" {
		t.Fatalf("CSV %s is %q", csvOf(o.bundle1), p)
	}
	e.rolledOut(t, o.ns, "app.kubernetes.io/component=manager", 3*time.Minute)

	e.buildSender(t)
	e.mustKubectl(t, e.subscriber(ns, "sub-olm"), "apply", "-f", "-")
	e.rolledOut(t, ns, "", 3*time.Minute)
	channel := "olm"
	e.mustKubectl(t, fmt.Sprintf(`apiVersion: messaging.knative.dev/v1beta1
kind: KafkaChannel
metadata: {name: %[1]s, namespace: %[2]s}
spec:
  numPartitions: 4
  replicationFactor: 1
  delivery: {retry: 10, backoffPolicy: exponential, backoffDelay: PT0.2S}
  subscribers:
  - {uid: 00000000-0000-0000-0000-0000000000c1, generation: 1, subscriberUri: "http://sub-olm.%[2]s.svc.cluster.local/"}
`, channel, ns), "apply", "-f", "-")
	url := fmt.Sprintf("http://%s-kn-channel.%s.svc.cluster.local", channel, ns)
	eventually(t, 4*time.Minute, "the channel is Ready", func() (bool, string) {
		out, _ := e.kubectl("", "-n", ns, "get", "kafkachannels", channel, "--no-headers")
		f := strings.Fields(out)
		return len(f) >= 4 && f[1] == "True" && f[3] == url, out
	})
	e.subscribersReady(t, ns, channel, 1, 2*time.Minute)

	if !t.Run("the OLM-installed operator serves a channel", func(t *testing.T) {
		e.send(t, ns, "olm1", url, 100, 5*time.Millisecond)
		t.Log(e.sent(t, ns, "olm1", 5*time.Minute))
		e.allDelivered(t, ns, "olm1", 100, 3*time.Minute, "sub-olm")
	}) {
		t.FailNow()
	}

	t.Run("operator-sdk run bundle-upgrade under load: 0 events lost", func(t *testing.T) {
		// Three minutes and more of events at 20 ms: they span the upgrade, which replaces the
		// manager and, through it, the receiver and dispatcher Deployments with the next version's
		// images (checked below: the sender must still be sending when that is done).
		const count = 9000
		e.send(t, ns, "upg", url, count, 20*time.Millisecond)
		e.arrived(t, ns, "sub-olm", "upg", 50)
		e.sdkRun(t, o, "run", "bundle-upgrade", o.bundle2, "--namespace", o.ns, "--use-http", "--timeout", "8m")
		if p := e.csvPhase(o.ns, csvOf(o.bundle2)); p != "Succeeded" {
			t.Fatalf("CSV %s is %q", csvOf(o.bundle2), p)
		}
		eventually(t, 3*time.Minute, "the old CSV is replaced", func() (bool, string) {
			p := e.csvPhase(o.ns, csvOf(o.bundle1))
			return p == "", p
		})
		e.rolledOut(t, o.ns, "app.kubernetes.io/component=manager", 3*time.Minute)
		// The upgrade is only a test of the data plane if its Deployments moved to the next images.
		next := o.bundle2[strings.LastIndex(o.bundle2, ":"):]
		eventually(t, 3*time.Minute, "every Deployment runs the next version's images", func() (bool, string) {
			out, _ := e.kubectl("", "-n", o.ns, "get", "deploy", "-o",
				`jsonpath={range .items[*]}{.metadata.name} {.spec.template.spec.containers[0].image}{"\n"}{end}`)
			lines := strings.Split(strings.TrimSpace(out), "\n")
			for _, l := range lines {
				if !strings.HasSuffix(l, next) {
					return false, out
				}
			}
			return len(lines) >= 2, out
		})
		e.rolledOut(t, o.ns, "", 3*time.Minute)
		if phase, _ := e.kubectl("", "-n", ns, "get", "pod", "send-upg", "-o", "jsonpath={.status.phase}"); phase != "Running" {
			t.Fatalf("the sender was %q when the upgrade had rolled out: the load did not span it (raise count)", phase)
		}
		t.Logf("after the upgrade:\n%s", e.mustKubectl(t, "", "-n", o.ns, "get", "deploy,pods", "-o", "wide"))
		summary := e.sent(t, ns, "upg", 10*time.Minute)
		t.Log(summary)
		dups := e.allDelivered(t, ns, "upg", count, 5*time.Minute, "sub-olm")
		t.Logf("all %d events delivered, 0 lost; duplicates (at least once): %v", count, dups)
	})
}
