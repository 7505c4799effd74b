//go:build !linux

package apachekafka

import "syscall"

// processAttrs gives each JVM its own process group; only Linux can tie its life to ours.
func processAttrs() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
