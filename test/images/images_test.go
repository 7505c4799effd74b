// Package images checks the images: that every image's binary builds with exactly the flags
// make image-binaries uses, is fully static (it runs on distroless/static or scratch), and
// starts; and that the images make docker-build wrote (bin/images) hold what they must.
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
	makefile, err := os.ReadFile(filepath.Join(root, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	// The images hold what `make image-binaries` builds; its flags are read from the Makefile,
	// so this test follows it rather than a copy.
	flags := regexp.MustCompile(`(?m)^LDFLAGS \?= (.+)$`).FindSubmatch(makefile)
	if flags == nil || !strings.Contains(string(makefile), "CGO_ENABLED=0 GOOS=linux GOARCH=amd64 go build -trimpath -ldflags '$(LDFLAGS)' -o $(IMAGE_BIN)") {
		t.Fatal("make image-binaries no longer builds with CGO_ENABLED=0 -trimpath -ldflags '$(LDFLAGS)': update this test with it")
	}
	ldflags := strings.ReplaceAll(string(flags[1]), "$(VERSION)", "test")
	for _, tc := range []struct{ target, pkg, entrypoint string }{
		{"manager", ".", "/manager"},
		{"dispatcher", "./cmd/dispatcher", "/dispatcher"},
		{"receiver", "./cmd/receiver", "/receiver"},
		{"eventdisplay", "./cmd/eventdisplay", "/eventdisplay"},
	} {
		t.Run(tc.target, func(t *testing.T) {
			if !strings.Contains(string(dockerfile), "FROM ${BASE_IMAGE} AS "+tc.target) ||
				!strings.Contains(string(dockerfile), "COPY --chmod=0755 bin/image/"+tc.target+" "+tc.entrypoint) ||
				!strings.Contains(string(dockerfile), `ENTRYPOINT ["`+tc.entrypoint+`"]`) {
				t.Fatalf("Dockerfile has no target %s on ${BASE_IMAGE} copying bin/image/%s with entrypoint %s", tc.target, tc.target, tc.entrypoint)
			}
			if !strings.Contains(string(dockerfile), "ARG BASE_IMAGE=gcr.io/distroless/static:nonroot") {
				t.Fatal("the Dockerfile's default base is no longer distroless/static:nonroot")
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
