package features

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
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
		// With no valid value read before, a bad key is at its strictest; the others as written.
		{
			name: "typo in encryption", data: map[string]string{"transport-encryption": "strcit"},
			want: Flags{TransportEncryption: EncryptionStrict, DefaultAuthorization: AllowSameNamespace}, wantErr: `transport-encryption "strcit"`,
		},
		{
			name: "boolean for oidc", data: map[string]string{"authentication-oidc": "true", "transport-encryption": "permissive"},
			want: Flags{TransportEncryption: EncryptionPermissive, OIDC: true, DefaultAuthorization: AllowSameNamespace}, wantErr: `authentication-oidc "true"`,
		},
		{
			name: "bad mode", data: map[string]string{"default-authorization-mode": "allow"},
			want: Flags{TransportEncryption: EncryptionDisabled, DefaultAuthorization: DenyAll}, wantErr: "want allow-all, allow-same-namespace or deny-all",
		},
		{
			name: "OIDC and strict, typo in the third key", data: map[string]string{"transport-encryption": "strict", "authentication-oidc": "enabled", "default-authorization-mode": "deny_all"},
			want: Flags{TransportEncryption: EncryptionStrict, OIDC: true, DefaultAuthorization: DenyAll}, wantErr: `default-authorization-mode "deny_all"`,
		},
		{
			name: "every key bad", data: map[string]string{"transport-encryption": "yes", "authentication-oidc": "on", "default-authorization-mode": "open"},
			want: Strictest(), wantErr: `transport-encryption "yes"`,
		},
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

// TestUpdatePerKey reads config-features over the flags in force: a bad key keeps its own
// previous value and is reported by name, while the other keys still follow the ConfigMap.
func TestUpdatePerKey(t *testing.T) {
	lastGood := Flags{TransportEncryption: EncryptionPermissive, OIDC: true, DefaultAuthorization: AllowAll}
	for _, tc := range []struct {
		name    string
		prev    Flags
		data    map[string]string
		want    Flags
		badKeys []string
	}{
		{name: "all valid replaces everything", prev: lastGood,
			data: map[string]string{"transport-encryption": "strict", "authentication-oidc": "disabled", "default-authorization-mode": "deny-all"},
			want: Flags{TransportEncryption: EncryptionStrict, DefaultAuthorization: DenyAll}},
		{name: "absent keys take Knative's defaults, not the previous values", prev: lastGood, data: map[string]string{}, want: Default()},
		{name: "bad encryption keeps its last value, the others follow", prev: lastGood,
			data:    map[string]string{"transport-encryption": "strcit", "authentication-oidc": "disabled", "default-authorization-mode": "deny-all"},
			want:    Flags{TransportEncryption: EncryptionPermissive, DefaultAuthorization: DenyAll},
			badKeys: []string{KeyTransportEncryption}},
		{name: "bad oidc keeps it on", prev: lastGood,
			data:    map[string]string{"transport-encryption": "disabled", "authentication-oidc": "true", "default-authorization-mode": "allow-same-namespace"},
			want:    Flags{TransportEncryption: EncryptionDisabled, OIDC: true, DefaultAuthorization: AllowSameNamespace},
			badKeys: []string{KeyOIDC}},
		{name: "bad mode keeps allow-all it had", prev: lastGood,
			data:    map[string]string{"transport-encryption": "permissive", "authentication-oidc": "enabled", "default-authorization-mode": "deny_all"},
			want:    lastGood,
			badKeys: []string{KeyDefaultAuthorization}},
		{name: "at start a bad key is at its strictest", prev: Strictest(),
			data:    map[string]string{"transport-encryption": "disabled", "authentication-oidc": "disabled", "default-authorization-mode": "deny_all"},
			want:    Flags{TransportEncryption: EncryptionDisabled, DefaultAuthorization: DenyAll},
			badKeys: []string{KeyDefaultAuthorization}},
		{name: "two bad keys, both reported", prev: Default(),
			data:    map[string]string{"transport-encryption": "tls", "authentication-oidc": "enabled", "default-authorization-mode": "nobody"},
			want:    Flags{TransportEncryption: EncryptionDisabled, OIDC: true, DefaultAuthorization: AllowSameNamespace},
			badKeys: []string{KeyTransportEncryption, KeyDefaultAuthorization}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Update(tc.prev, tc.data)
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
			var bad []string
			for _, ke := range keyErrors(err) {
				bad = append(bad, ke.Key)
				if !strings.Contains(err.Error(), ke.Key) || ke.Want == "" {
					t.Errorf("error %q does not name %s and its valid values", err, ke.Key)
				}
			}
			if strings.Join(bad, ",") != strings.Join(tc.badKeys, ",") {
				t.Errorf("bad keys %v (error %v), want %v", bad, err, tc.badKeys)
			}
			if (err == nil) != (len(tc.badKeys) == 0) {
				t.Errorf("error %v with bad keys %v", err, tc.badKeys)
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
	live := Watch(ctx, root, 10*time.Millisecond, logr.Discard(), nil)
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

// mountFeatures writes config-features under root the way kubelet swaps a ConfigMap volume.
func mountFeatures(t *testing.T, root string, data map[string]string) {
	t.Helper()
	dir := filepath.Join(root, ConfigMap)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for k, v := range data {
		tmp := filepath.Join(dir, ".tmp-"+k)
		if err := os.WriteFile(tmp, []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, k)); err != nil {
			t.Fatal(err)
		}
	}
}

// logLines is a logger whose lines a test can read.
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) logger() logr.Logger {
	return funcr.New(func(prefix, args string) {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.lines = append(l.lines, args)
	}, funcr.Options{})
}

func (l *logLines) find(all ...string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
next:
	for _, line := range l.lines {
		for _, s := range all {
			if !strings.Contains(line, s) {
				continue next
			}
		}
		return line
	}
	return ""
}

// TestWatchTypoFailsClosed starts a data-plane process on a config-features with OIDC enabled,
// strict encryption and a typo in the third key: the two good keys hold, the bad one is at its
// strictest (nobody admitted without a policy), and the key is named in a log line and in
// MetricInvalid until it is fixed. Before, any bad key threw every key away and the process ran
// with the defaults: no authentication, plain http accepted.
func TestWatchTypoFailsClosed(t *testing.T) {
	root := t.TempDir()
	mountFeatures(t, root, map[string]string{"transport-encryption": "strict", "authentication-oidc": "enabled", "default-authorization-mode": "deny_all"})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reg := prometheus.NewRegistry()
	logs := &logLines{}
	live := Watch(ctx, root, 10*time.Millisecond, logs.logger(), reg)

	want := Flags{TransportEncryption: EncryptionStrict, OIDC: true, DefaultAuthorization: DenyAll}
	if got := live.Get(); got != want {
		t.Fatalf("at start: %+v, want %+v (OIDC on, https only, deny-all)", got, want)
	}
	if !live.Get().OIDC || live.Get().HTTPAllowed() {
		t.Fatalf("a typo in %s turned security off: %+v", KeyDefaultAuthorization, live.Get())
	}
	if line := logs.find(`"key"="default-authorization-mode"`, `"value"="deny_all"`); line == "" {
		t.Errorf("no log line names the bad key and its value")
	}
	invalid := func() string {
		var parts []string
		for _, k := range Keys() {
			parts = append(parts, fmt.Sprintf("%s=%v", k, testutil.ToFloat64(metricVec(t, reg).WithLabelValues(k))))
		}
		return strings.Join(parts, " ")
	}
	if got, want := invalid(), "transport-encryption=0 authentication-oidc=0 default-authorization-mode=1"; got != want {
		t.Errorf("%s: %s, want %s", MetricInvalid, got, want)
	}

	// Fixed: the value applies and the metric clears.
	mountFeatures(t, root, map[string]string{"default-authorization-mode": "allow-same-namespace"})
	deadline := time.Now().Add(10 * time.Second)
	for live.Get().DefaultAuthorization != AllowSameNamespace || invalid() != "transport-encryption=0 authentication-oidc=0 default-authorization-mode=0" {
		if time.Now().After(deadline) {
			t.Fatalf("after the fix: flags %+v, metric %s", live.Get(), invalid())
		}
		time.Sleep(10 * time.Millisecond)
	}

	// A later typo in another key keeps that key's last valid value, not its strictest.
	mountFeatures(t, root, map[string]string{"transport-encryption": "permissive"})
	for live.Get().TransportEncryption != EncryptionPermissive {
		if time.Now().After(deadline) {
			t.Fatalf("permissive never applied: %+v", live.Get())
		}
		time.Sleep(10 * time.Millisecond)
	}
	mountFeatures(t, root, map[string]string{"transport-encryption": "strcit"})
	for invalid() != "transport-encryption=1 authentication-oidc=0 default-authorization-mode=0" {
		if time.Now().After(deadline) {
			t.Fatalf("the typo was not counted: %s", invalid())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := live.Get(); got.TransportEncryption != EncryptionPermissive || !got.OIDC {
		t.Errorf("after a typo in %s: %+v, want its last valid value permissive and OIDC still on", KeyTransportEncryption, got)
	}
}

// metricVec finds MetricInvalid in reg, as a second Watch on the same registry would.
func metricVec(t *testing.T, reg *prometheus.Registry) *prometheus.GaugeVec {
	t.Helper()
	return registerInvalid(reg, logr.Discard())
}
