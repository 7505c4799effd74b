package proc

import "syscall"

// Attrs puts a child in its own process group (a terminal's Ctrl-C reaches the parent, which
// stops its children in order; stopping the group stops what the child started) and has the
// kernel SIGKILL it when the parent dies without cleaning up, so no child outlives a crashed
// or killed stack or test holding its ports.
func Attrs() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
