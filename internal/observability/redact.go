package observability

import (
	"encoding/json"
	"strings"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// redactingCore blanks credentials in values a logger serialises by reflection. logr makes it
// easy to log a whole struct ("kafka", cfg), and some that hold secrets export them: kafka-go's
// SASL PLAIN mechanism has an exported Password field, so logging a kafkaconn.Config by value,
// or its SASL field, would print the password. Values logged through String() or as plain
// strings are their author's responsibility and pass unchanged.
type redactingCore struct{ zapcore.Core }

func withRedaction() zap.Option {
	return zap.WrapCore(func(c zapcore.Core) zapcore.Core { return redactingCore{c} })
}

func (c redactingCore) With(fields []zapcore.Field) zapcore.Core {
	return redactingCore{c.Core.With(redactFields(fields))}
}

func (c redactingCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c) // so Write goes through this core
	}
	return ce
}

func (c redactingCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	return c.Core.Write(e, redactFields(fields))
}

// redacted replaces a secret's value.
const redacted = "[REDACTED]"

func redactFields(fields []zapcore.Field) []zapcore.Field {
	var out []zapcore.Field
	for i, f := range fields {
		if f.Type != zapcore.ReflectType || f.Interface == nil {
			continue
		}
		b, err := json.Marshal(f.Interface)
		if err != nil {
			continue
		}
		var tree any
		if json.Unmarshal(b, &tree) != nil || !redactTree(tree) {
			continue
		}
		if out == nil {
			out = append([]zapcore.Field(nil), fields...) // the caller's slice is not ours to change
		}
		out[i] = zap.Any(f.Key, tree)
	}
	if out == nil {
		return fields
	}
	return out
}

// redactTree blanks, in place, every value under a key that names a credential; it reports
// whether it changed anything.
func redactTree(v any) bool {
	changed := false
	switch t := v.(type) {
	case map[string]any:
		for k, sub := range t {
			if secretKey(k) {
				if s, ok := sub.(string); !ok || s != "" {
					t[k] = redacted
					changed = true
				}
				continue
			}
			changed = redactTree(sub) || changed
		}
	case []any:
		for _, sub := range t {
			changed = redactTree(sub) || changed
		}
	}
	return changed
}

func secretKey(k string) bool {
	k = strings.ToLower(strings.NewReplacer("_", "", "-", "", ".", "").Replace(k))
	for _, s := range []string{"password", "passwd", "secret", "token", "privatekey", "userkey", "credential"} {
		if strings.Contains(k, s) {
			return true
		}
	}
	return false
}
