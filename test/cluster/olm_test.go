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

// csvAbsent is what csvPhase reports for a CSV that does not exist (not yet, or no more).
const csvAbsent = "absent"

// csvPhase is the phase of the named ClusterServiceVersion in ns, csvAbsent when there is none,
// or kubectl's error for any other failure (never mistaken for a phase).
func (e *env) csvPhase(ns, name string) string {
	out, err := e.kubectl("", "-n", ns, "get", "csv", name, "--ignore-not-found", "-o", "jsonpath={.status.phase}")
	switch out = strings.TrimSpace(out); {
	case err != nil:
		return "error: " + out
	case out == "":
		// --ignore-not-found prints nothing for a missing CSV; a CSV OLM has not given a phase yet
		// prints nothing too, so ask for its name to tell the two apart.
		if name, _ := e.kubectl("", "-n", ns, "get", "csv", name, "--ignore-not-found", "-o", "name"); strings.TrimSpace(name) == "" {
			return csvAbsent
		}
		return ""
	default:
		return out
	}
}

// operator-sdk v1.42.2 gives the registry pod of run bundle-upgrade (unlike run bundle) no
// --decompression-image: its init container always uses fbcutil.DefaultInitImage, which is on
// registry.access.redhat.com and cannot be pulled here.
const sdkDefaultInitImage = "registry.access.redhat.com/ubi9/ubi:9.7"

// mirrorInitImage makes sdkDefaultInitImage pullable on the node: the opm image built here (it
// has the sh, gzip and cat the init container runs) copied to the same repository and tag in
// the cluster's registry, and a containerd hosts.toml that sends that registry's pulls there.
func (e *env) mirrorInitImage(t *testing.T, o olmEnv) {
	t.Helper()
	host, repoTag, _ := strings.Cut(sdkDefaultInitImage, "/")
	crane := os.Getenv("CRANE")
	if crane == "" {
		t.Fatal("CRANE is unset: make test-olm passes the pinned crane")
	}
	if out, err := exec.Command(crane, "copy", "--insecure", o.opm, e.registry+"/"+repoTag).CombinedOutput(); err != nil {
		t.Fatalf("crane copy %s: %v\n%s", o.opm, err, out)
	}
	e.redirectRegistry(t, host)
}

// dataPlaneGranted asks the cluster whether the data plane's ServiceAccounts in the namespace
// OLM installed into hold their rules: the bundle grants them through the CSV, which OLM binds
// there (a binding shipped in the bundle would name kafkachannel-system instead).
func (e *env) dataPlaneGranted(t *testing.T, ns string) {
	t.Helper()
	for _, c := range []struct{ sa, verb, resource, sub string }{
		{"kafkachannel-dispatcher", "get", "kafkachannels.messaging.knative.dev", ""},
		{"kafkachannel-dispatcher", "patch", "kafkachannels.messaging.knative.dev", "status"},
		{"kafkachannel-receiver", "watch", "kafkachannels.messaging.knative.dev", ""},
	} {
		args := []string{"auth", "can-i", c.verb, c.resource, "-n", "default", "--as=system:serviceaccount:" + ns + ":" + c.sa}
		if c.sub != "" {
			args = append(args, "--subresource="+c.sub)
		}
		out, _ := e.kubectl("", args...)
		if lines := strings.Split(strings.TrimSpace(out), "\n"); lines[len(lines)-1] != "yes" {
			t.Errorf("%s in %s may not %s %s %s: %s", c.sa, ns, c.verb, c.resource, c.sub, out)
		}
	}
}

// otherManagers scales every KafkaChannel manager outside ns (a make deploy on the same cluster)
// to 0 until the test ends: each watches every namespace, so two of them would both reconcile the
// test's channel, each with its own data plane and its own view of the status.
func (e *env) otherManagers(t *testing.T, ns string) {
	t.Helper()
	out := e.mustKubectl(t, "", "get", "deploy", "-A", "-l", "app.kubernetes.io/component=manager,app.kubernetes.io/name=kafkachannel",
		"-o", `jsonpath={range .items[*]}{.metadata.namespace} {.metadata.name} {.spec.replicas}{"\n"}{end}`)
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(l)
		if len(f) != 3 || f[0] == ns || f[2] == "0" {
			continue
		}
		t.Logf("scaling %s/%s to 0 for the test (back to %s after)", f[0], f[1], f[2])
		e.mustKubectl(t, "", "-n", f[0], "scale", "deploy", f[1], "--replicas=0")
		t.Cleanup(func() {
			if out, err := e.kubectl("", "-n", f[0], "scale", "deploy", f[1], "--replicas="+f[2]); err != nil {
				t.Errorf("scaling %s/%s back to %s: %v\n%s", f[0], f[1], f[2], err, out)
			}
		})
	}
}

// The operator installed by OLM from its bundle (operator-sdk run bundle, the index served by
// the opm built here), a channel delivering through it, then an OLM upgrade to the next
// bundle while a sender keeps posting to that channel: every event the channel accepted
// before, during and after the upgrade reaches the subscriber.
func TestOLMInstallAndUpgrade(t *testing.T) {
	e := clusterEnv(t)
	o := olmSettings(t)
	// First, so that its cleanups (scaling back) run last, after OLM's operator is gone.
	e.otherManagers(t, o.ns)

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
		// The CRD stays: other installations on the cluster (make deploy) serve it too, and
		// deleting it deletes every KafkaChannel of the cluster. --delete-all defaults to true and
		// overrides --delete-crds=false, so it is turned off, and the OperatorGroup named instead.
		cmd := exec.Command(o.sdk, "cleanup", "kafkachannel", "--namespace", o.ns,
			"--delete-all=false", "--delete-crds=false", "--delete-operator-groups", "--timeout", "3m")
		cmd.Env = append(os.Environ(), "KUBECONFIG="+e.kubeconfig)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Logf("operator-sdk cleanup: %v\n%s", err, out)
		}
		_, _ = e.kubectl("", "delete", "namespace", o.ns, "--wait=false")
	})

	front, caFile := e.registryFront(t)
	o.index, o.caFile = strings.Replace(o.opm, e.registry, front, 1), caFile
	e.mirrorInitImage(t, o)

	t.Log("operator-sdk run bundle: OLM installs the operator from the bundle image")
	e.sdkRun(t, o, "run", "bundle", o.bundle1, "--namespace", o.ns, "--index-image", o.index,
		"--decompression-image", o.opm, "--use-http", "--install-mode", "AllNamespaces", "--timeout", "8m")
	if p := e.csvPhase(o.ns, csvOf(o.bundle1)); p != "Succeeded" {
		t.Fatalf("CSV %s is %q", csvOf(o.bundle1), p)
	}
	e.rolledOut(t, o.ns, "app.kubernetes.io/component=manager", 3*time.Minute)
	e.dataPlaneGranted(t, o.ns)

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
	url := e.readyChannel(t, ns, channel)
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
			return p == csvAbsent, p
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
