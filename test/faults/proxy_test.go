package faults

import (
	"bufio"
	"net"
	"testing"
	"time"
)

// echo serves lines back to the sender.
func echo(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := c.Write([]byte(line)); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func roundTrip(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	return ping(c)
}

func ping(c net.Conn) error {
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return err
	}
	_, err := bufio.NewReader(c).ReadString('\n')
	return err
}

// The fault scenarios are only as good as the proxy: broken, it must cut open connections and
// refuse new ones; healed, it must carry traffic again.
func TestProxyBreakHeal(t *testing.T) {
	p, err := NewProxy("127.0.0.1:0", echo(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	open, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	if err := ping(open); err != nil {
		t.Fatalf("through the proxy: %v", err)
	}
	p.Break()
	if err := ping(open); err == nil {
		t.Error("a connection opened before Break still carries traffic")
	}
	if err := roundTrip(p.Addr()); err == nil {
		t.Error("a new connection carries traffic while broken")
	}
	p.Heal()
	if err := roundTrip(p.Addr()); err != nil {
		t.Errorf("after Heal: %v", err)
	}
}
