package receiver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
)

// rejection is a request the receiver answers without writing anything: the status code and a
// reason in plain words for the sender.
type rejection struct {
	code   int
	reason string
}

func (r *rejection) Error() string { return fmt.Sprintf("%d %s", r.code, r.reason) }

func reject(code int, format string, args ...any) *rejection {
	// sdk-go's validation errors end in a newline; the reason is one line of the reply.
	return &rejection{code: code, reason: strings.TrimSpace(fmt.Sprintf(format, args...))}
}

// channelPath splits the path form of an address, "/<namespace>/<name>" (a trailing slash
// allowed). Any other path is not the path form, and the Host header decides.
func channelPath(path string) (namespace, name string, ok bool) {
	p := strings.TrimSuffix(strings.TrimPrefix(path, "/"), "/")
	namespace, name, ok = strings.Cut(p, "/")
	if !ok || namespace == "" || name == "" || strings.Contains(name, "/") {
		return "", "", false
	}
	return namespace, name, true
}

// route finds the channel a request is for: the path form first (it is explicit), then the
// Host header.
func route(idx *Index, req *http.Request) (Channel, *rejection) {
	if ns, name, ok := channelPath(req.URL.Path); ok {
		ch, found := idx.ByName(ns, name)
		if !found {
			return Channel{}, reject(http.StatusNotFound, "no KafkaChannel %s/%s", ns, name)
		}
		return ch, nil
	}
	ch, found := idx.ByHost(req.Host)
	if !found {
		return Channel{}, reject(http.StatusNotFound,
			"no KafkaChannel at host %q: use the channel's address (<name>-kn-channel.<namespace>.svc.cluster.local) or the path /<namespace>/<name>",
			req.Host)
	}
	return ch, nil
}

// decodeEvent reads a binary or structured mode CloudEvent (any spec version sdk-go knows,
// kept as sent) from a request whose body has been read already. Batched mode is refused:
// one request is one record, so a request is either fully accepted or not at all.
func decodeEvent(ctx context.Context, req *http.Request, body []byte) (*event.Event, *rejection) {
	ct := req.Header.Get("Content-Type")
	if mt, _, err := mime.ParseMediaType(ct); err == nil && mt == event.ApplicationCloudEventsBatchJSON {
		return nil, reject(http.StatusUnsupportedMediaType,
			"batched mode (%s) is not supported: send one event per request, in binary or structured mode",
			event.ApplicationCloudEventsBatchJSON)
	}
	// A shallow copy keeps the caller's request intact; the message reads the body we hold.
	r := *req
	r.Body = io.NopCloser(bytes.NewReader(body))
	msg := cehttp.NewMessageFromHttpRequest(&r)
	defer func() { _ = msg.Finish(nil) }()
	e, err := binding.ToEvent(ctx, msg)
	if err != nil {
		if errors.Is(err, binding.ErrUnknownEncoding) {
			if sv := req.Header.Get("Ce-Specversion"); sv != "" {
				return nil, reject(http.StatusBadRequest, "not a CloudEvent this receiver knows: specversion %q is neither 1.0 nor 0.3", sv)
			}
			return nil, reject(http.StatusBadRequest,
				"not a CloudEvent: binary mode needs a ce-specversion header, structured mode a Content-Type of application/cloudevents+json (got %q)", ct)
		}
		return nil, reject(http.StatusBadRequest, "not a valid CloudEvent: %v", err)
	}
	if err := e.Validate(); err != nil {
		return nil, reject(http.StatusBadRequest, "not a valid CloudEvent: %v", err)
	}
	// sdk-go lets some versions through with names the spec forbids (upper case in v0.3
	// structured mode); Kafka headers and HTTP headers would fold them, changing the event.
	for name := range e.Extensions() {
		if !validAttributeName(name) {
			return nil, reject(http.StatusBadRequest,
				"not a valid CloudEvent: extension attribute name %q must consist of lower-case letters and digits only", name)
		}
	}
	return e, nil
}

func validAttributeName(name string) bool {
	if name == "" {
		return false
	}
	for _, c := range name {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}
