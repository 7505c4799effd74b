package v1alpha1

import (
	"testing"
	"time"
)

func TestParseTime(t *testing.T) {
	cases := []struct {
		in               string
		earliest, latest bool
		at               time.Time
		wantErr          bool
	}{
		{in: "earliest", earliest: true},
		{in: "latest", latest: true},
		{in: "2026-12-01T10:00:00Z", at: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)},
		{in: "2026-12-01T12:00:00.5+02:00", at: time.Date(2026, 12, 1, 10, 0, 0, 500_000_000, time.UTC)},
		// The schema's pattern lets these through; only parsing can tell.
		{in: "2026-02-30T10:00:00Z", wantErr: true},
		{in: "2026-12-01T25:00:00Z", wantErr: true},
	}
	for _, c := range cases {
		e, l, at, err := OffsetSpec{Time: c.in}.ParseTime()
		if (err != nil) != c.wantErr || e != c.earliest || l != c.latest || !at.Equal(c.at) {
			t.Errorf("ParseTime(%q) = %v %v %v %v", c.in, e, l, at, err)
		}
	}
}

func TestPauseAnnotationIsAValidKey(t *testing.T) {
	// A Knative Subscription uid is 36 characters; the name part of a key may have 63.
	key := PauseAnnotation("7d1a2d0e-0b8a-4bde-9c55-000000000001")
	if name := key[len("kafka.eventing.knative.dev/"):]; len(name) > 63 {
		t.Errorf("annotation name %q longer than 63 characters", name)
	}
	// The token tells generations apart, so a dispatcher log names the exact reset.
	ro := &ResetOffset{}
	ro.UID, ro.Generation = "abc", 2
	if got := PauseToken(ro); got != "abc.2" {
		t.Errorf("PauseToken = %q, want abc.2", got)
	}
}
