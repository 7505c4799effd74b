package localstack

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httputil"
	"sync/atomic"

	"github.com/kafkachannel/kafkachannel/internal/naming"
	"github.com/kafkachannel/kafkachannel/internal/observability"
)

const receiverDeployment = naming.ReceiverName

// serviceProxy stands in for a Service with a ClusterIP: it spreads requests round-robin over the
// ready replicas of one Deployment, as kube-proxy would over the Service's endpoints.
type serviceProxy struct {
	node       *Node
	deployment string
	next       atomic.Uint64
	rp         *httputil.ReverseProxy
}

func newServiceProxy(n *Node, deployment string) *serviceProxy {
	sp := &serviceProxy{node: n, deployment: deployment}
	sp.rp = &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.Out.URL.Scheme = "http"
			r.Out.URL.Host = r.In.Context().Value(endpointKey{}).(string)
			// Keep the client's Host header: the receiver routes on it.
			r.Out.Host = r.In.Host
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			http.Error(w, fmt.Sprintf("local receiver Service: the replica did not answer: %v", err), http.StatusBadGateway)
		},
	}
	return sp
}

type endpointKey struct{}

func (sp *serviceProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	eps := sp.node.ReadyEndpoints(sp.deployment, observability.IngressPort)
	if len(eps) == 0 {
		http.Error(w, fmt.Sprintf("local receiver Service: no ready replica of Deployment %s/%s yet", sp.node.Namespace, sp.deployment),
			http.StatusServiceUnavailable)
		return
	}
	ep := eps[int(sp.next.Add(1)%uint64(len(eps)))]
	sp.rp.ServeHTTP(w, r.WithContext(contextWith(r, ep)))
}

func contextWith(r *http.Request, ep string) context.Context {
	return context.WithValue(r.Context(), endpointKey{}, ep)
}
