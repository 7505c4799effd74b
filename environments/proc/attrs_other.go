//go:build !linux

package proc

import "syscall"

// Attrs puts a child in its own process group; only Linux can tie its life to ours.
func Attrs() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
