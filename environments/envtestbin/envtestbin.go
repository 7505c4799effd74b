// Package envtestbin finds the envtest control plane (kube-apiserver, etcd) for tests, the one
// way every suite does: KUBEBUILDER_ASSETS when set, else where `make envtest` builds it. A
// suite that cannot have it (-short, or not built) skips its envtest tests with the reason
// instead of failing, and keeps running the tests that need no cluster.
package envtestbin

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/kafkachannel/kafkachannel/environments/apachekafka"
)

// K8sVersion is the Makefile's ENVTEST_K8S_VERSION (a test keeps them equal).
const K8sVersion = "1.35.4"

// DefaultDir is the Makefile's ENVTEST_ASSETS default: <cache dir>/envtest/k8s/<version>-linux-amd64,
// the cache dir being the Makefile's CACHE_DIR (apachekafka.CacheDir owns that rule).
func DefaultDir() string {
	return filepath.Join(apachekafka.CacheDir(), "envtest", "k8s", K8sVersion+"-linux-amd64")
}

// Dir is where the envtest binaries are: KUBEBUILDER_ASSETS when set, else DefaultDir.
func Dir() string {
	if d := os.Getenv("KUBEBUILDER_ASSETS"); d != "" {
		return d
	}
	return DefaultDir()
}

// Find returns the directory holding kube-apiserver and etcd and sets KUBEBUILDER_ASSETS to
// it, so envtest.Environment finds them; or, when envtest tests cannot run, the reason to skip
// them. Call it after flag.Parse (in TestMain), since it honours -short.
func Find() (dir, skip string) {
	if testing.Short() {
		return "", "envtest tests skipped under -short"
	}
	dir = os.Getenv("KUBEBUILDER_ASSETS")
	from := "KUBEBUILDER_ASSETS"
	if dir == "" {
		dir, from = DefaultDir(), "the Makefile's default"
	}
	for _, bin := range []string{"kube-apiserver", "etcd"} {
		if _, err := os.Stat(filepath.Join(dir, bin)); err != nil {
			return "", fmt.Sprintf("envtest tests skipped: no %s in %s (%s); run `make envtest` or set KUBEBUILDER_ASSETS", bin, dir, from)
		}
	}
	if err := os.Setenv("KUBEBUILDER_ASSETS", dir); err != nil {
		return "", fmt.Sprintf("envtest tests skipped: setting KUBEBUILDER_ASSETS: %v", err)
	}
	return dir, ""
}

// Require skips t unless the envtest binaries can run, and returns their directory: Find and
// Skip in one, for tests in packages without a TestMain that calls Find.
func Require(t testing.TB) string {
	t.Helper()
	dir, reason := Find()
	Skip(t, reason)
	return dir
}

// Skip skips t when reason (from Find) is not empty.
func Skip(t testing.TB, reason string) {
	t.Helper()
	if reason != "" {
		t.Skip(reason)
	}
}
