// Command fakepod is a stand-in container for the local node's tests: it serves its environment,
// the files it can read and its readiness on the ports the node maps for it.
package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"

	"github.com/kafkachannel/kafkachannel/internal/observability"
)

func main() {
	mux := http.NewServeMux()
	ok := func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") }
	mux.HandleFunc("/healthz", ok)
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if os.Getenv("NEVER_READY") != "" {
			http.Error(w, "configured never to be ready", http.StatusServiceUnavailable)
			return
		}
		ok(w, r)
	})
	mux.HandleFunc("/env", func(w http.ResponseWriter, _ *http.Request) {
		env := map[string]string{}
		for _, kv := range os.Environ() {
			k, v, _ := strings.Cut(kv, "=")
			env[k] = v
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"env": env, "args": os.Args[1:], "pid": os.Getpid()})
	})
	mux.HandleFunc("/file", func(w http.ResponseWriter, r *http.Request) {
		b, err := os.ReadFile(r.URL.Query().Get("path"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		_, _ = w.Write(b)
	})
	errs := make(chan error, 2)
	go func() { errs <- http.ListenAndServe(observability.Addr(observability.MetricsPort), mux) }()
	go func() { errs <- http.ListenAndServe(observability.Addr(observability.IngressPort), mux) }()
	fmt.Fprintln(os.Stderr, <-errs)
	os.Exit(1)
}
