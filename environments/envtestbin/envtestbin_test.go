package envtestbin

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"
)

// The helper looks where the Makefile builds: same version.
func TestVersionMatchesTheMakefile(t *testing.T) {
	mk, err := os.ReadFile(filepath.Join("..", "..", "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^ENVTEST_K8S_VERSION \?= (\S+)$`).FindSubmatch(mk)
	if m == nil {
		t.Fatal("ENVTEST_K8S_VERSION not found in the Makefile")
	}
	if string(m[1]) != K8sVersion {
		t.Fatalf("Makefile builds envtest %s, the tests look for %s", m[1], K8sVersion)
	}
}

func TestFind(t *testing.T) {
	if testing.Short() {
		if _, skip := Find(); skip == "" {
			t.Fatal("Find under -short gave no reason to skip")
		}
		return
	}
	dir := t.TempDir()
	t.Setenv("KUBEBUILDER_ASSETS", dir)
	if got, skip := Find(); got != "" || skip == "" {
		t.Fatalf("empty assets dir: got %q, skip %q; want a reason", got, skip)
	}
	for _, b := range []string{"kube-apiserver", "etcd"} {
		if err := os.WriteFile(filepath.Join(dir, b), nil, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if got, skip := Find(); got != dir || skip != "" {
		t.Fatalf("got %q, skip %q; want %q", got, skip, dir)
	}
	cache := t.TempDir()
	t.Setenv("KUBEBUILDER_ASSETS", "")
	t.Setenv("CACHE_DIR", "")
	t.Setenv("XDG_CACHE_HOME", cache)
	if want := filepath.Join(cache, "kafkachannel", "envtest", "k8s", K8sVersion+"-linux-amd64"); DefaultDir() != want {
		t.Fatalf("DefaultDir() = %q, want %q", DefaultDir(), want)
	}
	// The Makefile's CACHE_DIR wins over XDG_CACHE_HOME, as in the Makefile.
	t.Setenv("CACHE_DIR", filepath.Join(cache, "mine"))
	if want := filepath.Join(cache, "mine", "envtest", "k8s", K8sVersion+"-linux-amd64"); DefaultDir() != want || Dir() != want {
		t.Fatalf("DefaultDir() = %q, Dir() = %q, want %q", DefaultDir(), Dir(), want)
	}
	t.Setenv("CACHE_DIR", "")
	if _, skip := Find(); skip == "" {
		t.Fatal("missing default dir: want a reason to skip")
	}
}
