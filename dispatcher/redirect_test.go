package dispatcher

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/kafkachannel/kafkachannel/api/v1beta1"
	"github.com/kafkachannel/kafkachannel/environments/kafkatest"
	"github.com/kafkachannel/kafkachannel/environments/poll"
)

// redirector answers every request to / with a redirect to /landing, a login page that
// answers 200 to anything: what a destination behind an SSO proxy looks like. A client that
// follows the redirect turns the POST into a GET without the event (301, 302, 303) or posts
// the event to a page that is no sink (307, 308), and reads 200 either way.
type redirector struct {
	*httptest.Server
	posts  atomic.Int32 // requests to /
	landed atomic.Int32 // requests that followed the redirect
}

func newRedirector(t *testing.T, code int) *redirector {
	r := &redirector{}
	mux := http.NewServeMux()
	mux.HandleFunc("/landing", func(w http.ResponseWriter, req *http.Request) {
		_, _ = io.Copy(io.Discard, req.Body)
		r.landed.Add(1)
		w.Header().Set("Content-Type", "text/html")
		_, _ = w.Write([]byte("<html>please log in</html>"))
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, req *http.Request) {
		_, _ = io.Copy(io.Discard, req.Body)
		r.posts.Add(1)
		http.Redirect(w, req, "/landing", code)
	})
	r.Server = httptest.NewServer(mux)
	t.Cleanup(r.Close)
	return r
}

// writeReply answers a delivery of ev with a reply event (binary mode, 200).
func writeReply(ev *event.Event, w http.ResponseWriter) bool {
	reply := event.New()
	reply.SetID("reply-" + ev.ID())
	reply.SetSource("/subscriber")
	reply.SetType("test.reply")
	_ = reply.SetData("text/plain", []byte("re: "+ev.ID()))
	req := &http.Request{Header: http.Header{}}
	_ = cehttp.WriteRequest(binding.WithForceBinary(context.Background()), binding.ToMessage(&reply), req)
	for k, v := range req.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(reply.Data())
	return true
}

// A 3xx from any destination is a failed delivery, never followed: following it made a POST a
// bodiless GET whose 200 committed the offset with the event delivered nowhere. The Knative
// data-plane contract lists 3xx as an error that is not retried, so the event goes to the
// dead-letter sink at once, with the 3xx in knativeerrorcode and the destination that answered
// it in knativeerrordest; a dead-letter sink that redirects loses the event, counted as lost.
func TestRedirectIsAFailedDeliveryNeverFollowed(t *testing.T) {
	k := kafkatest.Start(t)
	cases := []struct {
		name string
		dest string // which destination redirects
		code int
	}{
		{"subscriber 301", destSubscriber, http.StatusMovedPermanently},
		{"subscriber 302", destSubscriber, http.StatusFound},
		{"subscriber 303", destSubscriber, http.StatusSeeOther},
		{"subscriber 307", destSubscriber, http.StatusTemporaryRedirect},
		{"subscriber 308", destSubscriber, http.StatusPermanentRedirect},
		{"reply 302", destReply, http.StatusFound},
		{"dead-letter sink 302", destDeadLetter, http.StatusFound},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, k, 1)
			redir := newRedirector(t, tc.code)
			dls := newSink(t, nil)
			sp := sub("uid", 1, redir.URL)
			dlsURL, wantDest := dls.URL, redir.URL
			switch tc.dest {
			case destReply:
				subscriber := newSink(t, writeReply)
				sp = sub("uid", 1, subscriber.URL)
				sp.ReplyURI = &redir.URL
			case destDeadLetter:
				failing := newSink(t, func(_ *event.Event, w http.ResponseWriter) bool {
					w.WriteHeader(http.StatusInternalServerError)
					return false
				})
				sp = sub("uid", 1, failing.URL)
				dlsURL = redir.URL
			}
			sp.Delivery = &v1beta1.DeliverySpec{Retry: ptr(int32(2)), BackoffDelay: ptr("PT0.01S"),
				DeadLetterSink: &v1beta1.Destination{URI: &dlsURL}}
			rd := e.start(nil)
			rd.Update(Channel{Subscribers: []v1beta1.SubscriberSpec{sp}})
			rd.waitReady(t, sp)
			ids := e.produce(0, 1)
			poll.Eventually(t, 30*time.Second, "the record handled and committed", func() error {
				if c := e.committed("uid"); c[0] != 1 {
					return fmt.Errorf("committed %v", c)
				}
				return nil
			})
			if n := redir.landed.Load(); n != 0 {
				t.Errorf("the redirect was followed %d times", n)
			}
			if n := redir.posts.Load(); n != 1 {
				t.Errorf("the redirecting %s got %d requests, want 1 (a 3xx is not retried)", tc.dest, n)
			}
			group := rd.groupID("uid")
			if tc.dest == destDeadLetter {
				if v, _ := metricValue(t, rd, MetricLost, map[string]string{"consumer": group}); v != 1 {
					t.Errorf("%s = %v, want 1: a dead-letter sink that redirects did not take the event", MetricLost, v)
				}
				return
			}
			dead := dls.received()
			if len(dead) != 1 {
				t.Fatalf("dead-letter sink got %d events, want 1", len(dead))
			}
			ext := dead[0].Extensions()
			if dead[0].ID() != ids[0] || fmt.Sprint(ext[ExtErrorCode]) != fmt.Sprint(tc.code) || fmt.Sprint(ext[ExtErrorDest]) != wantDest {
				t.Errorf("dead-lettered %s with %s=%v %s=%v; want %s, %d, %s",
					dead[0].ID(), ExtErrorCode, ext[ExtErrorCode], ExtErrorDest, ext[ExtErrorDest], ids[0], tc.code, wantDest)
			}
			data, err := base64.StdEncoding.DecodeString(fmt.Sprint(ext[ExtErrorData]))
			if err != nil || !strings.Contains(string(data), "/landing") || !strings.Contains(string(data), "not followed") {
				t.Errorf("%s = %q (%v), want it to name the redirect's target and say it was not followed", ExtErrorData, data, err)
			}
			if v, _ := metricValue(t, rd, MetricDeliveries, map[string]string{"consumer": group, "destination": tc.dest, "code_class": "3xx"}); v != 1 {
				t.Errorf("%s{destination=%s,code_class=3xx} = %v, want 1", MetricDeliveries, tc.dest, v)
			}
		})
	}
}

// When the reply cannot be delivered, the dead-letter sink gets the original event (what a
// replay of dead letters needs), with the reply destination as knativeerrordest, as Knative's
// own dispatchers do; the reply is not sent there.
func TestFailedReplyDeadLettersTheOriginalEvent(t *testing.T) {
	k := kafkatest.Start(t)
	e := newEnv(t, k, 1)
	subscriber := newSink(t, writeReply)
	replies := newSink(t, func(_ *event.Event, w http.ResponseWriter) bool {
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = w.Write([]byte("reply sink down"))
		return false
	})
	dls := newSink(t, nil)
	sp := sub("uid", 1, subscriber.URL)
	sp.ReplyURI = &replies.URL
	sp.Delivery = &v1beta1.DeliverySpec{Retry: ptr(int32(1)), BackoffDelay: ptr("PT0.01S"),
		DeadLetterSink: &v1beta1.Destination{URI: &dls.URL}}
	rd := e.start(nil)
	rd.Update(Channel{Subscribers: []v1beta1.SubscriberSpec{sp}})
	rd.waitReady(t, sp)
	ids := e.produce(0, 1)
	poll.Eventually(t, 30*time.Second, "the event dead-lettered", func() error {
		if n := len(dls.received()); n != 1 {
			return fmt.Errorf("dead-letter sink got %d events", n)
		}
		return nil
	})
	d := dls.received()[0]
	ext := d.Extensions()
	if d.ID() != ids[0] || d.Type() != "test.event" {
		t.Errorf("dead-lettered %s (type %s), want the original %s (test.event)", d.ID(), d.Type(), ids[0])
	}
	if fmt.Sprint(ext[ExtErrorDest]) != replies.URL || fmt.Sprint(ext[ExtErrorCode]) != "500" {
		t.Errorf("%s=%v %s=%v, want %s and 500", ExtErrorDest, ext[ExtErrorDest], ExtErrorCode, ext[ExtErrorCode], replies.URL)
	}
	if n := replies.attemptCount(); n != 2 {
		t.Errorf("reply attempts = %d, want 2 (one retry)", n)
	}
	if v, _ := metricValue(t, rd, MetricDeadLettered, map[string]string{"consumer": rd.groupID("uid"), "reason": "reply_failed"}); v != 1 {
		t.Errorf("%s{reason=reply_failed} = %v, want 1", MetricDeadLettered, v)
	}
}
