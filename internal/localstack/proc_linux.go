package localstack

import "syscall"

// processAttrs puts each child in its own process group, so stopping it also stops anything it
// started, and has the kernel kill it if the stack dies without cleaning up (no orphans bound to
// the demo's ports after a crash or a SIGKILL of the stack).
func processAttrs() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
