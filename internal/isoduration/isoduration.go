// Package isoduration parses the ISO-8601 durations Knative uses in delivery specs
// (backoffDelay, timeout, retryAfterMax) and KafkaChannel's retentionDuration.
package isoduration

import (
	"fmt"
	"regexp"
	"strconv"
	"time"
)

// The same grammar as the CRD's CEL rule; years and months are taken as 365 and 30 days,
// as Knative does, because a retention or a backoff has no calendar to anchor to.
var pattern = regexp.MustCompile(`^P(?:([0-9]+)Y)?(?:([0-9]+)M)?(?:([0-9]+)W)?(?:([0-9]+)D)?(?:T(?:([0-9]+)H)?(?:([0-9]+)M)?(?:([0-9]+(?:\.[0-9]+)?)S)?)?$`)

var units = []time.Duration{
	365 * 24 * time.Hour, 30 * 24 * time.Hour, 7 * 24 * time.Hour, 24 * time.Hour,
	time.Hour, time.Minute,
}

// Parse turns an ISO-8601 duration such as PT168H, P7D or PT0.2S into a time.Duration.
func Parse(s string) (time.Duration, error) {
	m := pattern.FindStringSubmatch(s)
	if m == nil || s == "P" || s[len(s)-1] == 'T' {
		return 0, fmt.Errorf("%q is not an ISO-8601 duration such as PT168H or PT0.2S", s)
	}
	var d time.Duration
	for i, unit := range units {
		if m[i+1] == "" {
			continue
		}
		n, err := strconv.ParseInt(m[i+1], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("duration %q: %w", s, err)
		}
		d += time.Duration(n) * unit
	}
	if m[7] != "" {
		secs, err := strconv.ParseFloat(m[7], 64)
		if err != nil {
			return 0, fmt.Errorf("duration %q: %w", s, err)
		}
		d += time.Duration(secs * float64(time.Second))
	}
	return d, nil
}

// Format renders d as an ISO-8601 duration in seconds, e.g. PT0.25S.
func Format(d time.Duration) string {
	return "PT" + strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + "S"
}
