package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/kafkachannel/kafkachannel/environments/localstack"
	"github.com/kafkachannel/kafkachannel/environments/poll"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// buildBinaries builds manager, dispatcher and receiver from this checkout into a temporary
// directory once per test binary, so the tests run on a fresh clone without `make build`.
func buildBinaries(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		repo, err := localstack.FindRepo()
		if err != nil {
			buildErr = err
			return
		}
		binDir, buildErr = os.MkdirTemp("", "kafkachannel-e2e-bin-")
		if buildErr != nil {
			return
		}
		for name, pkg := range map[string]string{"manager": ".", "dispatcher": "./cmd/dispatcher", "receiver": "./cmd/receiver"} {
			cmd := exec.Command("go", "build", "-o", filepath.Join(binDir, name), pkg)
			cmd.Dir = repo
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, err := cmd.CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatalf("building the binaries: %v", buildErr)
	}
	return binDir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// recorder is a subscriber: it records every CloudEvent it gets, by id.
type recorder struct {
	name string
	srv  *httptest.Server
	mu   sync.Mutex
	got  map[string][]event.Event
}

func newRecorder(t *testing.T, name string) *recorder {
	r := &recorder{name: name, got: map[string][]event.Event{}}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		ev, err := binding.ToEvent(req.Context(), cehttp.NewMessageFromHttpRequest(req))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		r.got[ev.ID()] = append(r.got[ev.ID()], *ev)
		r.mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *recorder) URL() string { return r.srv.URL + "/" }

// missing lists the ids r has not received.
func (r *recorder) missing(ids []string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, id := range ids {
		if len(r.got[id]) == 0 {
			out = append(out, id)
		}
	}
	return out
}

func (r *recorder) first(id string) (event.Event, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if evs := r.got[id]; len(evs) > 0 {
		return evs[0], true
	}
	return event.Event{}, false
}

func (r *recorder) waitAll(t *testing.T, ids []string, timeout time.Duration) {
	t.Helper()
	poll.Eventually(t, timeout, fmt.Sprintf("subscriber %s receives %d events", r.name, len(ids)), func() error {
		if m := r.missing(ids); len(m) > 0 {
			return fmt.Errorf("%d missing, e.g. %v", len(m), m[:min(5, len(m))])
		}
		return nil
	})
}

// sent is an event as the test sent it, to compare with what subscribers got.
type sent struct {
	id, source, typ, subject, ext, data string
}

func sendEvent(ctx context.Context, url string, e sent) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(e.data))
	if err != nil {
		return err
	}
	req.Header.Set("Ce-Specversion", "1.0")
	req.Header.Set("Ce-Id", e.id)
	req.Header.Set("Ce-Source", e.source)
	req.Header.Set("Ce-Type", e.typ)
	req.Header.Set("Ce-Subject", e.subject)
	req.Header.Set("Ce-E2eext", e.ext)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("posting event %s: %w", e.id, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("posting event %s: %d %s", e.id, resp.StatusCode, b)
	}
	return nil
}

func makeEvent(prefix string, i int) sent {
	return sent{
		id: fmt.Sprintf("%s-%d", prefix, i), source: "/e2e/" + prefix, typ: "dev.kafkachannel.e2e",
		subject: fmt.Sprintf("subject-%d", i), ext: fmt.Sprintf("ext-%d", i),
		data: fmt.Sprintf(`{"n":%d,"text":"ünïcode & <markup> %s"}`, i, prefix),
	}
}

// sendBatch posts n events and returns their ids; any failure fails the test.
func sendBatch(t *testing.T, url, prefix string, n int) ([]string, []sent) {
	t.Helper()
	var ids []string
	var evs []sent
	for i := 0; i < n; i++ {
		e := makeEvent(prefix, i)
		if err := sendEvent(context.Background(), url, e); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, e.id)
		evs = append(evs, e)
	}
	return ids, evs
}

// checkUnaltered compares what a subscriber got with what was sent.
func checkUnaltered(t *testing.T, r *recorder, evs []sent) {
	t.Helper()
	for _, e := range evs {
		got, ok := r.first(e.id)
		if !ok {
			t.Errorf("%s: event %s missing", r.name, e.id)
			continue
		}
		ext, _ := got.Extensions()["e2eext"].(string)
		for name := range got.Extensions() {
			// The senders send no trace context, so not even traceparent may be added on the way
			// (the trace travels in the record's and the request's own headers).
			if name != "e2eext" {
				t.Errorf("%s: event %s gained extension %s=%v", r.name, e.id, name, got.Extensions()[name])
			}
		}
		if got.SpecVersion() != "1.0" || got.Source() != e.source || got.Type() != e.typ || got.Subject() != e.subject ||
			ext != e.ext || got.DataContentType() != "application/json" || string(got.Data()) != e.data {
			t.Errorf("%s: event %s altered:\n got %s\nwant %+v", r.name, e.id, got.String(), e)
		}
	}
}

// flow sends events continuously until stopped, recording the ids the receiver accepted.
type flow struct {
	mu       sync.Mutex
	accepted []string
	errs     int
	stop     chan struct{}
	done     chan struct{}
}

func startFlow(url, prefix string, interval time.Duration) *flow {
	f := &flow{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(f.done)
		for i := 0; ; i++ {
			select {
			case <-f.stop:
				return
			case <-time.After(interval):
			}
			e := makeEvent(prefix, i)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err := sendEvent(ctx, url, e)
			cancel()
			f.mu.Lock()
			if err == nil {
				f.accepted = append(f.accepted, e.id)
			} else {
				f.errs++
			}
			f.mu.Unlock()
		}
	}()
	return f
}

func (f *flow) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.accepted)
}

func (f *flow) end() []string {
	close(f.stop)
	<-f.done
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string{}, f.accepted...)
}

// consumed reads eventing_kafka_consumed_msg_count from a /metrics URL: consumer -> partition -> count.
func consumed(url string) (map[string]map[string]float64, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "eventing_kafka_consumed_msg_count{") {
			continue
		}
		labels, val, _ := strings.Cut(strings.TrimPrefix(line, "eventing_kafka_consumed_msg_count{"), "} ")
		v, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err != nil {
			continue
		}
		var consumer, partition string
		for _, kv := range strings.Split(labels, ",") {
			k, v, _ := strings.Cut(kv, "=")
			switch k {
			case "consumer":
				consumer = strings.Trim(v, `"`)
			case "partition":
				partition = strings.Trim(v, `"`)
			}
		}
		if out[consumer] == nil {
			out[consumer] = map[string]float64{}
		}
		out[consumer][partition] = v
	}
	return out, sc.Err()
}

// received counts the ids of ids that r got at least once.
func (r *recorder) received(ids []string) int { return len(ids) - len(r.missing(ids)) }

// duplicates counts the deliveries of ids beyond the first.
func (r *recorder) duplicates(ids []string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, id := range ids {
		n += max(0, len(r.got[id])-1)
	}
	return n
}
