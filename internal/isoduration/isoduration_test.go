package isoduration

import (
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		bad  bool
	}{
		{in: "PT168H", want: 168 * time.Hour},
		{in: "P7D", want: 7 * 24 * time.Hour},
		{in: "PT0.2S", want: 200 * time.Millisecond},
		{in: "PT1M30S", want: 90 * time.Second},
		{in: "P1W", want: 7 * 24 * time.Hour},
		{in: "P1DT1H", want: 25 * time.Hour},
		{in: "P", bad: true},
		{in: "PT", bad: true},
		{in: "P1DT", bad: true},
		{in: "1h", bad: true},
		{in: "PT-1S", bad: true},
		{in: "", bad: true},
	}
	for _, tt := range tests {
		got, err := Parse(tt.in)
		if tt.bad {
			if err == nil {
				t.Errorf("Parse(%q) = %v, want an error", tt.in, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("Parse(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
}

func TestFormatRoundTrips(t *testing.T) {
	for _, d := range []time.Duration{250 * time.Millisecond, 3 * time.Second, 168 * time.Hour} {
		got, err := Parse(Format(d))
		if err != nil || got != d {
			t.Errorf("Parse(Format(%v)) = %v, %v", d, got, err)
		}
	}
}
