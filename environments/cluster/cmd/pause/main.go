// Command pause is the pod sandbox's first process: it holds the pod's namespaces open, reaps the
// orphans that end up as its children (it is PID 1 when the pod shares its PID namespace) and
// exits on SIGTERM or SIGINT. It is built static into a FROM scratch image because the usual
// registry.k8s.io/pause cannot be pulled on machines that see only package registries.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for sig := range sigs {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		reap()
	}
}

// reap collects every child that has exited; one SIGCHLD can stand for several exits.
func reap() {
	for {
		var status syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}
