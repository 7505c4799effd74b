package images

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
)

// imageFile is one regular file or directory of an image's flattened layers.
type imageFile struct {
	mode     int64
	uid, gid int
	dir      bool
	data     []byte
}

// image is what `crane pull`/`docker save` archives hold: a config and the layers' files.
type image struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
	Config       struct {
		User       string            `json:"User"`
		Entrypoint []string          `json:"Entrypoint"`
		Cmd        []string          `json:"Cmd"`
		Env        []string          `json:"Env"`
		Labels     map[string]string `json:"Labels"`
	} `json:"config"`
	files map[string]imageFile
}

// readArchive reads a docker-archive tarball (manifest.json, the config, gzipped layers).
func readArchive(file string) (*image, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	entries := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", file, err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			return nil, err
		}
		entries[h.Name] = b
	}
	var manifest []struct {
		Config string
		Layers []string
	}
	if err := json.Unmarshal(entries["manifest.json"], &manifest); err != nil || len(manifest) != 1 {
		return nil, fmt.Errorf("%s: manifest.json with one image expected: %v", file, err)
	}
	img := &image{files: map[string]imageFile{}}
	if err := json.Unmarshal(entries[manifest[0].Config], img); err != nil {
		return nil, fmt.Errorf("%s: config: %w", file, err)
	}
	for _, l := range manifest[0].Layers {
		var r io.Reader = bytes.NewReader(entries[l])
		if gz, err := gzip.NewReader(bytes.NewReader(entries[l])); err == nil {
			r = gz
		}
		lr := tar.NewReader(r)
		for {
			h, err := lr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("%s: layer %s: %w", file, l, err)
			}
			name := path.Clean("/" + h.Name)
			data, _ := io.ReadAll(lr)
			img.files[name] = imageFile{mode: h.Mode & 0o7777, uid: h.Uid, gid: h.Gid, dir: h.Typeflag == tar.TypeDir, data: data}
		}
	}
	return img, nil
}

// The images make docker-build wrote, as a kubelet would run them: the binary as entrypoint
// under the nonroot user, no shell, the OCI labels, and on the scratch base what the binaries
// need from a root filesystem (CA bundle for TLS to Kafka, subscribers and OIDC discovery; the
// nonroot user in /etc/passwd and /etc/group).
func TestBuiltImages(t *testing.T) {
	dir := os.Getenv("KAFKACHANNEL_IMAGES")
	if dir == "" {
		dir = filepath.Join("..", "..", "bin", "images")
	}
	if _, err := os.Stat(filepath.Join(dir, "manager.tar")); err != nil {
		t.Skipf("no images in %s: run make docker-build (CONTAINER_TOOL=crane) first", dir)
	}
	for _, name := range []string{"manager", "dispatcher", "receiver", "eventdisplay"} {
		t.Run(name, func(t *testing.T) {
			img, err := readArchive(filepath.Join(dir, name+".tar"))
			if err != nil {
				t.Fatal(err)
			}
			if img.OS != "linux" || img.Architecture != "amd64" {
				t.Errorf("platform %s/%s, want linux/amd64", img.OS, img.Architecture)
			}
			if img.Config.User != "65532:65532" {
				t.Errorf("user %q, want 65532:65532 (nonroot)", img.Config.User)
			}
			if want := []string{"/" + name}; fmt.Sprint(img.Config.Entrypoint) != fmt.Sprint(want) || len(img.Config.Cmd) != 0 {
				t.Errorf("entrypoint %q cmd %q, want %q and no cmd", img.Config.Entrypoint, img.Config.Cmd, want)
			}
			for k, want := range map[string]string{
				"org.opencontainers.image.title":    "kafkachannel-" + name,
				"org.opencontainers.image.licenses": "Apache-2.0",
				"org.opencontainers.image.source":   "https://github.com/kafkachannel/kafkachannel",
			} {
				if got := img.Config.Labels[k]; got != want {
					t.Errorf("label %s = %q, want %q", k, got, want)
				}
			}
			for _, k := range []string{"org.opencontainers.image.version", "org.opencontainers.image.revision", "org.opencontainers.image.base.name"} {
				if img.Config.Labels[k] == "" {
					t.Errorf("label %s is missing", k)
				}
			}
			for p := range img.files {
				if b := path.Base(p); b == "sh" || b == "bash" || b == "busybox" || b == "ash" {
					t.Errorf("the image has a shell: %s", p)
				}
			}
			bin, ok := img.files["/"+name]
			if !ok {
				t.Fatalf("no /%s in the image", name)
			}
			if bin.mode != 0o755 || bin.uid != 0 {
				t.Errorf("/%s has mode %o uid %d, want 0755 owned by root (the nonroot user cannot replace it)", name, bin.mode, bin.uid)
			}
			exe, err := elf.NewFile(bytes.NewReader(bin.data))
			if err != nil {
				t.Fatalf("/%s is not an ELF binary: %v", name, err)
			}
			for _, p := range exe.Progs {
				if p.Type == elf.PT_INTERP {
					t.Errorf("/%s is dynamically linked; the base has no libc", name)
				}
			}
			if img.Config.Labels["org.opencontainers.image.base.name"] != "scratch" {
				return // distroless brings its own /etc
			}
			if ca := img.files["/etc/ssl/certs/ca-certificates.crt"]; !bytes.Contains(ca.data, []byte("BEGIN CERTIFICATE")) {
				t.Error("no CA bundle at /etc/ssl/certs/ca-certificates.crt: TLS to Kafka and https subscribers would fail")
			}
			if !strings.Contains(string(img.files["/etc/passwd"].data), "nonroot:x:65532:65532:") ||
				!strings.Contains(string(img.files["/etc/group"].data), "nonroot:x:65532:") {
				t.Error("/etc/passwd or /etc/group does not name the nonroot user 65532")
			}
			if home := img.files["/home/nonroot"]; !home.dir || home.uid != 65532 {
				t.Errorf("/home/nonroot is not a directory of 65532: %+v", home)
			}
			if tmp := img.files["/tmp"]; !tmp.dir || tmp.mode != 0o1777 {
				t.Errorf("/tmp is not a sticky world-writable directory: mode %o", tmp.mode)
			}
		})
	}
}
