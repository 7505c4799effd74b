package bench

import (
	"image"
	"image/color"
	"image/png"
	"io"
	"math"
	"strconv"
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
		if r < '0' || r > '9' {
			x += 4 * scale
			continue
		}
		g := digits[r-'0']
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
