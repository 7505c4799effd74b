// Command eventdisplay is a tiny CloudEvents sink: it prints every event it receives and answers
// 202 Accepted. `make demo` subscribes it to the sample channel.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/cloudevents/sdk-go/v2/binding"
)

func main() {
	port := flag.Int("port", 8090, "port to listen on (127.0.0.1 and every other interface)")
	// The kubelet rotates a container's log at 10 MiB and kubectl logs shows only the newest
	// file: a subscriber under load that prints whole events loses its history there.
	summary := flag.Bool("summary", false, "print only the one-line summary of each event")
	flag.Parse()

	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "POST CloudEvents here", http.StatusMethodNotAllowed)
			return
		}
		ev, err := binding.ToEvent(r.Context(), cehttp.NewMessageFromHttpRequest(r))
		if err != nil {
			log.Printf("not a CloudEvent: %v", err)
			http.Error(w, "not a CloudEvent: "+err.Error(), http.StatusBadRequest)
			return
		}
		// One line a script can grep, then the event in full. The path tells apart subscribers
		// that share one event display (make test-cluster's 100 subscribers).
		if *summary {
			fmt.Printf("received event id=%s type=%s source=%s path=%s\n", ev.ID(), ev.Type(), ev.Source(), r.URL.Path)
		} else {
			fmt.Printf("received event id=%s type=%s source=%s path=%s\n%s\n", ev.ID(), ev.Type(), ev.Source(), r.URL.Path, ev.String())
		}
		w.WriteHeader(http.StatusAccepted)
	})
	l, err := net.Listen("tcp", fmt.Sprintf(":%d", *port))
	if err != nil {
		log.Fatalf("listening on port %d: %v (pick another with --port)", *port, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	log.Printf("event display listening on %s", l.Addr())
	if err := srv.Serve(l); err != nil && err != http.ErrServerClosed {
		log.Fatal(err)
	}
}
