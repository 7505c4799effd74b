// Command sender runs in a pod of make test-cluster: it POSTs numbered binary-mode CloudEvents
// to a channel's address and retries each on a connection error, a 5xx or a 429 until it is
// accepted, as a sender that wants every event delivered does. It exits 0 once all were
// accepted and prints one summary line the test reads from its log.
package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/kafkachannel/kafkachannel/test/cluster"
)

func main() {
	url := flag.String("url", "", "the channel's address")
	prefix := flag.String("prefix", "e", "event ids are PREFIX-SEQ")
	count := flag.Int("count", 100, "events to send")
	interval := flag.Duration("interval", 10*time.Millisecond, "pause between events")
	giveUp := flag.Duration("give-up", 5*time.Minute, "how long one event may be retried")
	caFile := flag.String("ca", "", "PEM CA to trust for an https address (the channel's CACerts)")
	flag.Parse()
	client := &http.Client{Timeout: 10 * time.Second}
	if *caFile != "" {
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			log.Fatal(err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			log.Fatalf("no certificate in %s", *caFile)
		}
		client.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	}
	retries := 0
	start := time.Now()
	for seq := 1; seq <= *count; seq++ {
		deadline := time.Now().Add(*giveUp)
		backoff := 50 * time.Millisecond
		for {
			req, _ := http.NewRequest(http.MethodPost, *url, bytes.NewBufferString(cluster.Payload(seq)))
			req.Header.Set("Ce-Id", fmt.Sprintf("%s-%d", *prefix, seq))
			req.Header.Set("Ce-Specversion", "1.0")
			req.Header.Set("Ce-Type", "dev.kafkachannel.cluster-test")
			req.Header.Set("Ce-Source", "/cluster-test/"+*prefix)
			req.Header.Set("Ce-Seq", strconv.Itoa(seq))
			req.Header.Set("Content-Type", "application/json")
			resp, err := client.Do(req)
			status := 0
			if err == nil {
				status = resp.StatusCode
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
			}
			if err == nil && status/100 == 2 {
				break
			}
			if err == nil && status < 500 && status != http.StatusTooManyRequests {
				log.Fatalf("event %d refused with %d", seq, status)
			}
			if time.Now().After(deadline) {
				log.Fatalf("event %d not accepted within %s: %v (status %d)", seq, *giveUp, err, status)
			}
			retries++
			log.Printf("event %d: retrying after %v (status %d)", seq, err, status)
			time.Sleep(backoff)
			backoff = min(2*backoff, time.Second)
		}
		time.Sleep(*interval)
	}
	fmt.Printf("SENT count=%d retries=%d seconds=%.1f\n", *count, retries, time.Since(start).Seconds())
	os.Exit(0)
}
