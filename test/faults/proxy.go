// Package faults is the fault suite: the whole system on the local stack (kube-apiserver,
// Kafka, manager, dispatcher and receiver processes) under dispatcher crashes, rescaling,
// failing subscribers, a cut connection to Kafka, a broker restart, a manager restart and a
// rotated Kafka password, with a subscriber that records every event id so each scenario can
// report sent / delivered / duplicates / lost.
//
// `go test ./test/faults` runs the quick scenarios (part of `make test`);
// KAFKACHANNEL_FAULTS=full runs all of them (`make test-faults`).
package faults

import (
	"errors"
	"io"
	"net"
	"sync"
)

// Proxy is a TCP proxy between the data plane and Kafka that a test can break and heal: broken,
// it closes every open connection and refuses new ones, the way a network partition looks to
// a client whose connections are reset.
type Proxy struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	broken bool
	conns  map[net.Conn]struct{}
	closed bool
}

// NewProxy listens on addr ("127.0.0.1:0" for any port) and forwards to target.
func NewProxy(addr, target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	go p.serve()
	return p, nil
}

// Addr is where clients connect.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Break cuts every connection and refuses new ones until Heal.
func (p *Proxy) Break() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.broken = true
	for c := range p.conns {
		_ = c.Close()
	}
}

// Heal lets connections through again.
func (p *Proxy) Heal() {
	p.mu.Lock()
	p.broken = false
	p.mu.Unlock()
}

// Close stops the proxy and its connections.
func (p *Proxy) Close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	_ = p.ln.Close()
	p.Break()
}

func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.broken || p.closed {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	_ = c.Close()
}

func (p *Proxy) serve() {
	for {
		in, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		go p.pipe(in)
	}
}

func (p *Proxy) pipe(in net.Conn) {
	if !p.track(in) {
		_ = in.Close()
		return
	}
	defer p.untrack(in)
	out, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	if !p.track(out) {
		_ = out.Close()
		return
	}
	defer p.untrack(out)
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(out, in); done <- struct{}{} }()
	go func() { _, _ = io.Copy(in, out); done <- struct{}{} }()
	// Either direction ending ends the connection, as a reset would.
	<-done
}
