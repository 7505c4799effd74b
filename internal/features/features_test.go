package features

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name    string
		data    map[string]string
		want    Flags
		wantErr string
	}{
		{name: "absent ConfigMap", data: nil, want: Default()},
		{name: "other Knative keys are ignored", data: map[string]string{"kreference-group": "disabled"}, want: Default()},
		{
			name: "everything on",
			data: map[string]string{"transport-encryption": "Strict ", "authentication-oidc": "enabled", "default-authorization-mode": "deny-all"},
			want: Flags{TransportEncryption: EncryptionStrict, OIDC: true, DefaultAuthorization: DenyAll},
		},
		{
			name: "permissive, allow-all",
			data: map[string]string{"transport-encryption": "permissive", "authentication-oidc": "disabled", "default-authorization-mode": "allow-all"},
			want: Flags{TransportEncryption: EncryptionPermissive, DefaultAuthorization: AllowAll},
		},
		{name: "typo in encryption", data: map[string]string{"transport-encryption": "strcit"}, want: Default(), wantErr: `transport-encryption "strcit"`},
		{name: "boolean for oidc", data: map[string]string{"authentication-oidc": "true"}, want: Default(), wantErr: `authentication-oidc "true"`},
		{name: "bad mode", data: map[string]string{"default-authorization-mode": "allow"}, want: Default(), wantErr: "want allow-all, allow-same-namespace or deny-all"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse(tc.data)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestFlagsDerived(t *testing.T) {
	for _, tc := range []struct {
		enc         Encryption
		https, http bool
	}{
		{EncryptionDisabled, false, true},
		{EncryptionPermissive, true, true},
		{EncryptionStrict, true, false},
	} {
		f := Flags{TransportEncryption: tc.enc}
		if f.HTTPS() != tc.https || f.HTTPAllowed() != tc.http {
			t.Errorf("%s: HTTPS()=%v HTTPAllowed()=%v, want %v %v", tc.enc, f.HTTPS(), f.HTTPAllowed(), tc.https, tc.http)
		}
	}
}

// TestWatchFollowsTheMountedConfigMap changes the files the way a ConfigMap volume changes and
// expects the flags to follow, keeping the last valid ones over an invalid edit.
func TestWatchFollowsTheMountedConfigMap(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, ConfigMap)
	write := func(key, value string) {
		t.Helper()
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		// Replace the file whole, as kubelet swaps a ConfigMap volume: a poll must never see
		// it truncated.
		tmp := filepath.Join(dir, ".tmp-"+key)
		if err := os.WriteFile(tmp, []byte(value), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, key)); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	live := Watch(ctx, root, 10*time.Millisecond, logr.Discard())
	if got := live.Get(); got != Default() {
		t.Fatalf("without a mounted ConfigMap: %+v, want the defaults", got)
	}
	waitFor := func(what string, ok func(Flags) bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !ok(live.Get()) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: flags stayed %+v", what, live.Get())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	write("transport-encryption", "strict")
	write("authentication-oidc", "enabled")
	waitFor("strict and OIDC", func(f Flags) bool { return f.TransportEncryption == EncryptionStrict && f.OIDC })

	write("transport-encryption", "bogus")
	time.Sleep(100 * time.Millisecond) // several polls: an invalid edit must change nothing
	if f := live.Get(); f.TransportEncryption != EncryptionStrict || !f.OIDC {
		t.Fatalf("an invalid edit changed the flags to %+v", f)
	}
	write("transport-encryption", "permissive")
	waitFor("permissive", func(f Flags) bool { return f.TransportEncryption == EncryptionPermissive && f.OIDC })
}
