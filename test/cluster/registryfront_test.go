package cluster

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// registryFront serves the cluster's plain-http registry on a second loopback port that speaks
// both https and http, and returns that host and a CA file for SSL_CERT_FILE.
//
// Why: operator-sdk v1.42.2 decides whether the index image is a file-based catalog
// (fbcutil.IsFBC) with a registry client that ignores --use-http, so against an http-only
// registry `run bundle` fails with "server gave HTTP response to HTTPS client"; the rest of
// operator-sdk (bundle render, index render) honours --use-http and talks plain http to the same
// reference. The kubelet pulls that reference too: a hosts.toml in the cluster's containerd
// certs.d sends it to the registry over http, as for the registry's own address.
func (e *env) registryFront(t *testing.T) (host, caFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "registry front"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	caFile = filepath.Join(t.TempDir(), "front-ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MinVersion: tls.VersionTLS12}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go e.frontConn(c, cfg)
		}
	}()
	host = ln.Addr().String()
	t.Cleanup(func() { _ = ln.Close() })
	e.redirectRegistry(t, host)
	return host, caFile
}

// redirectRegistry makes the cluster's containerd pull images named host/... from the cluster's
// registry over plain http (a hosts.toml in its certs.d, read at each pull), until the test ends.
func (e *env) redirectRegistry(t *testing.T, host string) {
	t.Helper()
	dir := filepath.Join(filepath.Dir(e.kubeconfig), "etc", "certs.d", host)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	hosts := "server = \"http://" + e.registry + "\"\n\n[host.\"http://" + e.registry + "\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
	if err := os.WriteFile(filepath.Join(dir, "hosts.toml"), []byte(hosts), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
}

// frontConn relays one connection to the registry, ending TLS first when the client speaks it
// (a TLS record starts with the handshake content type, 0x16; an HTTP request with a letter).
func (e *env) frontConn(c net.Conn, cfg *tls.Config) {
	defer func() { _ = c.Close() }()
	br := bufio.NewReader(c)
	first, err := br.Peek(1)
	if err != nil {
		return
	}
	var client io.ReadWriter = struct {
		io.Reader
		io.Writer
	}{br, c}
	if first[0] == 0x16 {
		tc := tls.Server(peekedConn{Conn: c, r: br}, cfg)
		if tc.Handshake() != nil {
			return
		}
		client = tc
	}
	up, err := net.Dial("tcp", e.registry)
	if err != nil {
		return
	}
	defer func() { _ = up.Close() }()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, client); done <- struct{}{} }()
	go func() { _, _ = io.Copy(client, up); done <- struct{}{} }()
	<-done
}

// peekedConn is a net.Conn whose reads start with what a bufio.Reader already peeked.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (p peekedConn) Read(b []byte) (int, error) { return p.r.Read(b) }
