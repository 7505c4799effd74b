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
}

// TestPauseToken: the token names the ResetOffset whatever its generation, which the API server
// bumps when it marks the object for deletion, and a token written by an earlier version (uid
// and generation) still counts as the ResetOffset's own.
func TestPauseToken(t *testing.T) {
	ro := &ResetOffset{}
	ro.UID, ro.Generation = "7d1a2d0e-0b8a-4bde-9c55-000000000001", 1
	token := PauseToken(ro)
	ro.Generation = 2 // deletionTimestamp set on an object with finalizers
	cases := []struct {
		name, token string
		held        bool
	}{
		{"set before the generation changed", token, true},
		{"set now", PauseToken(ro), true},
		{"earlier versions' form, first generation", "7d1a2d0e-0b8a-4bde-9c55-000000000001.1", true},
		{"earlier versions' form, other generation", "7d1a2d0e-0b8a-4bde-9c55-000000000001.7", true},
		{"another ResetOffset", "7d1a2d0e-0b8a-4bde-9c55-000000000002", false},
		{"another ResetOffset, earlier form", "7d1a2d0e-0b8a-4bde-9c55-000000000002.1", false},
		{"a prefix of the uid", "7d1a2d0e", false},
		{"empty", "", false},
	}
	for _, c := range cases {
		if got := HoldsPause(ro, c.token); got != c.held {
			t.Errorf("%s: HoldsPause(%q) = %v, want %v", c.name, c.token, got, c.held)
		}
	}
	if HoldsPause(&ResetOffset{}, "") {
		t.Error("a ResetOffset without uid holds the empty token")
	}
}
