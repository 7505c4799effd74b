// Package docs keeps docs/configuration.md honest: whatever the code reads must be documented.
package docs

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/kafkachannel/kafkachannel/api/v1alpha1"
	"github.com/kafkachannel/kafkachannel/api/v1beta1"
	"github.com/kafkachannel/kafkachannel/internal/features"
	"github.com/kafkachannel/kafkachannel/internal/kafkaconn"
)

func read(t *testing.T, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", rel))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestConfigurationReferenceCoversTheCode(t *testing.T) {
	doc := read(t, "docs/configuration.md")
	var want []string

	// The manager's environment: plain keys and the per-component suffixes.
	cfg := read(t, "controllers/config.go")
	for _, m := range regexp.MustCompile(`get\("([A-Z][A-Z_]+)"`).FindAllStringSubmatch(cfg, -1) {
		want = append(want, m[1])
	}
	for _, m := range regexp.MustCompile(`"(_[A-Z][A-Z_]+)"`).FindAllStringSubmatch(cfg, -1) {
		want = append(want, "DISPATCHER"+m[1], "RECEIVER"+m[1])
	}
	if len(want) < 10 {
		t.Fatalf("found only %v in controllers/config.go: has the way it reads its environment changed?", want)
	}

	// Flags of every binary.
	flagRe := regexp.MustCompile(`flag\.\w+Var\(&[^,]+, "([a-z-]+)"`)
	for _, f := range []string{"main.go", "cmd/dispatcher/main.go", "cmd/receiver/main.go"} {
		for _, m := range flagRe.FindAllStringSubmatch(read(t, f), -1) {
			want = append(want, "--"+m[1])
		}
	}

	// ConfigMap keys the observability and features packages parse.
	for _, f := range []string{"internal/observability/config.go", "internal/features/features.go"} {
		for _, m := range regexp.MustCompile(`data\["([a-z.-]+)"\]`).FindAllStringSubmatch(read(t, f), -1) {
			want = append(want, m[1])
		}
	}

	want = append(want, kafkaconn.KeyBrokers, kafkaconn.KeyProtocol, kafkaconn.KeySASLMechanism, kafkaconn.KeyUser,
		kafkaconn.KeyPassword, kafkaconn.KeyCACert, kafkaconn.KeyUserCert, kafkaconn.KeyUserKey,
		kafkaconn.KeyLegacyUsername, kafkaconn.KeyLegacySASLType,
		v1beta1.DeliveryOrderAnnotation, v1beta1.DeliveryOrderOrdered, v1beta1.DeliveryOrderUnordered, v1beta1.DeliveryOrderOrderedByKey,
		v1alpha1.PauseAnnotationPrefix+"<subscriber uid>",
		features.ConfigMap, string(features.EncryptionDisabled), string(features.EncryptionPermissive),
		string(features.EncryptionStrict), string(features.AllowAll), string(features.AllowSameNamespace),
		string(features.DenyAll))
	// config-features keys are read from a table, not as data["..."].
	want = append(want, features.Keys()...)

	for _, w := range want {
		if !strings.Contains(doc, "`"+w+"`") {
			t.Errorf("docs/configuration.md does not document `%s`", w)
		}
	}
}
