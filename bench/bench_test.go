package bench

import (
	"bytes"
	"image/png"
	"strings"
	"testing"
	"time"
)

func TestPercentiles(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	l := percentiles(ds)
	if l.P50 != 51*time.Millisecond || l.P99 != 100*time.Millisecond || l.Max != 100*time.Millisecond || l.N != 100 {
		t.Errorf("percentiles = %+v", l)
	}
	if got := percentiles(nil); got != (Latencies{}) {
		t.Errorf("percentiles(nil) = %+v", got)
	}
}

func TestPlotIsAPNG(t *testing.T) {
	var buf bytes.Buffer
	if err := Plot(&buf, []Point{{Partitions: 1, Rate: 190, Bound: 200}, {Partitions: 8, Rate: 1400, Bound: 1600}}); err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(&buf)
	if err != nil {
		t.Fatalf("not a PNG: %v", err)
	}
	if b := img.Bounds(); b.Dx() != 640 || b.Dy() != 360 {
		t.Errorf("size %v", b)
	}
}

func TestMarkdownEscapesPipes(t *testing.T) {
	md := Markdown([]Row{{ID: "P1", What: "a|b", Value: "1/s", Pass: Verdict(true)}})
	if !strings.Contains(md, `a\|b`) || !strings.Contains(md, "| pass |") {
		t.Errorf("markdown:\n%s", md)
	}
}

// Two jobs sharing the same cores take the sum of their per-event times, so the limit of doing
// both is the harmonic combination of the two rates, below the smaller one.
func TestHarmonicLimit(t *testing.T) {
	for _, tc := range []struct {
		name       string
		a, b, want float64
	}{
		{"equal rates halve", 100, 100, 50},
		{"below the smaller rate", 300, 600, 200},
		{"a very fast job costs almost nothing", 1e9, 1000, 1000},
		{"an unmeasured rate gives no limit", 0, 1000, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Harmonic(tc.a, tc.b); got < tc.want*(1-1e-5) || got > tc.want*(1+1e-5) {
				t.Errorf("Harmonic(%g, %g) = %g, want %g", tc.a, tc.b, got, tc.want)
			}
		})
	}
}
