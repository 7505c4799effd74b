package faults

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kafkachannel/kafkachannel/api/v1beta1"
	"github.com/kafkachannel/kafkachannel/dispatcher"
	"github.com/kafkachannel/kafkachannel/environments/localstack"
	"github.com/kafkachannel/kafkachannel/environments/poll"
	"github.com/kafkachannel/kafkachannel/internal/naming"
)

const chNS = "default"

// Subscriber behaviours.
const (
	answerOK    int32 = iota
	answerBurst       // 500 and 503 alternately
	answerDown        // 503 always
)

// sink is a subscriber that records the id of every event it accepted.
type sink struct {
	srv  *httptest.Server
	mode atomic.Int32
	mu   sync.Mutex
	got  map[string]int
	// at is when each id was first accepted, for the gaps a fault leaves in delivery.
	at map[string]time.Time
	// refused counts the deliveries answered with an error.
	refused atomic.Int64
}

func newSink(t *testing.T) *sink {
	s := &sink{got: map[string]int{}, at: map[string]time.Time{}}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		switch s.mode.Load() {
		case answerBurst:
			if s.refused.Add(1)%2 == 0 {
				w.WriteHeader(http.StatusServiceUnavailable)
			} else {
				w.WriteHeader(http.StatusInternalServerError)
			}
			return
		case answerDown:
			s.refused.Add(1)
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		id := r.Header.Get("Ce-Id")
		s.mu.Lock()
		if s.got[id] == 0 {
			s.at[id] = time.Now()
		}
		s.got[id]++
		s.mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *sink) url() string { return s.srv.URL + "/" }

// tally counts how many of ids arrived, how many arrived more than once in total, and which
// are missing.
func (s *sink) tally(ids []string) (delivered, duplicates int, missing []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		n := s.got[id]
		if n == 0 {
			missing = append(missing, id)
			continue
		}
		delivered++
		duplicates += n - 1
	}
	return delivered, duplicates, missing
}

// answer is one POST to the receiver.
type answer struct {
	id         string
	code       int // 0: no answer (transport error or timeout)
	reason     string
	start, end time.Time
}

// flow posts events to a channel from a few senders until stopped, recording every answer.
type flow struct {
	url     string
	prefix  string
	stop    chan struct{}
	wg      sync.WaitGroup
	mu      sync.Mutex
	answers []answer
}

// startFlow posts `senders` events at a time, each sender pausing `interval` between posts.
func startFlow(url, prefix string, senders int, interval time.Duration) *flow {
	f := &flow{url: url, prefix: prefix, stop: make(chan struct{})}
	// Longer than the receiver's produce timeout (10 s): a slow answer is still an answer.
	client := &http.Client{Timeout: 20 * time.Second}
	var seq atomic.Int64
	for range senders {
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			for {
				select {
				case <-f.stop:
					return
				case <-time.After(interval):
				}
				id := prefix + "-" + strconv.FormatInt(seq.Add(1), 10)
				a := answer{id: id, start: time.Now()}
				a.code, a.reason = post(client, url, id)
				a.end = time.Now()
				f.mu.Lock()
				f.answers = append(f.answers, a)
				f.mu.Unlock()
			}
		}()
	}
	return f
}

func post(client *http.Client, url, id string) (int, string) {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader([]byte(`{"n":"`+id+`"}`)))
	if err != nil {
		return 0, err.Error()
	}
	req.Header.Set("Ce-Specversion", "1.0")
	req.Header.Set("Ce-Id", id)
	req.Header.Set("Ce-Source", "/faults")
	req.Header.Set("Ce-Type", "dev.kafkachannel.fault")
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
	_ = resp.Body.Close()
	return resp.StatusCode, strings.TrimSpace(string(body))
}

// accepted is the number of 202 answers so far.
func (f *flow) accepted() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, a := range f.answers {
		if a.code == http.StatusAccepted {
			n++
		}
	}
	return n
}

// waitAccepted waits until n more events were accepted.
func (f *flow) waitAccepted(t *testing.T, n int) {
	t.Helper()
	want := f.accepted() + n
	poll.Eventually(t, 2*time.Minute, fmt.Sprintf("%d events accepted", want), func() error {
		if got := f.accepted(); got < want {
			return fmt.Errorf("%d accepted", got)
		}
		return nil
	})
}

// end stops the flow and returns every answer.
func (f *flow) end() []answer {
	close(f.stop)
	f.wg.Wait()
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.answers)
}

func acceptedIDs(as []answer) []string {
	var ids []string
	for _, a := range as {
		if a.code == http.StatusAccepted {
			ids = append(ids, a.id)
		}
	}
	return ids
}

// codes summarises the answers other than 202, e.g. "503:12 none:1".
func codes(as []answer) string {
	m := map[int]int{}
	for _, a := range as {
		if a.code != http.StatusAccepted {
			m[a.code]++
		}
	}
	var keys []int
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := ""
	for _, k := range keys {
		name := strconv.Itoa(k)
		if k == 0 {
			name = "no answer"
		}
		out += fmt.Sprintf(" %s:%d", name, m[k])
	}
	if out == "" {
		return "all 202"
	}
	reasons := map[string]bool{}
	for _, a := range as {
		if a.code != http.StatusAccepted && len(reasons) < 3 {
			reasons[a.reason] = true
		}
	}
	var rs []string
	for r := range reasons {
		rs = append(rs, fmt.Sprintf("%q", r))
	}
	slices.Sort(rs)
	return "other answers" + out + " (" + strings.Join(rs, "; ") + ")"
}

// Duplicate bounds per fault, with room over what runs have shown (docs/reliability.md):
// redeliveries are what was handled since the last commit (100 ms) plus what was in flight.
const (
	// dupsNoRestart: no member restarts and nothing is rebalanced; a retry after a failed
	// attempt is not a duplicate, so only a lost 2xx could make one.
	dupsNoRestart = 10
	// dupsPerRebalance: a graceful rebalance commits before it hands a partition over and
	// redelivers at most the in-flight records (up to MaxInFlight per partition).
	dupsPerRebalance = 50
	// dupsPerReaderRestart: a cut connection or a broker restart restarts every reader
	// (seen: 14 to 20).
	dupsPerReaderRestart = 200
)

// killDups is what one SIGKILL at kill may redeliver: the records handled since the last
// commit that reached Kafka (up to two commit intervals, when the kill lands while a commit is
// in flight) at the rate events were accepted in the second before the kill, plus the
// in-flight window of every partition. A fixed number cannot be the bound: the flows here run
// at a few hundred to a few thousand events a second depending on the machine.
func killDups(as []answer, kill time.Time, partitions int) int {
	var rate int
	for _, a := range as {
		if a.code == http.StatusAccepted && !a.end.After(kill) && a.end.After(kill.Add(-time.Second)) {
			rate++
		}
	}
	return rate*int(2*dispatcher.DefaultCommitInterval)/int(time.Second) + partitions*dispatcher.DefaultMaxInFlight
}

// settle waits until every accepted id reached one of the sinks (or the deadline), then
// reports the scenario and fails it on any loss or on more than maxDups duplicates (the
// scenario's bound: what its faults may redeliver, see docs/reliability.md "Duplicates").
func settle(t *testing.T, scenario string, maxDups int, ids []string, notes func() string, sinks ...*sink) {
	t.Helper()
	r := waitDelivered(t, scenario, ids, sinks...)
	if r.Duplicates > maxDups {
		t.Errorf("%s: %d duplicates, want at most %d", scenario, r.Duplicates, maxDups)
	}
	r.Notes = notes()
	report(t, r)
}

// waitDelivered waits until every accepted id reached one of the sinks (or the deadline) and
// fails the test on any loss; the caller reports the result.
func waitDelivered(t *testing.T, scenario string, ids []string, sinks ...*sink) result {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	var delivered, dups int
	var missing []string
	for {
		delivered, dups, missing = 0, 0, nil
		seen := map[string]bool{}
		for _, s := range sinks {
			d, du, _ := s.tally(ids)
			_ = d
			dups += du
			s.mu.Lock()
			for _, id := range ids {
				if s.got[id] > 0 {
					seen[id] = true
				}
			}
			s.mu.Unlock()
		}
		for _, id := range ids {
			if seen[id] {
				delivered++
			} else {
				missing = append(missing, id)
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(300 * time.Millisecond)
	}
	if len(missing) > 0 {
		t.Errorf("%s: %d of %d accepted events never delivered, e.g. %v", scenario, len(missing), len(ids), missing[:min(5, len(missing))])
	}
	if len(ids) == 0 {
		t.Errorf("%s: no event was accepted at all", scenario)
	}
	return result{Scenario: scenario, Sent: len(ids), Delivered: delivered, Duplicates: dups, Lost: len(missing)}
}

// channel creates a KafkaChannel with one subscriber and waits until it and the subscriber
// are Ready; it is deleted when the test ends.
func (w *world) channel(t *testing.T, name string, partitions int32, sub v1beta1.SubscriberSpec, delivery *v1beta1.DeliverySpec) string {
	t.Helper()
	ctx := context.Background()
	ch := &v1beta1.KafkaChannel{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: chNS},
		Spec:       v1beta1.KafkaChannelSpec{NumPartitions: partitions, Subscribers: []v1beta1.SubscriberSpec{sub}, Delivery: delivery},
	}
	if err := w.stack.Client.Create(ctx, ch); err != nil {
		t.Fatalf("creating channel %s: %v", name, err)
	}
	t.Cleanup(func() { _ = w.stack.Client.Delete(context.Background(), ch) })
	w.waitReady(t, name, sub.UID)
	return fmt.Sprintf("%s/%s/%s", w.stack.ReceiverURL, chNS, name)
}

func (w *world) waitReady(t *testing.T, name, uid string) {
	t.Helper()
	poll.Eventually(t, 2*time.Minute, "channel "+name+" Ready with its subscriber", func() error {
		ch := &v1beta1.KafkaChannel{}
		if err := w.stack.Client.Get(context.Background(), client.ObjectKey{Namespace: chNS, Name: name}, ch); err != nil {
			return err
		}
		ready := false
		for _, c := range ch.Status.Conditions {
			if c.Type == v1beta1.ConditionReady && c.Status == metav1.ConditionTrue {
				ready = true
			}
		}
		if !ready || ch.Status.ObservedGeneration != ch.Generation {
			return fmt.Errorf("not Ready at generation %d: %+v", ch.Generation, ch.Status.Conditions)
		}
		for _, s := range ch.Status.Subscribers {
			if s.UID == uid && s.Ready == "True" {
				return nil
			}
		}
		return fmt.Errorf("subscriber %s not ready: %+v", uid, ch.Status.Subscribers)
	})
}

func subscriber(uid string, s *sink) v1beta1.SubscriberSpec {
	u := s.url()
	return v1beta1.SubscriberSpec{Name: uid, UID: uid, Generation: 1, SubscriberURI: &u}
}

// dispatchers lists the running dispatcher replicas of a channel.
func (w *world) dispatchers(name string) []localstack.PodInfo {
	var out []localstack.PodInfo
	for _, p := range w.stack.Node.Pods() {
		if p.Deployment == naming.DispatcherName(chNS, name) && p.PID > 0 {
			out = append(out, p)
		}
	}
	return out
}

// restarts sums the container restarts of every data-plane pod.
func (w *world) restarts() map[string]int {
	out := map[string]int{}
	for _, p := range w.stack.Node.Pods() {
		out[p.Name] = p.Restarts
	}
	return out
}
