package memlimit

import (
	"math"
	"runtime/debug"
	"testing"
)

func TestSet(t *testing.T) {
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
	for _, tc := range []struct {
		name      string
		env       map[string]string
		want      Applied
		wantLimit int64 // what the runtime holds afterwards
		wantErr   bool
	}{
		{"512Mi limit gives 90%", map[string]string{"MEMORY_LIMIT": "536870912"},
			Applied{Limit: 483183810, Source: "MEMORY_LIMIT"}, 483183810, false},
		{"GOMEMLIMIT wins", map[string]string{"GOMEMLIMIT": "100MiB", "MEMORY_LIMIT": "536870912"},
			Applied{Limit: math.MaxInt64, Source: "GOMEMLIMIT"}, math.MaxInt64, false},
		{"no limit leaves the runtime alone", map[string]string{},
			Applied{Source: "none"}, math.MaxInt64, false},
		{"a quantity with a suffix is refused", map[string]string{"MEMORY_LIMIT": "512Mi"},
			Applied{Source: "none"}, math.MaxInt64, true},
		{"zero is refused", map[string]string{"MEMORY_LIMIT": "0"},
			Applied{Source: "none"}, math.MaxInt64, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// GOMEMLIMIT in this test process is unset, so the runtime starts with no limit;
			// the GOMEMLIMIT case checks Set leaves whatever the runtime holds.
			debug.SetMemoryLimit(math.MaxInt64)
			got, err := Set(func(k string) string { return tc.env[k] })
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if got != tc.want {
				t.Errorf("Set = %+v, want %+v", got, tc.want)
			}
			if l := debug.SetMemoryLimit(-1); l != tc.wantLimit {
				t.Errorf("runtime limit = %d, want %d", l, tc.wantLimit)
			}
		})
	}
}
