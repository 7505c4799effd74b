package receiver

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/kafkachannel/kafkachannel/environments/kafkatest"
	"github.com/kafkachannel/kafkachannel/internal/features"
	"github.com/kafkachannel/kafkachannel/internal/naming"
	"github.com/kafkachannel/kafkachannel/internal/oidc"
)

// TestConfigTypoKeepsSenderChecks starts a receiver on a mounted config-features with a typo in
// one key: the process has never read a valid value of it, so that key is at its strictest and
// the other keys hold. An unauthenticated plain-http sender is refused; before, one bad key
// meant the defaults for every key and the event was accepted.
func TestConfigTypoKeepsSenderChecks(t *testing.T) {
	k := kafkatest.Start(t)
	createChannel(t, k, "typo", "orders", 1, true)
	for _, tc := range []struct {
		name     string
		data     map[string]string
		wantCode int
	}{
		{"OIDC and strict, typo in the third key", map[string]string{
			"transport-encryption": "strict", "authentication-oidc": "enabled", "default-authorization-mode": "deny_all"}, http.StatusForbidden},
		{"OIDC over http, typo in the third key", map[string]string{
			"transport-encryption": "disabled", "authentication-oidc": "enabled", "default-authorization-mode": "deny_all"}, http.StatusUnauthorized},
		{"typo in authentication-oidc", map[string]string{
			"transport-encryption": "disabled", "authentication-oidc": "enbaled", "default-authorization-mode": "allow-all"}, http.StatusUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			dir := filepath.Join(root, features.ConfigMap)
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			for key, v := range tc.data {
				if err := os.WriteFile(filepath.Join(dir, key), []byte(v), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			live := features.Watch(ctx, root, time.Hour, logr.Discard(), nil)
			r := startReceiver(t, k, func(c *Config) {
				c.Features = live
				// No token is sent, so the verifier is never asked for keys.
				c.Auth = &Auth{Verifier: &oidc.Verifier{}}
			})
			resp, err := http.DefaultClient.Do(rawRequest(t, "POST", r.url+naming.ChannelPath("typo", "orders"), with(binaryHeaders, "ce-id", "typo"), "hi"))
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = resp.Body.Close() }()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.wantCode {
				t.Errorf("unauthenticated http sender: %d %q, want %d (flags in force %+v)", resp.StatusCode, strings.TrimSpace(string(body)), tc.wantCode, live.Get())
			}
		})
	}
}
