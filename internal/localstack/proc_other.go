//go:build !linux

package localstack

import "syscall"

// processAttrs puts each child in its own process group, so stopping it stops its children too.
func processAttrs() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
