package apachekafka

import "syscall"

// processAttrs gives each JVM its own process group (a terminal's Ctrl-C reaches the parent,
// which stops the brokers in order) and has the kernel SIGKILL it when the parent dies without
// cleaning up, so no broker outlives a crashed or killed test binary holding its ports.
func processAttrs() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
