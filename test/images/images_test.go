// Package images checks what no Docker engine here can: that every image's binary builds with
// exactly the Dockerfile's flags, is fully static (it runs on distroless/static), and starts.
package images

import (
	"context"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestDockerfileBinariesAreStaticAndRun(t *testing.T) {
	if testing.Short() {
		t.Skip("builds three binaries")
	}
	root, _ := filepath.Abs(filepath.Join("..", ".."))
	dockerfile, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	// The build flags are read from the Dockerfile, so this test follows it rather than a copy.
	flags := regexp.MustCompile(`-ldflags "([^"]+)"`).FindSubmatch(dockerfile)
	if flags == nil || !strings.Contains(string(dockerfile), "CGO_ENABLED=0") || !strings.Contains(string(dockerfile), "-trimpath") {
		t.Fatal("the Dockerfile no longer builds with CGO_ENABLED=0 -trimpath -ldflags: update this test with it")
	}
	ldflags := strings.ReplaceAll(string(flags[1]), "${VERSION}", "test")
	for _, tc := range []struct{ target, pkg, entrypoint string }{
		{"manager", ".", "/manager"},
		{"dispatcher", "./cmd/dispatcher", "/dispatcher"},
		{"receiver", "./cmd/receiver", "/receiver"},
	} {
		t.Run(tc.target, func(t *testing.T) {
			if !strings.Contains(string(dockerfile), "FROM gcr.io/distroless/static:nonroot AS "+tc.target) ||
				!strings.Contains(string(dockerfile), `ENTRYPOINT ["`+tc.entrypoint+`"]`) {
				t.Fatalf("Dockerfile has no distroless target %s with entrypoint %s", tc.target, tc.entrypoint)
			}
			out := filepath.Join(t.TempDir(), tc.target)
			cmd := exec.Command("go", "build", "-trimpath", "-ldflags", ldflags, "-o", out, tc.pkg)
			cmd.Dir = root
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("build: %v\n%s", err, b)
			}
			f, err := elf.Open(out)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			for _, p := range f.Progs {
				if p.Type == elf.PT_INTERP {
					t.Errorf("%s is dynamically linked (has an ELF interpreter); it would not run on distroless/static", tc.target)
				}
			}
			if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
				t.Errorf("%s needs shared libraries %v", tc.target, libs)
			}
			// A binary that starts its server instead of printing usage would hang here.
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			help, err := exec.CommandContext(ctx, out, "--help").CombinedOutput()
			if ctx.Err() != nil {
				t.Fatalf("%s --help did not exit within 30s", tc.target)
			}
			// flag's --help exits 0 (or 2 with older handlers); either way it must print usage.
			if err != nil {
				if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 && ee.ExitCode() != 0 {
					t.Fatalf("%s --help: %v\n%s", tc.target, err, help)
				}
			}
			if !strings.Contains(strings.ToLower(string(help)), "usage") {
				t.Errorf("%s --help printed no usage:\n%s", tc.target, help)
			}
		})
	}
}
