// Command hello is the workload `make cluster-check` runs on the cluster, in a FROM scratch
// image: `hello serve` answers HTTP (with a readiness path), `hello get URL` and
// `hello lookup NAME` are what a second pod runs to prove that a ClusterIP Service and CoreDNS
// work from inside the cluster, and `hello alloc MIB` holds that much memory, to prove a pod's
// memory limit is enforced (OOMKilled). The image has no shell, so the checks are subcommands.
package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fail(fmt.Errorf("usage: hello serve|get URL|lookup NAME"))
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve()
	case "get":
		err = get(arg(2))
	case "lookup":
		err = lookup(arg(2))
	case "alloc":
		err = alloc(arg(2))
	default:
		err = fmt.Errorf("unknown subcommand %q", os.Args[1])
	}
	if err != nil {
		fail(err)
	}
}

func arg(i int) string {
	if len(os.Args) <= i {
		fail(fmt.Errorf("%s needs an argument", os.Args[1]))
	}
	return os.Args[i]
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "hello:", err)
	os.Exit(1)
}

func serve() error {
	host, _ := os.Hostname()
	addr := ":8080"
	if p := os.Getenv("PORT"); p != "" {
		addr = ":" + p
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) { _, _ = fmt.Fprintf(w, "hello from %s\n", host) })
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	return srv.ListenAndServe()
}

func get(url string) error {
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return fmt.Errorf("get %s: %w", url, err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("read %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("get %s: %s", url, resp.Status)
	}
	_, err = os.Stdout.Write(body)
	return err
}

func lookup(name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupHost(ctx, name)
	if err != nil {
		return fmt.Errorf("lookup %s: %w", name, err)
	}
	for _, a := range addrs {
		fmt.Println(a)
	}
	return nil
}

// alloc touches every page of n MiB so they count against the cgroup, then holds them: under a
// smaller limit the kernel kills it; without one it never exits and the check times out.
// It grows by 1 MiB every 20 ms, as a process under load does: one killed within milliseconds
// of its start dies before containerd 1.6 watches its cgroup for OOM events (cgroup v1), and
// kubelet then reports exit code 137 with reason Error instead of OOMKilled.
func alloc(n string) error {
	mib, err := strconv.Atoi(n)
	if err != nil {
		return fmt.Errorf("alloc %q: %w", n, err)
	}
	held := make([][]byte, 0, mib)
	for range mib {
		b := make([]byte, 1<<20)
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1
		}
		held = append(held, b)
		time.Sleep(20 * time.Millisecond)
	}
	fmt.Printf("holding %d MiB\n", len(held))
	select {}
}
