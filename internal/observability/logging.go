package observability

import (
	"github.com/go-logr/logr"
	"github.com/go-logr/zapr"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// NewLogger returns a JSON logger at the given level for a component, with stable keys.
func NewLogger(component string, level zapcore.Level) (logr.Logger, zap.AtomicLevel) {
	atom := zap.NewAtomicLevelAt(level)
	cfg := zap.NewProductionConfig()
	cfg.Level = atom
	cfg.Sampling = nil
	cfg.EncoderConfig.TimeKey = "ts"
	cfg.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	z, err := cfg.Build()
	if err != nil {
		z = zap.NewNop()
	}
	return zapr.NewLogger(z).WithName(component), atom
}
