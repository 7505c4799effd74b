package bench

import (
	"fmt"
	"strings"
)

// Row is one line of the results table.
type Row struct {
	ID       string
	What     string
	Value    string
	Baseline string
	Ratio    string
	Target   string
	// Pass is "pass", "MISS" or "error".
	Pass string
	// Note explains a miss or an error.
	Note string
	// Detail is what the run saw besides the figure (a writer's batching, the load average),
	// printed under the table: evidence for reading the row, not an error.
	Detail string
}

// Verdict spells a boolean as the table does.
func Verdict(ok bool) string {
	if ok {
		return "pass"
	}
	return "MISS"
}

// ErrorRow is a row whose measurement failed.
func ErrorRow(id, what, target string, err error) Row {
	return Row{ID: id, What: what, Value: "-", Baseline: "-", Ratio: "-", Target: target, Pass: "error", Note: err.Error()}
}

// Rate formats events per second.
func Rate(v float64) string { return fmt.Sprintf("%.0f/s", v) }

// Markdown renders rows as a Markdown table.
func Markdown(rows []Row) string {
	var b strings.Builder
	b.WriteString("| id | what | measured | baseline (same run) | ratio | target | result |\n|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s |\n", r.ID, esc(r.What), esc(r.Value), esc(r.Baseline), r.Ratio, esc(r.Target), r.Pass)
	}
	return b.String()
}

func esc(s string) string { return strings.ReplaceAll(s, "|", "\\|") }

// Text renders rows as an aligned plain-text table for the terminal.
func Text(rows []Row) string {
	head := []string{"id", "measured", "baseline (same run)", "ratio", "target", "result"}
	cells := [][]string{head}
	for _, r := range rows {
		cells = append(cells, []string{r.ID, r.Value, r.Baseline, r.Ratio, r.Target, r.Pass})
	}
	width := make([]int, len(head))
	for _, c := range cells {
		for i, s := range c {
			width[i] = max(width[i], len(s))
		}
	}
	var b strings.Builder
	for _, c := range cells {
		for i, s := range c {
			fmt.Fprintf(&b, "%-*s  ", width[i], s)
		}
		b.WriteString("\n")
	}
	for _, r := range rows {
		if r.Note != "" {
			fmt.Fprintf(&b, "%s: %s\n", r.ID, r.Note)
		}
		if r.Detail != "" {
			fmt.Fprintf(&b, "%s: %s\n", r.ID, r.Detail)
		}
	}
	return b.String()
}

// Harmonic is the limit of doing two jobs, one at rate a and one at rate b, on the same cores:
// each event costs 1/a + 1/b of them, so the pair runs at 1 / (1/a + 1/b), below the smaller
// rate. A rate of zero (not measured) gives zero, so no target can pass against it.
func Harmonic(a, b float64) float64 {
	if a <= 0 || b <= 0 {
		return 0
	}
	return 1 / (1/a + 1/b)
}
