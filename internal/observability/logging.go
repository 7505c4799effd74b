package observability

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/go-logr/logr"
	"github.com/go-logr/zapr"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// NewLogger returns a JSON logger at the given level for a component, with stable keys.
func NewLogger(component string, level zapcore.Level) (logr.Logger, zap.AtomicLevel) {
	atom := zap.NewAtomicLevelAt(level)
	cfg := defaultZapConfig()
	cfg.Level = atom
	z, err := cfg.Build(withRedaction())
	if err != nil {
		z = zap.NewNop()
	}
	return zapr.NewLogger(z).WithName(component), atom
}

// defaultZapConfig is what a pod logs with when config-logging has no zap-logger-config: JSON to
// stdout, ISO 8601 times under "ts", no sampling (sampling drops the repeated lines an operator
// needs most when something loops).
func defaultZapConfig() zap.Config {
	cfg := zap.NewProductionConfig()
	cfg.Sampling = nil
	cfg.EncoderConfig.TimeKey = "ts"
	cfg.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	return cfg
}

// parseZapConfig reads zap-logger-config over the defaults, so a partial JSON keeps the rest.
func parseZapConfig(raw string) (zap.Config, error) {
	cfg := defaultZapConfig()
	cfg.Level = zap.NewAtomicLevelAt(zapcore.InfoLevel)
	if raw == "" {
		return cfg, nil
	}
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		return zap.Config{}, fmt.Errorf("parsing zap-logger-config: %w", err)
	}
	if cfg.Encoding != "json" && cfg.Encoding != "console" {
		return zap.Config{}, fmt.Errorf("parsing zap-logger-config: encoding %q: want json or console", cfg.Encoding)
	}
	return cfg, nil
}

// levelFor is the level a component logs at: its loglevel.<component> key, else the level in
// zap-logger-config, else fallback.
func levelFor(lc LoggingConfig, component string, fallback zapcore.Level) zapcore.Level {
	if l, ok := lc.Levels[component]; ok {
		return l
	}
	if lc.ZapConfig != "" {
		if cfg, err := parseZapConfig(lc.ZapConfig); err == nil {
			return cfg.Level.Level()
		}
	}
	return fallback
}

// buildLogger makes the component's logger from config-logging. Its level is atom, which the
// caller keeps changing as the ConfigMap changes. The encoder and outputs are fixed for the
// life of the process: loggers derived from it are held everywhere and cannot be swapped.
// w, when set, replaces the configured outputs (tests capture logs with it).
func buildLogger(lc LoggingConfig, component string, atom zap.AtomicLevel, w io.Writer) (logr.Logger, error) {
	cfg, err := parseZapConfig(lc.ZapConfig)
	if err != nil {
		return logr.Logger{}, err
	}
	cfg.Level = atom
	var z *zap.Logger
	if w != nil {
		enc := zapcore.NewJSONEncoder(cfg.EncoderConfig)
		if cfg.Encoding == "console" {
			enc = zapcore.NewConsoleEncoder(cfg.EncoderConfig)
		}
		z = zap.New(zapcore.NewCore(enc, zapcore.AddSync(w), atom), zap.AddCaller(), zap.ErrorOutput(zapcore.AddSync(w)), withRedaction())
	} else {
		z, err = cfg.Build(withRedaction())
		if err != nil {
			return logr.Logger{}, fmt.Errorf("building the logger from zap-logger-config: %w", err)
		}
	}
	return zapr.NewLogger(z).WithName(component), nil
}
