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
	"github.com/prometheus/client_golang/prometheus"

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

// Keys of config-features this package reads; each is a security setting.
const (
	KeyTransportEncryption  = "transport-encryption"
	KeyOIDC                 = "authentication-oidc"
	KeyDefaultAuthorization = "default-authorization-mode"
)

// Strictest is what a process follows for a key it has never read a valid value of: https
// only, a token required from every sender, and nobody admitted whom no EventPolicy names. A
// typo in a security setting must close the door, never open it; the dispatcher then delivers
// only to https destinations.
func Strictest() Flags {
	return Flags{TransportEncryption: EncryptionStrict, OIDC: true, DefaultAuthorization: DenyAll}
}

// KeyError is a value of one config-features key that cannot be read.
type KeyError struct {
	Key, Value string
	// Want lists the values the key takes.
	Want string
}

func (e *KeyError) Error() string {
	return fmt.Sprintf("%s %q: want %s", e.Key, e.Value, e.Want)
}

// key is how one config-features key is read: set applies a valid (lowercased, trimmed) value
// and reports false for an invalid one; "" is the key's absence and means Knative's default.
// keep copies the key's setting from the flags in force; get shows it, for logs.
type key struct {
	name string
	want string
	set  func(f *Flags, v string) bool
	keep func(f *Flags, from Flags)
	get  func(f Flags) string
}

// keys are read each on its own, so one bad value cannot take the others' down with it.
var keys = []key{
	{
		name: KeyTransportEncryption, want: "disabled, permissive or strict",
		set: func(f *Flags, v string) bool {
			switch e := Encryption(v); e {
			case "":
				f.TransportEncryption = Default().TransportEncryption
			case EncryptionDisabled, EncryptionPermissive, EncryptionStrict:
				f.TransportEncryption = e
			default:
				return false
			}
			return true
		},
		keep: func(f *Flags, from Flags) { f.TransportEncryption = from.TransportEncryption },
		get:  func(f Flags) string { return string(f.TransportEncryption) },
	},
	{
		name: KeyOIDC, want: "enabled or disabled",
		set: func(f *Flags, v string) bool {
			switch v {
			case "", "disabled":
				f.OIDC = false
			case "enabled":
				f.OIDC = true
			default:
				return false
			}
			return true
		},
		keep: func(f *Flags, from Flags) { f.OIDC = from.OIDC },
		get: func(f Flags) string {
			if f.OIDC {
				return "enabled"
			}
			return "disabled"
		},
	},
	{
		name: KeyDefaultAuthorization, want: "allow-all, allow-same-namespace or deny-all",
		set: func(f *Flags, v string) bool {
			switch a := Authorization(v); a {
			case "":
				f.DefaultAuthorization = Default().DefaultAuthorization
			case AllowAll, AllowSameNamespace, DenyAll:
				f.DefaultAuthorization = a
			default:
				return false
			}
			return true
		},
		keep: func(f *Flags, from Flags) { f.DefaultAuthorization = from.DefaultAuthorization },
		get:  func(f Flags) string { return string(f.DefaultAuthorization) },
	},
}

// Keys are the config-features keys Parse and Update read.
func Keys() []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = k.name
	}
	return out
}

// Update reads config-features' data over prev, the flags in force: each key on its own. A
// missing key takes Knative's default, a valid value is taken, and a value that cannot be read
// keeps prev's setting of that key and is reported in the error (errors.Join of one *KeyError
// per bad key, in Keys order). Keys it does not know (Knative has many more) are ignored.
func Update(prev Flags, data map[string]string) (Flags, error) {
	f := Default()
	var errs []error
	for _, k := range keys {
		if v := lower(data[k.name]); !k.set(&f, v) {
			k.keep(&f, prev)
			errs = append(errs, &KeyError{Key: k.name, Value: v, Want: k.want})
		}
	}
	if err := errors.Join(errs...); err != nil {
		return f, fmt.Errorf("parsing %s: %w", ConfigMap, err)
	}
	return f, nil
}

// Parse reads config-features' data as a process that has read no valid value before: a key
// whose value cannot be read is at its Strictest, the others as written (or Knative's default
// when absent), and the error names each bad key.
func Parse(data map[string]string) (Flags, error) { return Update(Strictest(), data) }

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

// MetricInvalid is the gauge Watch keeps per key (label "key"): 1 while the mounted value of
// that key cannot be read, so the process follows the key's last valid value (or, having never
// read one, its Strictest); 0 otherwise.
const MetricInvalid = "kafkachannel_config_features_invalid"

// Watch reads dir/config-features now and then every interval until ctx ends, keeping the result
// in the returned Live. Each key is read on its own (Update): a value that cannot be read keeps
// that key's last valid value, or at start, when there is none, its Strictest; it is logged
// with the key and the reason whenever it changes, and counted in MetricInvalid in reg (nil:
// no metric). A directory that cannot be read at start also means Strictest. A data plane does
// not stop over a typo, it closes; the manager reports the ConfigMap in the channel's status.
func Watch(ctx context.Context, configDir string, interval time.Duration, log logr.Logger, reg prometheus.Registerer) *Live {
	if interval <= 0 {
		interval = observability.DefaultPollInterval
	}
	dir := filepath.Join(configDir, ConfigMap)
	invalid := registerInvalid(reg, log)
	live := NewLive(Strictest())
	var applied map[string]string
	reported := map[string]string{} // key -> the bad value last logged
	readErr := ""
	read := func(first bool) {
		data, err := observability.ReadConfigDir(dir)
		if err != nil {
			if readErr != err.Error() {
				readErr = err.Error()
				log.Error(err, "cannot read config-features: keeping the features in force (at start: the strictest)", "configMap", ConfigMap)
			}
			for _, k := range keys {
				invalid.WithLabelValues(k.name).Set(1)
			}
			return
		}
		readErr = ""
		if !first && maps.Equal(applied, data) {
			return
		}
		applied = data
		prev := live.Get()
		f, err := Update(prev, data)
		bad := map[string]bool{}
		for _, e := range keyErrors(err) {
			bad[e.Key] = true
			if reported[e.Key] != e.Value {
				reported[e.Key] = e.Value
				k := keyNamed(e.Key)
				log.Error(e, "a config-features key cannot be read: keeping its last valid value (at start: the strictest)",
					"configMap", ConfigMap, "key", e.Key, "value", e.Value, "inForce", k.get(f))
			}
		}
		for _, k := range keys {
			if bad[k.name] {
				invalid.WithLabelValues(k.name).Set(1)
				continue
			}
			delete(reported, k.name)
			invalid.WithLabelValues(k.name).Set(0)
		}
		if first || f != prev {
			log.Info("features applied", "configMap", ConfigMap, "transportEncryption", f.TransportEncryption,
				"oidc", f.OIDC, "defaultAuthorization", f.DefaultAuthorization)
		}
		live.Set(f)
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

// registerInvalid registers MetricInvalid in reg, or finds the one registered before (a second
// Watch on the same registry); with no registry the gauge is kept but not served.
func registerInvalid(reg prometheus.Registerer, log logr.Logger) *prometheus.GaugeVec {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: MetricInvalid,
		Help: "1 while the key of config-features holds a value that cannot be read, so its last valid value (at start: the strictest) is in force; 0 otherwise.",
	}, []string{"key"})
	if reg == nil {
		return g
	}
	if err := reg.Register(g); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(*prometheus.GaugeVec); ok {
				return existing
			}
		}
		log.Error(err, "cannot register the config-features metric", "metric", MetricInvalid)
	}
	return g
}

// keyErrors are the *KeyError in an error of Update.
func keyErrors(err error) []*KeyError {
	if err == nil {
		return nil
	}
	var out []*KeyError
	var walk func(error)
	walk = func(err error) {
		if ke, ok := err.(*KeyError); ok {
			out = append(out, ke)
			return
		}
		switch u := err.(type) {
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				walk(e)
			}
		case interface{ Unwrap() error }:
			walk(u.Unwrap())
		}
	}
	walk(err)
	return out
}

func keyNamed(name string) key {
	for _, k := range keys {
		if k.name == name {
			return k
		}
	}
	return key{get: func(Flags) string { return "" }}
}
