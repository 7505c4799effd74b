package packaging

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"
)

// csvPermissions is the part of a ClusterServiceVersion that says which rules OLM grants to
// which ServiceAccount of the namespace it installs the operator into.
type csvPermissions struct {
	Spec struct {
		Install struct {
			Spec struct {
				ClusterPermissions []struct {
					ServiceAccountName string              `json:"serviceAccountName"`
					Rules              []rbacv1.PolicyRule `json:"rules"`
				} `json:"clusterPermissions"`
			} `json:"spec"`
		} `json:"install"`
	} `json:"spec"`
}

// bundleManifest is what the test needs of any file in bundle/manifests.
type bundleManifest struct {
	Kind     string                `json:"kind"`
	Metadata struct{ Name string } `json:"metadata"`
	Subjects []rbacv1.Subject      `json:"subjects"`
}

// clusterRoles reads the ClusterRoles of a multi-document YAML file, by name.
func clusterRoles(t *testing.T, path string) map[string][]rbacv1.PolicyRule {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	roles := map[string][]rbacv1.PolicyRule{}
	for _, doc := range bytes.Split(data, []byte("\n---\n")) {
		var r rbacv1.ClusterRole
		if err := yaml.Unmarshal(doc, &r); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if r.Kind == "ClusterRole" {
			roles[r.Name] = r.Rules
		}
	}
	return roles
}

// OLM installs the operator into a namespace the user picks and creates the ServiceAccounts and
// the bindings of the CSV's permissions there. A ClusterRoleBinding shipped as a plain bundle
// manifest keeps the namespace it was rendered with (kafkachannel-system), so the dispatcher and
// receiver pods of an operator installed anywhere else got no rights at all. Their rules must
// come through the CSV, bound to their ServiceAccount, and no bundled binding may name them.
func TestBundleGrantsDataPlaneRulesInTheInstallNamespace(t *testing.T) {
	want := clusterRoles(t, filepath.Join(repoRoot, "config", "rbac", "dataplane_roles.yaml"))
	dir := filepath.Join(repoRoot, "bundle", "manifests")
	data, err := os.ReadFile(filepath.Join(dir, "kafkachannel.clusterserviceversion.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var csv csvPermissions
	if err := yaml.Unmarshal(data, &csv); err != nil {
		t.Fatalf("the CSV: %v", err)
	}
	granted := map[string][]rbacv1.PolicyRule{}
	for _, p := range csv.Spec.Install.Spec.ClusterPermissions {
		granted[p.ServiceAccountName] = p.Rules
	}
	for _, sa := range []string{"kafkachannel-dispatcher", "kafkachannel-receiver"} {
		t.Run(sa, func(t *testing.T) {
			if len(want[sa]) == 0 {
				t.Fatalf("config/rbac/dataplane_roles.yaml has no ClusterRole %s", sa)
			}
			got, ok := granted[sa]
			if !ok {
				t.Fatalf("the CSV's clusterPermissions grant nothing to ServiceAccount %s", sa)
			}
			if !reflect.DeepEqual(got, want[sa]) {
				t.Errorf("the CSV grants %s\n%+v\nwant the rules of its ClusterRole\n%+v", sa, got, want[sa])
			}
			assertNoBundledBinding(t, dir, sa)
		})
	}
}

// assertNoBundledBinding fails if a binding in the bundle names the ServiceAccount: its
// namespace would be the rendered one, not the one OLM installs into.
func assertNoBundledBinding(t *testing.T, dir, sa string) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var m bundleManifest
		if err := yaml.Unmarshal(data, &m); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if m.Kind != "ClusterRoleBinding" && m.Kind != "RoleBinding" {
			continue
		}
		for _, s := range m.Subjects {
			if s.Kind == "ServiceAccount" && s.Name == sa {
				t.Errorf("%s binds %s in namespace %q, fixed at render time", filepath.Base(f), sa, s.Namespace)
			}
		}
	}
}
