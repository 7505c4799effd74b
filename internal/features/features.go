// Package features reads Knative's config-features ConfigMap: the cluster-wide switches for
// transport encryption, OIDC sender authentication and the default authorization mode. The
// manager reads it through the API on every reconcile; data-plane pods get it mounted under
// CONFIG_DIR and re-read it while they run (Watch), like the other config-* ConfigMaps.
package features

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"

	"github.com/kafkachannel/kafkachannel/internal/observability"
)

// ConfigMap is the name Knative Eventing gives the ConfigMap; this operator reads its own copy in
// the operator namespace.
const ConfigMap = "config-features"

// CrossNamespaceEventLinks is Knative's config-features key that lets a reference name an
// object in another namespace; only the value "enabled" turns it on (the default is off).
const CrossNamespaceEventLinks = "cross-namespace-event-links"

// Encryption is the transport-encryption setting.
type Encryption string

// Values of transport-encryption.
const (
	// EncryptionDisabled serves and publishes http only.
	EncryptionDisabled Encryption = "disabled"
	// EncryptionPermissive serves http and https and publishes both; status.address stays http.
	EncryptionPermissive Encryption = "permissive"
	// EncryptionStrict accepts events over https only and delivers only to https destinations.
	EncryptionStrict Encryption = "strict"
)

// Authorization is the default-authorization-mode: what happens to a request no EventPolicy
// speaks about.
type Authorization string

// Values of default-authorization-mode.
const (
	AllowAll           Authorization = "allow-all"
	AllowSameNamespace Authorization = "allow-same-namespace"
	DenyAll            Authorization = "deny-all"
)

// Flags is config-features as far as this channel implementation uses it. The zero value is not
// valid; Default is what an absent ConfigMap means.
type Flags struct {
	// TransportEncryption is transport-encryption.
	TransportEncryption Encryption
	// OIDC is authentication-oidc: senders must present a service-account token for the
	// channel's audience, and the dispatcher presents one to its destinations.
	OIDC bool
	// DefaultAuthorization is default-authorization-mode.
	DefaultAuthorization Authorization
}

// Default is Knative's default: no encryption, no authentication, and (matters only once OIDC
// is on) senders of the channel's own namespace admitted when no policy applies.
func Default() Flags {
	return Flags{TransportEncryption: EncryptionDisabled, DefaultAuthorization: AllowSameNamespace}
}

// HTTPS is true when the receiver serves https and the https address is published.
func (f Flags) HTTPS() bool { return f.TransportEncryption != EncryptionDisabled }

// HTTPAllowed is true unless strict transport encryption forbids plain http.
func (f Flags) HTTPAllowed() bool { return f.TransportEncryption != EncryptionStrict }

// Parse reads config-features' data. Keys it does not know (Knative has many more) are
// ignored; missing keys take the defaults; a value it cannot read is an error, so a typo in a
// security setting is reported instead of silently meaning something else.
func Parse(data map[string]string) (Flags, error) {
	f := Default()
	var errs []error
	switch v := Encryption(lower(data["transport-encryption"])); v {
	case "":
	case EncryptionDisabled, EncryptionPermissive, EncryptionStrict:
		f.TransportEncryption = v
	default:
		errs = append(errs, fmt.Errorf("transport-encryption %q: want disabled, permissive or strict", v))
	}
	switch v := lower(data["authentication-oidc"]); v {
	case "", "disabled":
	case "enabled":
		f.OIDC = true
	default:
		errs = append(errs, fmt.Errorf("authentication-oidc %q: want enabled or disabled", v))
	}
	switch v := Authorization(lower(data["default-authorization-mode"])); v {
	case "":
	case AllowAll, AllowSameNamespace, DenyAll:
		f.DefaultAuthorization = v
	default:
		errs = append(errs, fmt.Errorf("default-authorization-mode %q: want allow-all, allow-same-namespace or deny-all", v))
	}
	if err := errors.Join(errs...); err != nil {
		return Default(), fmt.Errorf("parsing %s: %w", ConfigMap, err)
	}
	return f, nil
}

func lower(s string) string { return strings.ToLower(strings.TrimSpace(s)) }

// Live holds the flags a running data-plane process follows; safe for concurrent use.
type Live struct {
	v atomic.Pointer[Flags]
}

// NewLive starts at f.
func NewLive(f Flags) *Live {
	l := &Live{}
	l.v.Store(&f)
	return l
}

// Get returns the current flags; a nil Live (a component given none) has Knative's defaults.
func (l *Live) Get() Flags {
	if l == nil {
		return Default()
	}
	return *l.v.Load()
}

// Set replaces the flags.
func (l *Live) Set(f Flags) { l.v.Store(&f) }

// Watch reads dir/config-features now and then every interval until ctx ends, keeping the result
// in the returned Live. An invalid ConfigMap is logged once and the previous flags are kept (at
// start: the defaults); a data plane must not stop over a typo, and the manager reports it in
// the channel's status.
func Watch(ctx context.Context, configDir string, interval time.Duration, log logr.Logger) *Live {
	if interval <= 0 {
		interval = observability.DefaultPollInterval
	}
	dir := filepath.Join(configDir, ConfigMap)
	live := NewLive(Default())
	var applied map[string]string
	reported := ""
	read := func(first bool) {
		data, err := observability.ReadConfigDir(dir)
		if err == nil {
			if !first && maps.Equal(applied, data) {
				return
			}
			applied = data
			var f Flags
			if f, err = Parse(data); err == nil {
				if first || f != live.Get() {
					log.Info("features applied", "configMap", ConfigMap, "transportEncryption", f.TransportEncryption,
						"oidc", f.OIDC, "defaultAuthorization", f.DefaultAuthorization)
				}
				live.Set(f)
				reported = ""
				return
			}
		}
		if reported != err.Error() {
			reported = err.Error()
			log.Error(err, "keeping the previous features", "configMap", ConfigMap)
		}
	}
	read(true)
	go func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				read(false)
			}
		}
	}()
	return live
}
