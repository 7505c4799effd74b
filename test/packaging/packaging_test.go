// Package packaging checks the manifests a user installs, without a cluster: they render, a real
// kube-apiserver accepts them (server-side dry-run, with Pod Security admission enforcing the
// restricted profile), and each ServiceAccount may do exactly what its component needs.
package packaging

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/kafkachannel/kafkachannel/environments/envtestbin"
)

var (
	testEnv    *envtest.Environment
	kubeconfig string
	repoRoot   = filepath.Join("..", "..")
)

const operatorNamespace = "kafkachannel-system"

// noEnv says why the envtest tests skip; empty when the control plane runs.
var noEnv string

func TestMain(m *testing.M) {
	flag.Parse()
	if _, noEnv = envtestbin.Find(); noEnv != "" {
		fmt.Println("test/packaging:", noEnv)
		os.Exit(m.Run())
	}
	if _, err := exec.LookPath("kubectl"); err != nil {
		fmt.Println("kubectl is required for the packaging tests")
		os.Exit(1)
	}
	// Knative's EventPolicy CRD (a test stand-in), so access reviews can name its resource.
	testEnv = &envtest.Environment{CRDDirectoryPaths: []string{filepath.Join(repoRoot, "test", "crds")}, ErrorIfCRDPathMissing: true}
	if _, err := testEnv.Start(); err != nil {
		panic(err)
	}
	user, err := testEnv.AddUser(envtest.User{Name: "admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		panic(err)
	}
	kc, err := user.KubeConfig()
	if err != nil {
		panic(err)
	}
	dir, _ := os.MkdirTemp("", "packaging")
	kubeconfig = filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, kc, 0o600); err != nil {
		panic(err)
	}
	code := m.Run()
	_ = testEnv.Stop()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

func kubectl(t *testing.T, stdin []byte, args ...string) (string, error) {
	t.Helper()
	// Every call to the API server goes through here, so a test that forgets the guard skips
	// where there is no server instead of failing against localhost:8080.
	envtestbin.Skip(t, noEnv)
	cmd := exec.Command("kubectl", append([]string{"--kubeconfig", kubeconfig}, args...)...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func render(t *testing.T, dir string) []byte {
	t.Helper()
	cmd := exec.Command("./hack/render.sh", dir, "example.com/mgr:v1", "example.com/disp:v1", "example.com/recv:v1")
	cmd.Dir = repoRoot
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("rendering %s: %v", dir, err)
	}
	return out
}

// installed applies config/default for real once (CRD, namespace, RBAC), so the dry-runs and
// access reviews have something to judge against.
func installed(t *testing.T) []byte {
	t.Helper()
	manifests := render(t, "config/default")
	if out, err := kubectl(t, manifests, "apply", "--server-side", "-f", "-"); err != nil {
		t.Fatalf("apply config/default: %v\n%s", err, out)
	}
	return manifests
}

func TestRenderedManifestsWireTheImages(t *testing.T) {
	m := string(render(t, "config/default"))
	for _, want := range []string{"image: example.com/mgr:v1", "value: example.com/disp:v1", "value: example.com/recv:v1",
		"name: DISPATCHER_IMAGE", "name: RECEIVER_IMAGE"} {
		if !strings.Contains(m, want) {
			t.Errorf("rendered config/default lacks %q", want)
		}
	}
	// The env patch addresses DISPATCHER_IMAGE and RECEIVER_IMAGE by position: make sure the
	// values landed on the right names.
	if i, j := strings.Index(m, "name: DISPATCHER_IMAGE"), strings.Index(m, "value: example.com/disp:v1"); j < i || j-i > 60 {
		t.Errorf("DISPATCHER_IMAGE is not followed by the dispatcher image")
	}
	if i, j := strings.Index(m, "name: RECEIVER_IMAGE"), strings.Index(m, "value: example.com/recv:v1"); j < i || j-i > 60 {
		t.Errorf("RECEIVER_IMAGE is not followed by the receiver image")
	}
}

func TestManifestsPassServerSideDryRunUnderRestrictedPodSecurity(t *testing.T) {
	envtestbin.Skip(t, noEnv)
	installed(t)
	// Pod Security admission must really be judging: a privileged pod is refused.
	bad := []byte(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"bad","namespace":"` + operatorNamespace + `"},
		"spec":{"containers":[{"name":"c","image":"x","securityContext":{"privileged":true}}]}}`)
	if out, err := kubectl(t, bad, "apply", "--dry-run=server", "-f", "-"); err == nil || !strings.Contains(out, "violates PodSecurity") {
		t.Fatalf("a privileged pod was not refused in the restricted namespace; Pod Security admission is not active: %s", out)
	}
	for _, dir := range []string{"config/default", "config/samples", "config/samples/kafka"} {
		t.Run(dir, func(t *testing.T) {
			manifests := render(t, dir)
			if strings.HasPrefix(dir, "config/samples") {
				// Namespaces must exist before objects in them can be dry-run.
				for _, ns := range []string{"kafka"} {
					nsObj := []byte(`{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"` + ns + `","labels":{"pod-security.kubernetes.io/enforce":"restricted"}}}`)
					if out, err := kubectl(t, nsObj, "apply", "--server-side", "-f", "-"); err != nil {
						t.Fatalf("%v: %s", err, out)
					}
				}
				// The samples' default namespace is judged as restricted too.
				if out, err := kubectl(t, nil, "label", "--overwrite", "namespace", "default", "pod-security.kubernetes.io/enforce=restricted"); err != nil {
					t.Fatalf("%v: %s", err, out)
				}
			}
			out, err := kubectl(t, manifests, "apply", "--server-side", "--dry-run=server", "-f", "-")
			if err != nil {
				t.Fatalf("server-side dry-run of %s failed: %v\n%s", dir, err, out)
			}
			if strings.Contains(out, "Warning") {
				t.Errorf("dry-run of %s warned:\n%s", dir, out)
			}
		})
	}
}

// RBAC, proven by asking the apiserver what each ServiceAccount may do.
func TestServiceAccountsHaveLeastPrivilege(t *testing.T) {
	envtestbin.Skip(t, noEnv)
	installed(t)
	sa := func(name string) string {
		return "system:serviceaccount:" + operatorNamespace + ":kafkachannel-" + name
	}
	tests := []struct {
		who   string
		verb  string
		what  string
		ns    string
		allow bool
	}{
		{sa("dispatcher"), "get", "kafkachannels.messaging.knative.dev", "team-a", true},
		{sa("dispatcher"), "watch", "kafkachannels.messaging.knative.dev", "team-a", true},
		{sa("dispatcher"), "patch", "kafkachannels.messaging.knative.dev/status", "team-a", true},
		{sa("dispatcher"), "update", "kafkachannels.messaging.knative.dev/status", "team-a", false},
		{sa("dispatcher"), "update", "kafkachannels.messaging.knative.dev", "team-a", false},
		{sa("dispatcher"), "delete", "kafkachannels.messaging.knative.dev", "team-a", false},
		{sa("dispatcher"), "get", "secrets", operatorNamespace, false},
		{sa("dispatcher"), "list", "configmaps", operatorNamespace, false},
		{sa("dispatcher"), "create", "deployments.apps", operatorNamespace, false},
		{sa("receiver"), "list", "kafkachannels.messaging.knative.dev", "team-a", true},
		{sa("receiver"), "watch", "kafkachannels.messaging.knative.dev", "team-a", true},
		{sa("receiver"), "patch", "kafkachannels.messaging.knative.dev/status", "team-a", false},
		{sa("receiver"), "update", "kafkachannels.messaging.knative.dev", "team-a", false},
		{sa("receiver"), "get", "secrets", operatorNamespace, false},
		{sa("receiver"), "create", "pods", operatorNamespace, false},
		{sa("receiver"), "list", "eventpolicies.eventing.knative.dev", "team-a", true},
		{sa("receiver"), "watch", "eventpolicies.eventing.knative.dev", "team-a", true},
		{sa("receiver"), "create", "eventpolicies.eventing.knative.dev", "team-a", false},
		{sa("receiver"), "create", "serviceaccounts/token", "team-a", false},
		{sa("dispatcher"), "create", "serviceaccounts/token", "team-a", true},
		{sa("dispatcher"), "get", "serviceaccounts", "team-a", false},
		{sa("dispatcher"), "list", "eventpolicies.eventing.knative.dev", "team-a", false},
		{sa("manager"), "patch", "kafkachannels.messaging.knative.dev/status", "team-a", true},
		{sa("manager"), "update", "kafkachannels.messaging.knative.dev/finalizers", "team-a", true},
		{sa("manager"), "create", "deployments.apps", operatorNamespace, true},
		{sa("manager"), "delete", "services", "team-a", true},
		{sa("manager"), "get", "secrets", operatorNamespace, true},
		{sa("manager"), "create", "secrets", operatorNamespace, false},
		{sa("manager"), "delete", "secrets", operatorNamespace, false},
		{sa("manager"), "create", "kafkachannels.messaging.knative.dev", "team-a", false},
		{sa("manager"), "create", "pods/exec", operatorNamespace, false},
		{sa("manager"), "create", "clusterrolebindings.rbac.authorization.k8s.io", "", false},
		{sa("manager"), "create", "leases.coordination.k8s.io", operatorNamespace, true},
		{sa("manager"), "create", "leases.coordination.k8s.io", "team-a", false},
		{sa("manager"), "create", "tokenreviews.authentication.k8s.io", "", true},
		// ResetOffsets: the manager drives them and pauses subscribers through a channel
		// annotation. (Its get on Knative Subscriptions cannot be asked here: kubectl answers
		// "no" for a resource type the apiserver does not serve, and this one has no Knative.)
		{sa("manager"), "watch", "resetoffsets.kafka.eventing.knative.dev", "team-a", true},
		{sa("manager"), "patch", "resetoffsets.kafka.eventing.knative.dev/status", "team-a", true},
		{sa("manager"), "update", "resetoffsets.kafka.eventing.knative.dev/finalizers", "team-a", true},
		{sa("manager"), "create", "resetoffsets.kafka.eventing.knative.dev", "team-a", false},
		{sa("manager"), "patch", "kafkachannels.messaging.knative.dev", "team-a", true},
		{sa("dispatcher"), "get", "resetoffsets.kafka.eventing.knative.dev", "team-a", false},
		{sa("receiver"), "list", "resetoffsets.kafka.eventing.knative.dev", "team-a", false},
		{sa("manager"), "watch", "eventpolicies.eventing.knative.dev", "team-a", true},
		{sa("manager"), "create", "eventpolicies.eventing.knative.dev", "team-a", false},
		{sa("manager"), "create", "serviceaccounts/token", "team-a", false},
	}
	for _, tt := range tests {
		name := fmt.Sprintf("%s %s %s in %q", tt.who[strings.LastIndex(tt.who, ":")+1:], tt.verb, tt.what, tt.ns)
		t.Run(name, func(t *testing.T) {
			resource, sub, _ := strings.Cut(tt.what, "/")
			args := []string{"auth", "can-i", tt.verb, resource, "--as=" + tt.who}
			if sub != "" {
				args = append(args, "--subresource="+sub)
			}
			if tt.ns != "" {
				args = append(args, "-n", tt.ns)
			}
			out, _ := kubectl(t, nil, args...)
			// The answer is the last line; kubectl may warn above it for cluster-scoped resources.
			lines := strings.Split(strings.TrimSpace(out), "\n")
			got := strings.TrimSpace(lines[len(lines)-1])
			if !strings.HasPrefix(got, "yes") && !strings.HasPrefix(got, "no") {
				t.Fatalf("kubectl auth can-i: %s", got)
			}
			if strings.HasPrefix(got, "yes") != tt.allow {
				t.Errorf("allowed = %s, want %v", got, tt.allow)
			}
		})
	}
}

// The Knative channel specification asks for two aggregated ClusterRoles. Aggregation itself is
// done by kube-controller-manager, which envtest does not run; the labels and rules are what
// we control. The verbs are the specification's ("create, get, list, watch, patch, update and
// delete the CRD's custom objects and their status"): Knative's rekt control-plane conformance
// checks each of them, delete included, through an access review for a bound service account.
func TestKnativeAggregatedClusterRoles(t *testing.T) {
	envtestbin.Skip(t, noEnv)
	installed(t)
	for _, tc := range []struct {
		role, label string
		verbs       []string
	}{
		{"kafkachannel-channelable-manipulator", "duck.knative.dev/channelable", []string{"create", "get", "list", "watch", "update", "patch", "delete"}},
		{"kafkachannel-addressable-resolver", "duck.knative.dev/addressable", []string{"get", "list", "watch"}},
	} {
		out, err := kubectl(t, nil, "get", "clusterrole", tc.role, "-o", "jsonpath={.metadata.labels}{\"\\n\"}{.rules}")
		if err != nil {
			t.Fatalf("%s: %v %s", tc.role, err, out)
		}
		if !strings.Contains(out, `"`+tc.label+`":"true"`) {
			t.Errorf("%s lacks label %s=true: %s", tc.role, tc.label, out)
		}
		for _, v := range tc.verbs {
			if !strings.Contains(out, `"`+v+`"`) {
				t.Errorf("%s lacks verb %s: %s", tc.role, v, out)
			}
		}
		if !strings.Contains(out, "kafkachannels/status") {
			t.Errorf("%s does not cover kafkachannels/status", tc.role)
		}
	}
}

// Users replay with ResetOffsets through the built-in edit/admin/view roles, which aggregate
// these ClusterRoles by label.
func TestResetOffsetUserRoles(t *testing.T) {
	envtestbin.Skip(t, noEnv)
	installed(t)
	for _, tc := range []struct {
		role   string
		labels []string
		verbs  []string
	}{
		{"kafkachannel-resetoffset-editor", []string{"rbac.authorization.k8s.io/aggregate-to-edit", "rbac.authorization.k8s.io/aggregate-to-admin"}, []string{"create", "get", "list", "watch", "delete"}},
		{"kafkachannel-resetoffset-viewer", []string{"rbac.authorization.k8s.io/aggregate-to-view"}, []string{"get", "list", "watch"}},
	} {
		out, err := kubectl(t, nil, "get", "clusterrole", tc.role, "-o", "jsonpath={.metadata.labels}{\"\\n\"}{.rules}")
		if err != nil {
			t.Fatalf("%s: %v %s", tc.role, err, out)
		}
		for _, l := range tc.labels {
			if !strings.Contains(out, `"`+l+`":"true"`) {
				t.Errorf("%s lacks label %s=true: %s", tc.role, l, out)
			}
		}
		for _, v := range tc.verbs {
			if !strings.Contains(out, `"`+v+`"`) {
				t.Errorf("%s lacks verb %s: %s", tc.role, v, out)
			}
		}
		if !strings.Contains(out, "resetoffsets") || strings.Contains(out, `"update"`) || strings.Contains(out, `"patch"`) {
			t.Errorf("%s: want resetoffsets without update or patch (the spec is immutable): %s", tc.role, out)
		}
	}
}
