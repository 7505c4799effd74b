package main

import (
	"strings"
	"testing"
)

// The kfake run rewrites the document but keeps the Apache Kafka table; the Apache Kafka run
// replaces only that table.
func TestApacheSectionSurvivesBothRuns(t *testing.T) {
	fresh := keptApacheSection("# Benchmarks\n")
	if !strings.Contains(fresh, "Not run yet") || !strings.Contains(fresh, apacheBegin) || !strings.Contains(fresh, apacheEnd) {
		t.Fatalf("a document without the section gets an empty one, got:\n%s", fresh)
	}
	doc := "# Benchmarks\n\nkfake table\n" + fresh
	section := apacheBegin + "\n| P1 | real |\n" + apacheEnd + "\n"
	withApache, err := withApacheSection(doc, section)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(withApache, "kfake table") || !strings.Contains(withApache, "| P1 | real |") || strings.Contains(withApache, "Not run yet") {
		t.Fatalf("the Apache Kafka run must replace only its section, got:\n%s", withApache)
	}
	rewritten := "# Benchmarks\n\nnew kfake table\n" + keptApacheSection(withApache)
	if !strings.Contains(rewritten, "| P1 | real |") || strings.Count(rewritten, "## On Apache Kafka") != 1 {
		t.Fatalf("the kfake run must keep the Apache Kafka table once, got:\n%s", rewritten)
	}
	if _, err := withApacheSection("# Benchmarks\n", section); err == nil {
		t.Error("a document without the section must be an error, not silently lose the table")
	}
}
