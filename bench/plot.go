package bench

import (
	"image"
	"image/color"
	"image/png"
	"io"
	"math"
	"strconv"
	"time"
)

// Point is one bar of the plot: the partitions of the topic, the measured throughput, and the
// bound partitions/latency of ordered delivery.
type Point struct {
	Partitions int
	Rate       float64
	Bound      float64
}

var (
	colBar   = color.RGBA{0x2f, 0x6f, 0xb3, 0xff}
	colBound = color.RGBA{0xd9, 0x53, 0x2b, 0xff}
	colAxis  = color.RGBA{0x30, 0x30, 0x30, 0xff}
	colGrid  = color.RGBA{0xe4, 0xe4, 0xe4, 0xff}
)

// Plot draws the throughput bars against partitions, the bound of each as a red tick, the
// value above each bar and the partition count under it. Axis titles are in the Markdown
// caption: a 3x5 digit font is all the drawing needs, and it keeps the plot free of modules.
func Plot(w io.Writer, pts []Point) error {
	const W, H, left, bottom, top = 640, 360, 50, 40, 20
	img := image.NewRGBA(image.Rect(0, 0, W, H))
	fill(img, img.Bounds(), color.White)
	maxV := 1.0
	for _, p := range pts {
		maxV = math.Max(maxV, math.Max(p.Rate, p.Bound))
	}
	maxV *= 1.15
	plotH := H - bottom - top
	y := func(v float64) int { return H - bottom - int(v/maxV*float64(plotH)) }
	// Grid lines every fifth of the range, labelled on the left.
	step := niceStep(maxV / 5)
	for v := step; v < maxV; v += step {
		fill(img, image.Rect(left, y(v), W-10, y(v)+1), colGrid)
		drawNumber(img, 4, y(v)-5, strconv.Itoa(int(v)), colAxis, 2)
	}
	fill(img, image.Rect(left, top, left+2, H-bottom), colAxis)
	fill(img, image.Rect(left, H-bottom, W-10, H-bottom+2), colAxis)
	if len(pts) == 0 {
		return png.Encode(w, img)
	}
	slot := (W - 10 - left) / len(pts)
	for i, p := range pts {
		x0 := left + i*slot + slot/4
		x1 := left + (i+1)*slot - slot/4
		fill(img, image.Rect(x0, y(p.Rate), x1, H-bottom), colBar)
		if p.Bound > 0 {
			fill(img, image.Rect(x0-6, y(p.Bound)-1, x1+6, y(p.Bound)+2), colBound)
		}
		label := strconv.Itoa(int(p.Rate))
		drawNumber(img, (x0+x1)/2-len(label)*4, y(p.Rate)-16, label, colAxis, 2)
		pl := strconv.Itoa(p.Partitions)
		drawNumber(img, (x0+x1)/2-len(pl)*4, H-bottom+10, pl, colAxis, 2)
	}
	return png.Encode(w, img)
}

func niceStep(v float64) float64 {
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

func fill(img *image.RGBA, r image.Rectangle, c color.Color) {
	r = r.Intersect(img.Bounds())
	for yy := r.Min.Y; yy < r.Max.Y; yy++ {
		for xx := r.Min.X; xx < r.Max.X; xx++ {
			img.Set(xx, yy, c)
		}
	}
}

// dot is the glyph of a decimal point.
var dot = [5]string{"...", "...", "...", "...", ".#."}

// digits are 3x5 glyphs, one row per string, for 0-9.
var digits = [10][5]string{
	{"###", "#.#", "#.#", "#.#", "###"},
	{".#.", "##.", ".#.", ".#.", "###"},
	{"###", "..#", "###", "#..", "###"},
	{"###", "..#", "###", "..#", "###"},
	{"#.#", "#.#", "###", "..#", "..#"},
	{"###", "#..", "###", "..#", "###"},
	{"###", "#..", "###", "#.#", "###"},
	{"###", "..#", "..#", "..#", "..#"},
	{"###", "#.#", "###", "#.#", "###"},
	{"###", "#.#", "###", "..#", "###"},
}

func drawNumber(img *image.RGBA, x, y int, s string, c color.Color, scale int) {
	for _, r := range s {
		var g [5]string
		switch {
		case r >= '0' && r <= '9':
			g = digits[r-'0']
		case r == '.':
			g = dot
		default:
			x += 4 * scale
			continue
		}
		for row, line := range g {
			for col, px := range line {
				if px == '#' {
					fill(img, image.Rect(x+col*scale, y+row*scale, x+(col+1)*scale, y+(row+1)*scale), c)
				}
			}
		}
		x += 4 * scale
	}
}

// LatencyPanel is one rate's latency over time: the system (receiver -> subscriber) and the
// direct baseline, each as buckets of its window.
type LatencyPanel struct {
	Rate           int
	System, Direct []Bucket
}

var (
	colSystem = color.RGBA{0x2f, 0x6f, 0xb3, 0xff}
	colDirect = color.RGBA{0xd9, 0x53, 0x2b, 0xff}
)

// PlotLatency draws each panel side by side: latency (ms, log scale, y) against time into the
// window (s, x); p99 as a thick line and p50 as a thin one, blue for the system and orange for
// the direct baseline; the panel's rate above it. A log scale keeps a flat 2 ms line and a
// backlog growing to seconds readable on one axis.
func PlotLatency(w io.Writer, panels []LatencyPanel) error {
	const H, bottom, top, left, panelW, gap = 360, 40, 30, 50, 420, 30
	W := left + len(panels)*(panelW+gap) + 10
	if len(panels) == 0 {
		W = left + panelW + 10
	}
	img := image.NewRGBA(image.Rect(0, 0, W, H))
	fill(img, img.Bounds(), color.White)
	// The y range covers every bucket, from a decade below the fastest p50 to the slowest max.
	lo, hi := math.Inf(1), 1.0
	for _, p := range panels {
		for _, s := range [][]Bucket{p.System, p.Direct} {
			for _, b := range s {
				lo = math.Min(lo, msOf(b.P50))
				hi = math.Max(hi, msOf(b.P99))
			}
		}
	}
	if math.IsInf(lo, 1) || lo <= 0 {
		lo = 1
	}
	lo = math.Pow(10, math.Floor(math.Log10(lo)))
	hi = math.Pow(10, math.Ceil(math.Log10(hi*1.05)))
	plotH := H - bottom - top
	y := func(v float64) int {
		v = math.Min(math.Max(v, lo), hi)
		return H - bottom - int(math.Log10(v/lo)/math.Log10(hi/lo)*float64(plotH))
	}
	for i, p := range panels {
		x0 := left + i*(panelW+gap)
		x1 := x0 + panelW
		// Grid lines at 1, 2 and 5 of every decade, labelled on the panel's left.
		for d := lo; d < hi*1.01; d *= 10 {
			for _, m := range []float64{1, 2, 5} {
				v := d * m
				if v > hi*1.01 {
					break
				}
				fill(img, image.Rect(x0, y(v), x1, y(v)+1), colGrid)
				if i == 0 {
					drawNumber(img, 2, y(v)-5, strconv.FormatFloat(v, 'f', -1, 64), colAxis, 2)
				}
			}
		}
		fill(img, image.Rect(x0, top, x0+2, H-bottom), colAxis)
		fill(img, image.Rect(x0, H-bottom, x1, H-bottom+2), colAxis)
		span := time.Second
		for _, s := range [][]Bucket{p.System, p.Direct} {
			if n := len(s); n > 0 {
				span = max(span, s[n-1].At+SeriesStep)
			}
		}
		x := func(at time.Duration) int { return x0 + int(float64(at)/float64(span)*float64(panelW)) }
		for sec := time.Duration(0); sec <= span; sec += time.Second {
			fill(img, image.Rect(x(sec), H-bottom, x(sec)+2, H-bottom+6), colAxis)
			drawNumber(img, x(sec)-3, H-bottom+12, strconv.Itoa(int(sec/time.Second)), colAxis, 2)
		}
		label := strconv.Itoa(p.Rate)
		drawNumber(img, (x0+x1)/2-len(label)*4, 6, label, colAxis, 2)
		for _, l := range []struct {
			s     []Bucket
			c     color.Color
			thick int
			pick  func(Bucket) time.Duration
		}{
			{p.Direct, colDirect, 1, func(b Bucket) time.Duration { return b.P50 }},
			{p.System, colSystem, 1, func(b Bucket) time.Duration { return b.P50 }},
			{p.Direct, colDirect, 3, func(b Bucket) time.Duration { return b.P99 }},
			{p.System, colSystem, 3, func(b Bucket) time.Duration { return b.P99 }},
		} {
			for j := 1; j < len(l.s); j++ {
				a, b := l.s[j-1], l.s[j]
				line(img, x(a.At+SeriesStep/2), y(msOf(l.pick(a))), x(b.At+SeriesStep/2), y(msOf(l.pick(b))), l.thick, l.c)
			}
		}
	}
	return png.Encode(w, img)
}

func msOf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// line draws a straight line of the given thickness from (x0, y0) to (x1, y1).
func line(img *image.RGBA, x0, y0, x1, y1, thick int, c color.Color) {
	steps := max(abs(x1-x0), abs(y1-y0), 1)
	for s := 0; s <= steps; s++ {
		xx := x0 + (x1-x0)*s/steps
		yy := y0 + (y1-y0)*s/steps
		fill(img, image.Rect(xx-thick/2, yy-thick/2, xx-thick/2+thick, yy-thick/2+thick), c)
	}
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}
