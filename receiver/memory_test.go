package receiver

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/kafkachannel/kafkachannel/environments/kafkatest"
	"github.com/kafkachannel/kafkachannel/internal/naming"
)

// openHeaderOnly opens n connections that each send the headers of a binary-mode event
// announcing contentLength bytes, and no body; they stay open until the test ends.
func openHeaderOnly(t *testing.T, addr, path string, n, contentLength int) []net.Conn {
	t.Helper()
	conns := make([]net.Conn, 0, n)
	t.Cleanup(func() {
		for _, c := range conns {
			_ = c.Close()
		}
	})
	head := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\nce-specversion: 1.0\r\nce-id: idle\r\nce-source: /s\r\nce-type: t\r\n"+
		"Content-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n", path, addr, contentLength)
	for range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("connection %d: %v", len(conns), err)
		}
		conns = append(conns, c)
		if _, err := c.Write([]byte(head)); err != nil {
			t.Fatal(err)
		}
	}
	return conns
}

// heapInUse is the live heap after a collection.
func heapInUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// TestHeaderOnlyConnectionsHoldNoBodyMemory is issue 22's defect 4: 200 connections that
// announce a 1 MiB body and send none must not make the receiver hold 200 MiB (a 512 Mi pod
// dies at ~450 of them), and a sender with a real event is served meanwhile.
func TestHeaderOnlyConnectionsHoldNoBodyMemory(t *testing.T) {
	const (
		conns = 200
		// What 200 idle requests may cost together: their connections' buffers and request
		// structures (~10 KiB each), far below one 1 MiB body each (200 MiB).
		bound = 16 << 20
	)
	k := kafkatest.Start(t)
	idx := NewIndex()
	idx.SetChannel(Channel{Namespace: "mem", Name: "ch", Topic: naming.Topic("mem", "ch"), Ready: true})
	createTopic(t, k, naming.Topic("mem", "ch"), 1)
	r := startReceiver(t, k, func(c *Config) { c.Channels = idx })
	path := naming.ChannelPath("mem", "ch")

	before := heapInUse()
	openHeaderOnly(t, r.Addr().String(), path, conns, DefaultMaxBodyBytes)
	waitFor(t, 30*time.Second, "every idle request waiting for its body", func() error {
		if n := gauge(t, r.registry, "kafkachannel_receiver_bodies_reading"); n < conns {
			return fmt.Errorf("%v of %d requests are reading their body", n, conns)
		}
		return nil
	})
	after := heapInUse()
	grown := int64(after) - int64(before)
	t.Logf("heap: %d KiB before, %d KiB with %d header-only requests (%+d KiB)", before>>10, after>>10, conns, grown>>10)
	if grown > bound {
		t.Errorf("%d header-only requests grew the heap by %d MiB, more than the bound of %d MiB", conns, grown>>20, bound>>20)
	}

	req := rawRequest(t, "POST", r.url+path, with(binaryHeaders, "Content-Type", "text/plain"), strings.Repeat("x", 1024))
	if code, body := post(t, req); code != http.StatusAccepted {
		t.Errorf("a normal sender among %d idle ones: %d %q, want 202", conns, code, body)
	}
}

// gauge reads one of the receiver's gauges without labels.
func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// sendPart opens a connection and sends the headers of an event announcing contentLength
// bytes and the first sent bytes of it.
func sendPart(t *testing.T, addr, path string, contentLength, sent int) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	head := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\nce-specversion: 1.0\r\nce-id: part\r\nce-source: /s\r\nce-type: t\r\n"+
		"Content-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n", path, addr, contentLength)
	if _, err := c.Write([]byte(head + strings.Repeat("x", sent))); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestBodyBudget: the bytes of bodies held at once are bounded; a body that does not fit is
// answered 503 with Retry-After at once, a small one still fits, and the budget is given back
// when a body is done with, even one that never finished.
func TestBodyBudget(t *testing.T) {
	const budget = 256 << 10
	k := kafkatest.Start(t)
	idx := NewIndex()
	idx.SetChannel(Channel{Namespace: "budget", Name: "ch", Topic: naming.Topic("budget", "ch"), Ready: true})
	createTopic(t, k, naming.Topic("budget", "ch"), 1)
	r := startReceiver(t, k, func(c *Config) {
		c.Channels = idx
		c.MaxBodyBytes = budget
		c.BodyBudgetBytes = budget
	})
	path := naming.ChannelPath("budget", "ch")
	if got := gauge(t, r.registry, "kafkachannel_receiver_body_budget_bytes"); got != budget {
		t.Errorf("body_budget_bytes %v, want %d", got, budget)
	}

	// A slow sender holds most of the budget: 150 KiB of a 200 KiB body arrived.
	slow := sendPart(t, r.Addr().String(), path, 200<<10, 150<<10)
	waitFor(t, 10*time.Second, "the slow body to hold its buffer", func() error {
		if got := gauge(t, r.registry, "kafkachannel_receiver_body_bytes"); got < 200<<10 {
			return fmt.Errorf("%v bytes held", got)
		}
		return nil
	})

	send := func(size int) (int, string, http.Header) {
		t.Helper()
		req := rawRequest(t, "POST", r.url+path, binaryHeaders, strings.Repeat("y", size))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		var b strings.Builder
		_, _ = bufio.NewReader(resp.Body).WriteTo(&b)
		return resp.StatusCode, b.String(), resp.Header
	}
	code, body, hdr := send(100 << 10)
	if code != http.StatusServiceUnavailable || hdr.Get("Retry-After") == "" || !strings.Contains(body, "retry") {
		t.Errorf("100 KiB beyond the budget: %d %q Retry-After=%q, want 503 with Retry-After", code, body, hdr.Get("Retry-After"))
	}
	if code, body, _ := send(1 << 10); code != http.StatusAccepted {
		t.Errorf("1 KiB within what is left of the budget: %d %q, want 202", code, body)
	}

	// The slow sender goes away: its share comes back, and the larger event fits.
	_ = slow.Close()
	waitFor(t, 10*time.Second, "the budget given back", func() error {
		if got := gauge(t, r.registry, "kafkachannel_receiver_body_bytes"); got != 0 {
			return fmt.Errorf("%v bytes still held", got)
		}
		return nil
	})
	if code, body, _ := send(100 << 10); code != http.StatusAccepted {
		t.Errorf("100 KiB with the budget free: %d %q, want 202", code, body)
	}
}

// TestStalledBodyIsCutOff: a sender that stops sending its body loses the request after the
// body idle timeout (408), not after the server's one-minute read timeout.
func TestStalledBodyIsCutOff(t *testing.T) {
	k := kafkatest.Start(t)
	idx := NewIndex()
	idx.SetChannel(Channel{Namespace: "stall", Name: "ch", Topic: naming.Topic("stall", "ch"), Ready: true})
	r := startReceiver(t, k, func(c *Config) {
		c.Channels = idx
		c.BodyIdleTimeout = 300 * time.Millisecond
	})
	c := sendPart(t, r.Addr().String(), naming.ChannelPath("stall", "ch"), 1000, 10)
	// Far below the read timeout of a minute, far above the idle timeout.
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer to a stalled body: %v", err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusRequestTimeout {
		t.Errorf("stalled body: %d, want 408", resp.StatusCode)
	}
}

// TestReadBodySizes reads bodies around the buffer's growth steps, with and without a
// Content-Length: each arrives intact, holds no more of the budget than its buffer, and a
// body over the limit is a 413 whichever way it is sent.
func TestReadBodySizes(t *testing.T) {
	const limit = 256 << 10
	r, err := New(Config{Channels: NewIndex(), Writer: &kafka.Writer{Addr: kafka.TCP("127.0.0.1:1")}, MaxBodyBytes: limit})
	if err != nil {
		t.Fatal(err)
	}
	for _, size := range []int{0, 1, firstChunk - 1, firstChunk, firstChunk + 1, growChunk - 1, growChunk, growChunk + 1, 200_000, limit, limit + 1} {
		for _, chunked := range []bool{false, true} {
			t.Run(fmt.Sprintf("%d bytes, chunked=%v", size, chunked), func(t *testing.T) {
				sent := bytes.Repeat([]byte("0123456789abcdef"), size/16+1)[:size]
				req := httptest.NewRequest(http.MethodPost, "http://receiver/ns/ch", bytes.NewReader(sent))
				if chunked {
					req.ContentLength = -1
				}
				body, taken, rej := r.readBody(httptest.NewRecorder(), req)
				r.budget.give(taken)
				if size > limit {
					if rej == nil || rej.code != http.StatusRequestEntityTooLarge {
						t.Fatalf("over the limit: %v, want 413", rej)
					}
					return
				}
				if rej != nil {
					t.Fatalf("rejected: %v", rej)
				}
				if !bytes.Equal(body, sent) {
					t.Fatalf("read %d bytes, differing from the %d sent", len(body), size)
				}
				if taken != int64(cap(body)) {
					t.Errorf("%d bytes taken from the budget for a buffer of %d", taken, cap(body))
				}
				if !chunked && cap(body) != size {
					t.Errorf("buffer of %d for a body of announced length %d", cap(body), size)
				}
			})
		}
	}
	if used := r.budget.used.Load(); used != 0 {
		t.Errorf("%d bytes of budget not given back", used)
	}
}
