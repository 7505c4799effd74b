package receiver

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/kafkachannel/kafkachannel/environments/kafkatest"
	"github.com/kafkachannel/kafkachannel/internal/naming"
)

// BenchmarkReceiver posts binary-mode events from parallel senders through a real HTTP server
// to Kafka, each answered only after acks=all. It uses the library the way a harness or the
// local stack does: an Index filled by hand, no cluster.
//
//	go test ./receiver -run '^$' -bench Receiver -cpu 1,2 -benchtime 5000x
func BenchmarkReceiver(b *testing.B) {
	k := kafkatest.Start(b)
	idx := NewIndex()
	idx.SetChannel(Channel{Namespace: "bench", Name: "ch", Topic: naming.Topic("bench", "ch"), Ready: true})
	createTopic(b, k, naming.Topic("bench", "ch"), 3)
	kc := kafkaConfig(b, k)
	r, err := New(Config{Channels: idx, Writer: NewWriter(kc, WriterOptions{}), Kafka: kc, Log: logr.Discard()})
	if err != nil {
		b.Fatal(err)
	}
	if err := r.Start("127.0.0.1:0"); err != nil {
		b.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_ = r.Shutdown(ctx)
	}()
	for r.Addr() == nil {
		time.Sleep(time.Millisecond)
	}
	url := "http://" + r.Addr().String() + naming.ChannelPath("bench", "ch")
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	payload := strings.Repeat("x", 1024)
	var seq atomic.Int64
	b.SetBytes(int64(len(payload)))
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(payload))
			req.Header.Set("ce-specversion", "1.0")
			req.Header.Set("ce-id", fmt.Sprint(seq.Add(1)))
			req.Header.Set("ce-source", "/bench")
			req.Header.Set("ce-type", "bench")
			req.Header.Set("Content-Type", "text/plain")
			resp, err := client.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusAccepted {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
}
