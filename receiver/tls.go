package receiver

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Files of a kubernetes.io/tls Secret (what cert-manager writes), as mounted into the receiver.
const (
	TLSCertFile = "tls.crt"
	TLSKeyFile  = "tls.key"
)

// DefaultTLSDir is where the manager mounts the receiver's certificate Secret.
const DefaultTLSDir = "/etc/receiver-tls"

// TLSDirEnv overrides DefaultTLSDir.
const TLSDirEnv = "RECEIVER_TLS_DIR"

// certRecheck is how often the files are looked at again: kubelet swaps a rotated Secret in
// within a minute or so, a second more is invisible, and no handshake waits on the disk.
const certRecheck = time.Second

// CertReloader serves the certificate in a directory and follows it when it changes, so a
// rotated certificate (cert-manager renews before expiry) is used without a restart. Until a
// valid pair is there, handshakes fail with a message saying so.
type CertReloader struct {
	dir string
	now func() time.Time

	mu        sync.Mutex
	checked   time.Time
	certPEM   []byte
	keyPEM    []byte
	cert      *tls.Certificate
	lastError error
}

// NewCertReloader reads dir/tls.crt and dir/tls.key on the first handshake and whenever they
// change after that.
func NewCertReloader(dir string) *CertReloader {
	return &CertReloader{dir: dir, now: time.Now}
}

// TLSConfig is a server configuration that takes its certificate from c.
func (c *CertReloader) TLSConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: c.GetCertificate}
}

// GetCertificate is tls.Config.GetCertificate.
func (c *CertReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now := c.now(); c.cert == nil || now.Sub(c.checked) >= certRecheck {
		c.checked = now
		c.reload()
	}
	if c.cert == nil {
		return nil, c.lastError
	}
	return c.cert, nil
}

// reload re-reads the files; a pair that cannot be read or parsed (say, read halfway through
// a rotation) keeps the previous certificate.
func (c *CertReloader) reload() {
	certPEM, err1 := os.ReadFile(filepath.Join(c.dir, TLSCertFile))
	keyPEM, err2 := os.ReadFile(filepath.Join(c.dir, TLSKeyFile))
	if err := errors.Join(err1, err2); err != nil {
		c.lastError = fmt.Errorf("no TLS certificate for the receiver in %s: %w", c.dir, err)
		return
	}
	if c.cert != nil && bytes.Equal(certPEM, c.certPEM) && bytes.Equal(keyPEM, c.keyPEM) {
		return
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		c.lastError = fmt.Errorf("the TLS certificate in %s is not usable: %w", c.dir, err)
		return
	}
	c.cert, c.certPEM, c.keyPEM, c.lastError = &cert, certPEM, keyPEM, nil
}
