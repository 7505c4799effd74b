package localstack

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kafkachannel/kafkachannel/environments/certs"
	"github.com/kafkachannel/kafkachannel/internal/naming"
	"github.com/kafkachannel/kafkachannel/internal/observability"
)

// ReceiverTLSSecretName is the receiver's certificate Secret the stack makes, the manager's
// default RECEIVER_TLS_SECRET_NAME; in a cluster cert-manager would write it.
const ReceiverTLSSecretName = "kafkachannel-receiver-tls"

// applyReceiverTLS makes the stack's own CA, signs a certificate for the receiver Service's names
// and for 127.0.0.1 (where the stack exposes it), stores them as cert-manager would, and writes
// the CA to Dir/receiver-ca.crt for clients on this machine. A Secret left by an earlier run is
// kept, with its CA.
func (s *Stack) applyReceiverTLS(ctx context.Context) error {
	ns := s.Opts.OperatorNamespace
	secret := &corev1.Secret{}
	err := s.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: ReceiverTLSSecretName}, secret)
	if apierrors.IsNotFound(err) {
		ca, cerr := certs.NewCA("kafkachannel local stack CA")
		if cerr != nil {
			return cerr
		}
		host := naming.ReceiverHost(ns)
		certPEM, keyPEM, cerr := ca.Issue(host, naming.ReceiverName+"."+ns+".svc", "localhost", "127.0.0.1")
		if cerr != nil {
			return cerr
		}
		secret = &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: ReceiverTLSSecretName, Namespace: ns},
			Type:       corev1.SecretTypeTLS,
			Data:       map[string][]byte{"tls.crt": certPEM, "tls.key": keyPEM, "ca.crt": ca.CertPEM},
		}
		err = s.Client.Create(ctx, secret)
	}
	if err != nil {
		return fmt.Errorf("applying the receiver's certificate Secret: %w", err)
	}
	if err := os.WriteFile(s.ReceiverCAFile(), secret.Data["ca.crt"], 0o644); err != nil {
		return fmt.Errorf("writing the receiver CA: %w", err)
	}
	return nil
}

// ReceiverCAFile is the PEM CA the receiver's https certificate is signed with.
func (s *Stack) ReceiverCAFile() string { return filepath.Join(s.Opts.Dir, "receiver-ca.crt") }

// tlsPassthrough stands in for the receiver Service's https port: it forwards each connection,
// still encrypted, to a ready replica's https port, as kube-proxy forwards TCP.
type tlsPassthrough struct {
	node *Node
	ln   net.Listener
	next atomic.Uint64
}

func (s *Stack) startReceiverTLSProxy() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("listening for the receiver Service's https port: %w", err)
	}
	s.ReceiverTLSURL = "https://" + ln.Addr().String()
	p := &tlsPassthrough{node: s.Node, ln: ln}
	s.tlsProxy = p
	go p.serve()
	return nil
}

func (p *tlsPassthrough) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		go p.forward(c)
	}
}

func (p *tlsPassthrough) forward(c net.Conn) {
	defer func() { _ = c.Close() }()
	eps := p.node.ReadyEndpoints(receiverDeployment, observability.IngressTLSPort)
	if len(eps) == 0 {
		return // the client sees the connection closed, as with a Service without endpoints
	}
	up, err := net.Dial("tcp", eps[int(p.next.Add(1)%uint64(len(eps)))])
	if err != nil {
		return
	}
	defer func() { _ = up.Close() }()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go pipe(up, c)
	go pipe(c, up)
	<-done
	<-done
}

// close stops accepting; open connections end with their replica.
func (p *tlsPassthrough) close() { _ = p.ln.Close() }
