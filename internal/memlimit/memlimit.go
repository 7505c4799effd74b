// Package memlimit gives a Go process a soft memory limit below its container's hard one, so
// the garbage collector works harder as the process nears the limit instead of the kernel's
// OOM killer ending it there.
//
// The pod spec passes the container's memory limit in bytes through the downward API
// (resourceFieldRef limits.memory) in MEMORY_LIMIT, and the binary hands Percent of it to the
// runtime. Setting GOMEMLIMIT to the limit itself through the downward API would leave no
// headroom: the runtime's limit covers only memory the Go runtime manages, while the cgroup
// also charges what it does not (page cache, memory not yet returned to the kernel), and a
// divisor can only change units, not take a share. GOMEMLIMIT, when set, still wins.
//
// GOMAXPROCS needs nothing of this kind: since Go 1.25 the runtime derives it from the CPU
// limit of its cgroup (cpu.max on cgroup v2, cpu.cfs_quota_us / cpu.cfs_period_us on v1),
// rounded up and never below 2.
package memlimit

import (
	"errors"
	"fmt"
	"runtime/debug"
	"strconv"
	"strings"
)

const (
	// Env names the variable holding the container's memory limit in bytes.
	Env = "MEMORY_LIMIT"
	// Percent of the container's limit given to the Go runtime as its soft limit.
	Percent = 90
)

// Applied says what Set did: Limit is the soft limit in bytes now in force (0 when none was
// set) and Source where it came from (GOMEMLIMIT, MEMORY_LIMIT or none).
type Applied struct {
	Limit  int64
	Source string
}

// Set applies Percent of MEMORY_LIMIT as the runtime's soft memory limit, unless GOMEMLIMIT
// is set (the runtime read it at start) or MEMORY_LIMIT is absent. getenv is os.Getenv in the
// binaries.
func Set(getenv func(string) string) (Applied, error) {
	if v := getenv("GOMEMLIMIT"); v != "" {
		return Applied{Limit: debug.SetMemoryLimit(-1), Source: "GOMEMLIMIT"}, nil
	}
	v := strings.TrimSpace(getenv(Env))
	if v == "" {
		return Applied{Source: "none"}, nil
	}
	limit, err := strconv.ParseInt(v, 10, 64)
	if err == nil && limit <= 0 {
		err = errors.New("not positive")
	}
	if err != nil {
		return Applied{Source: "none"}, fmt.Errorf("%s=%q is not a positive number of bytes (the downward API's limits.memory with the default divisor gives one): %w", Env, v, err)
	}
	soft := limit / 100 * Percent
	debug.SetMemoryLimit(soft)
	return Applied{Limit: soft, Source: Env}, nil
}
