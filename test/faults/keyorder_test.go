package faults

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kafkachannel/kafkachannel/api/v1beta1"
	"github.com/kafkachannel/kafkachannel/environments/poll"
)

// startKeyFlow posts events with a partitionkey (a flow, whose accepted, waitAccepted and end
// it shares). Each key belongs to one sender, which posts its
// events one at a time, so a key's sequence numbers are the order its records were written.
// A key whose post gets no 202 is dropped: whether that event was written is unknown.
func startKeyFlow(url string, senders, keysPerSender int) *flow {
	f := &flow{url: url, stop: make(chan struct{})}
	client := &http.Client{Timeout: 20 * time.Second}
	for s := range senders {
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			seq := map[string]int{}
			var keys []string
			for k := range keysPerSender {
				keys = append(keys, fmt.Sprintf("k%d", s*keysPerSender+k))
			}
			for i := 0; len(keys) > 0; i++ {
				select {
				case <-f.stop:
					return
				case <-time.After(2 * time.Millisecond):
				}
				key := keys[i%len(keys)]
				id := fmt.Sprintf("%s/%d", key, seq[key]+1)
				a := answer{id: id, start: time.Now()}
				a.code, a.reason = postKeyed(client, url, id, key)
				a.end = time.Now()
				f.mu.Lock()
				f.answers = append(f.answers, a)
				f.mu.Unlock()
				if a.code != http.StatusAccepted {
					keys = append(keys[:i%len(keys)], keys[i%len(keys)+1:]...)
					continue
				}
				seq[key]++
			}
		}()
	}
	return f
}

func postKeyed(client *http.Client, url, id, key string) (int, string) {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader([]byte(`{"n":"`+id+`"}`)))
	if err != nil {
		return 0, err.Error()
	}
	req.Header.Set("Ce-Specversion", "1.0")
	req.Header.Set("Ce-Id", id)
	req.Header.Set("Ce-Source", "/faults")
	req.Header.Set("Ce-Type", "dev.kafkachannel.fault")
	req.Header.Set("Ce-Partitionkey", key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	_ = resp.Body.Close()
	return resp.StatusCode, ""
}

// orderChecked puts a per-key order check in front of s: an event that arrives before every
// earlier event of its key arrived at least once is out of order (a redelivery of earlier
// events is at-least-once, not disorder). It returns the URL to subscribe and the violations.
func orderChecked(t *testing.T, s *sink) (string, func() []string) {
	var mu sync.Mutex
	top := map[string]int{}
	var bad []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("Ce-Id")
		if i := strings.LastIndexByte(id, '/'); i > 0 {
			if seq, err := strconv.Atoi(id[i+1:]); err == nil {
				key := id[:i]
				mu.Lock()
				if seq > top[key]+1 {
					bad = append(bad, fmt.Sprintf("%s before %s/%d", id, key, top[key]+1))
				}
				top[key] = max(top[key], seq)
				mu.Unlock()
			}
		}
		s.srv.Config.Handler.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/", func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), bad...)
	}
}

// TestQuickDispatcherSIGKILLOrderedByKey kills the dispatcher of an ordered-by-key channel
// with SIGKILL while keyed events flow. Its successor redelivers what was not committed; no
// accepted event may go missing, duplicates stay within a kill's bound, and each key's events
// still arrive in the order they were accepted.
func TestQuickDispatcherSIGKILLOrderedByKey(t *testing.T) {
	w := getWorld(t)
	s := newSink(t)
	u, disorder := orderChecked(t, s)
	const name = "keykill"
	sub := v1beta1.SubscriberSpec{Name: "keykill-sub", UID: "keykill-sub", Generation: 1, SubscriberURI: &u}
	ch := &v1beta1.KafkaChannel{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: chNS,
			Annotations: map[string]string{v1beta1.DeliveryOrderAnnotation: v1beta1.DeliveryOrderOrderedByKey}},
		Spec: v1beta1.KafkaChannelSpec{NumPartitions: 4, Subscribers: []v1beta1.SubscriberSpec{sub}},
	}
	if err := w.stack.Client.Create(context.Background(), ch); err != nil {
		t.Fatalf("creating channel %s: %v", name, err)
	}
	t.Cleanup(func() { _ = w.stack.Client.Delete(context.Background(), ch) })
	w.waitReady(t, name, sub.UID)
	url := fmt.Sprintf("%s/%s/%s", w.stack.ReceiverURL, chNS, name)

	f := startKeyFlow(url, 4, 10)
	f.waitAccepted(t, 300)
	pods := w.dispatchers(name)
	if len(pods) != 1 {
		f.end()
		t.Fatalf("want 1 dispatcher process, have %+v", pods)
	}
	old := pods[0]
	kill := time.Now()
	if err := syscall.Kill(old.PID, syscall.SIGKILL); err != nil {
		f.end()
		t.Fatalf("SIGKILL %d: %v", old.PID, err)
	}
	poll.Eventually(t, 2*time.Minute, "dispatcher restarted and consuming all 4 partitions", func() error {
		for _, p := range w.dispatchers(name) {
			if p.PID == old.PID || !p.Ready {
				continue
			}
			n, err := partitionsConsumed(p.MetricsURL)
			if err != nil {
				return err
			}
			if n == 4 {
				return nil
			}
			return fmt.Errorf("new process %d consumes %d of 4 partitions", p.PID, n)
		}
		return fmt.Errorf("pods %+v", w.dispatchers(name))
	})
	f.waitAccepted(t, 300)
	as := f.end()
	settle(t, "ordered-by-key dispatcher SIGKILLed mid-stream", killDups(as, kill, 4), acceptedIDs(as), func() string { return codes(as) }, s)
	if bad := disorder(); len(bad) > 0 {
		t.Errorf("%d deliveries out of their key's order, e.g. %v", len(bad), bad[:min(5, len(bad))])
	}
}
