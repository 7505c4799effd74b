package dispatcher

import (
	"context"
	"fmt"
	"net/http"
)

// TokenSource hands out service-account tokens for an audience (oidc.TokenProvider, which asks
// the TokenRequest API and caches).
type TokenSource interface {
	Token(ctx context.Context, namespace, serviceAccount, audience string) (string, error)
}

// secureRequest secures one delivery request: strict transport encryption (config-features,
// read per request, so a change applies to the next attempt without restarting any subscriber)
// refuses plain http, and a destination with an audience gets a token of the service account
// the subscriber names in auth.
//
// Whether to send a token follows the subscriber spec alone, as in Knative's own channel
// dispatchers: Knative's Subscription controller writes auth only while authentication-oidc is
// enabled and removes it when it is disabled. Requiring this dispatcher's copy of
// config-features to say enabled as well sent deliveries without a token for as long as that
// mounted copy lagged (kubelet refreshes it up to a minute or more later), while the
// Subscription already showed Ready (test/knative, docs/knative-compatibility.md).
func (s *subscription) secureRequest(ctx context.Context, dst destination, req *http.Request) error {
	f := s.d.cfg.Features.Get()
	if !f.HTTPAllowed() && req.URL.Scheme != "https" {
		return fmt.Errorf("not delivering to %s %s over plain http: transport-encryption is strict (give the %s an https address)", dst.kind, dst.uri, dst.kind)
	}
	if dst.audience == "" || dst.serviceAccount == "" {
		// Without an account in auth there is nobody to act as, and the destination decides
		// whether it accepts anonymous requests.
		return nil
	}
	var tok string
	err := fmt.Errorf("this dispatcher has no token source")
	if s.d.cfg.Tokens != nil {
		tok, err = s.d.cfg.Tokens.Token(ctx, s.d.cfg.ChannelNamespace, dst.serviceAccount, dst.audience)
	}
	if err != nil {
		if !f.OIDC {
			// OIDC is off as far as this dispatcher knows, so the destination does not require
			// a token: an account that cannot be had (not created, no right to it) must not
			// turn deliveries Knative would make into failures.
			s.log.V(1).Info("delivering without a token: authentication-oidc is disabled and none could be had",
				"destination", dst.kind, "serviceAccount", dst.serviceAccount, "error", err.Error())
			return nil
		}
		return fmt.Errorf("cannot authenticate to %s %s: %w", dst.kind, dst.uri, err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	return nil
}
