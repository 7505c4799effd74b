package main

import (
	"strings"
	"testing"

	"github.com/kafkachannel/kafkachannel/bench"
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

// A partial run (-only P3 -update) replaces its own rows and notes in the table of its Kafka and
// leaves every other row, the other table and the other run's notes as they were.
func TestUpdateReplacesOnlyTheRunsRows(t *testing.T) {
	table := func(rows ...string) string {
		return "| id | what | measured | baseline (same run) | ratio | target | result |\n|---|---|---|---|---|---|---|\n" + strings.Join(rows, "\n") + "\n"
	}
	doc := "# Benchmarks\n\n- date: old\n\n" + table("| P2 | two | 1/s | b | 1 | t | pass |", "| P3 | old latency | 9 ms | b | 1 | t | MISS |", "| P4 | four | 4/s | b | 1 | t | pass |") +
		"\nWhat the runs saw besides the figures:\n\n- P3: old detail\n\n## Ordered throughput against partitions\n\nplot\n" +
		"\n## What each row measures\n\nold prose\n" +
		apacheHeading + apacheBegin + "\n- date: apache\n\n" + table("| P3 | apache latency | 50 ms | b | 1 | t | MISS |", "| P4 | apache four | 3/s | b | 1 | t | pass |") +
		"- P4: apache note\n" + apacheEnd + "\n"
	rows := []bench.Row{
		{ID: "P3", What: "new latency", Value: "2 ms", Pass: "pass", Detail: "new detail"},
		{ID: "P3 half", What: "new half", Value: "3 ms", Pass: "-"},
	}
	r := &runner{latency: []latencyRun{{rate: 1000}}}
	got, err := updateDocument(doc, rows, r, false, provenancePrefix+"P3, P3 half: now")
	if err != nil {
		t.Fatal(err)
	}
	kfake, apachePart, _ := strings.Cut(got, apacheHeading)
	for _, want := range []string{"| P2 | two |", "| P3 | new latency | 2 ms |", "| P3 half | new half |", "| P4 | four |", "- P3: new detail", provenancePrefix, latencyBegin, "## Ordered throughput", "## What each row measures"} {
		if !strings.Contains(kfake, want) {
			t.Errorf("the kfake part lacks %q:\n%s", want, kfake)
		}
	}
	for _, gone := range []string{"old latency", "old detail", "old prose"} {
		if strings.Contains(kfake, gone) {
			t.Errorf("the kfake part still has %q:\n%s", gone, kfake)
		}
	}
	if strings.Index(kfake, "| P3 half |") > strings.Index(kfake, "| P4 | four |") {
		t.Errorf("the new rows must take the old row's place:\n%s", kfake)
	}
	if !strings.Contains(apachePart, "apache latency") || strings.Contains(apachePart, "new latency") {
		t.Errorf("a kfake update must leave the Apache Kafka table alone:\n%s", apachePart)
	}
	got, err = updateDocument(got, rows, r, true, provenancePrefix+"P3, P3 half: apache now")
	if err != nil {
		t.Fatal(err)
	}
	_, apachePart, _ = strings.Cut(got, apacheHeading)
	for _, want := range []string{"| P3 | new latency |", "| P4 | apache four |", "- P4: apache note", "apache now", "benchmarks-latency-apache.png", apacheEnd} {
		if !strings.Contains(apachePart, want) {
			t.Errorf("the Apache Kafka part lacks %q:\n%s", want, apachePart)
		}
	}
	if strings.Contains(apachePart, "apache latency") || strings.Count(got, apacheEnd) != 1 || strings.Count(got, latencyBegin) != 2 {
		t.Errorf("the Apache Kafka update must replace its P3 row and keep one section with one latency block:\n%s", got)
	}
}

// A partial run replaces the provenance line of an earlier one only when it replaced all of
// that run's rows.
func TestUpdateKeepsTheProvenanceOfOtherRows(t *testing.T) {
	doc := "# Benchmarks\n\n| id | what |\n|---|---|\n| P5 | five |\n| S2 | two |\n\n" +
		provenancePrefix + "P5 (`go run ./cmd/bench -only P5 -update`): earlier\n" +
		"\n## What each row measures\n\nprose\n" + apacheHeading + apacheBegin + "\n" + apacheEnd + "\n"
	r := &runner{}
	got, err := updateDocument(doc, []bench.Row{{ID: "S2", What: "two again"}}, r, false, provenancePrefix+"S2 (`go run ./cmd/bench -only S2 -update`): now")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"P5 (`go run ./cmd/bench -only P5 -update`): earlier", "S2 (`go run ./cmd/bench -only S2 -update`): now"} {
		if !strings.Contains(got, want) {
			t.Errorf("lacks %q:\n%s", want, got)
		}
	}
	got, err = updateDocument(got, []bench.Row{{ID: "P5", What: "five again"}}, r, false, provenancePrefix+"P5 (`go run ./cmd/bench -only P5 -update`): later")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(got, "): earlier") || !strings.Contains(got, "): later") || !strings.Contains(got, "S2 (`go run") {
		t.Errorf("the P5 run must replace its own line and keep S2's:\n%s", got)
	}
}
