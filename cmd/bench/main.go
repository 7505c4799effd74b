// Command bench measures the data plane against baselines from the same run and writes the
// table to docs/benchmarks.md and a plot to docs/benchmarks.png (`make bench`).
//
// The embedded Kafka (kfake) is used unless KAFKA_BOOTSTRAP_SERVERS names a cluster.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/kafkachannel/kafkachannel/bench"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == bench.ChildCommand {
		if err := bench.ChildMain(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "dispatcher process:", err)
			os.Exit(1)
		}
		return
	}
	os.Exit(run())
}

// run is main without os.Exit, so deferred work (the CPU profile, Kafka) finishes.
func run() int {
	events := flag.Int("events", 20000, "records per throughput run (P1, P4)")
	doc := flag.String("doc", "docs/benchmarks.md", "Markdown file to write; empty: none")
	plot := flag.String("plot", "docs/benchmarks.png", "PNG plot to write; empty: none")
	latencyPlot := flag.String("latency-plot", "docs/benchmarks-latency.png", "PNG plot of P3's latency over time; empty: none (with -apache: docs/benchmarks-latency-apache.png)")
	update := flag.Bool("update", false, "with -only: put the run's rows into the published table of -doc (the Apache Kafka section with -apache), keeping every other row, and write the latency plot when P3 ran")
	only := flag.String("only", "", "comma-separated figures to run (P1, P2, P2K, P3, P4, P4B, P5, P5K, P6, P8, S2; P7 comes with P1 and P2); empty: all")
	short := flag.Bool("short", false, "small event counts and processes, table on stdout only: proves the tool runs (make bench-short), figures not comparable")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the whole run (the bench process, not P5's child) here")
	childProfiles := flag.String("child-profiles", "", "directory where P5's dispatcher processes write memstats, heap and goroutine profiles when measured (idle; short of deliveries; not Ready) and a CPU profile when the load runs long")
	apache := flag.Bool("apache", false, "the run is on real Apache Kafka (KAFKA_BOOTSTRAP_SERVERS, KAFKA_VERSION; `make bench KAFKA=apache`): write only its table into the document's Apache Kafka section, no plot")
	scale := flag.Bool("scale", false, "instead of the data-plane figures, the control plane at scale (S1, S3) on the local stack with faked dispatcher pods; needs `make build` (`make bench-scale`): writes only its own section of the document")
	channels := flag.Int("channels", 300, "channels for -scale")
	changes := flag.Int("changes", 100, "spec changes timed for -scale (S3)")
	idle := flag.Duration("idle", time.Minute, "idle window of -scale in which reconciles and status writes are counted")
	budget := flag.Duration("budget", 10*time.Minute, "how long -scale waits for all channels Ready (and for each change)")
	pprofAddr := flag.String("manager-pprof", "", "with -scale: the manager serves /debug/pprof here (host:port) during the run")
	flag.Parse()
	if *scale {
		return scaleRun(*doc, *channels, *changes, *idle, *budget, *pprofAddr)
	}
	if *apache {
		if os.Getenv("KAFKA_BOOTSTRAP_SERVERS") == "" {
			fmt.Fprintln(os.Stderr, "-apache needs the brokers in KAFKA_BOOTSTRAP_SERVERS: run `make bench KAFKA=apache`")
			return 2
		}
		*plot = ""
		if *latencyPlot == "docs/benchmarks-latency.png" {
			*latencyPlot = "docs/benchmarks-latency-apache.png"
		}
	}
	if *update && *only == "" {
		fmt.Fprintln(os.Stderr, "-update needs -only: a full run rewrites the document anyway")
		return 2
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "cpu profile:", err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}

	env, err := bench.NewEnv()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer env.Close()
	env.ChildProfiles = *childProfiles
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "finding the bench binary for P5:", err)
		return 1
	}
	start, startLoad := time.Now(), loadAvg()
	r := &runner{env: env, sizes: fullSizes(*events), self: self}
	if *apache {
		// Kafka's own perf tools, from the jars of the broker's version, on the same broker.
		version := os.Getenv("KAFKA_VERSION")
		if version == "" {
			version = "4.4.0"
		}
		r.anchors = &bench.Anchors{Version: version, Brokers: env.Brokers}
	}
	if *short {
		r.sizes = shortSizes()
		// A short run proves the tool runs; on a busy machine it may be slow, not broken.
		env.Patience = 5
		// Short runs are too small to publish.
		*doc, *plot, *latencyPlot, *update = "", "", "", false
	}
	if *only != "" {
		r.only = map[string]bool{}
		for _, id := range strings.Split(*only, ",") {
			r.only[strings.ToUpper(strings.TrimSpace(id))] = true
		}
		// A partial run must not overwrite the published table; with -update it replaces its
		// own rows only.
		*plot = ""
		if !*update {
			*doc, *latencyPlot = "", ""
		}
	}
	rows := r.all()
	fmt.Print(bench.Text(rows))
	fmt.Printf("total %s\n", time.Since(start).Round(time.Second))
	if *plot != "" {
		var buf bytes.Buffer
		if err := bench.Plot(&buf, r.points); err != nil {
			fmt.Fprintln(os.Stderr, "drawing the plot:", err)
			return 1
		}
		if err := os.WriteFile(*plot, buf.Bytes(), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	if *latencyPlot != "" && len(r.latency) > 0 {
		panels := make([]bench.LatencyPanel, 0, len(r.latency))
		for _, l := range r.latency {
			panels = append(panels, bench.LatencyPanel{Rate: l.rate, System: l.system.Series, Direct: l.direct.Series})
		}
		var buf bytes.Buffer
		if err := bench.PlotLatency(&buf, panels); err != nil {
			fmt.Fprintln(os.Stderr, "drawing the latency plot:", err)
			return 1
		}
		if err := os.WriteFile(*latencyPlot, buf.Bytes(), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	if *doc != "" {
		old, err := os.ReadFile(*doc)
		if err != nil && !os.IsNotExist(err) {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		var md string
		if *update {
			ids := make([]string, 0, len(rows))
			for _, row := range rows {
				ids = append(ids, row.ID)
			}
			prov := fmt.Sprintf("%s%s (`go run ./cmd/bench -only %s -update%s`): %s, commit %s, took %s, load average at the start %s, machine: %s", provenancePrefix,
				strings.Join(ids, ", "), *only, map[bool]string{true: " -apache"}[*apache], time.Now().UTC().Format("2006-01-02 15:04 MST"), gitCommit(), time.Since(start).Round(time.Second), startLoad, machine())
			md, err = updateDocument(string(old), rows, r, *apache, prov)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
		} else if *apache {
			md, err = withApacheSection(string(old), apacheSection(rows, r, time.Since(start)))
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
		} else {
			// The Apache Kafka and control-plane tables are other runs': keep them.
			md = document(rows, r, env.External, time.Since(start)) + keptApacheSection(string(old)) + keptScaleSection(string(old))
		}
		if err := os.WriteFile(*doc, []byte(md), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Println("wrote", *doc)
	}
	for _, row := range rows {
		if row.Pass == "error" {
			return 1
		}
	}
	return 0
}

// machine describes where the figures come from.
func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	load := ""
	if l := loadAvg(); l != "" {
		load = ", load average at the end " + l
	}
	return fmt.Sprintf("nproc %d (%s), %s %s/%s%s", runtime.NumCPU(), model, runtime.Version(), runtime.GOOS, runtime.GOARCH, load)
}

func gitCommit() string {
	out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}

// loadAvg is the 1, 5 and 15 minute load averages, empty where /proc has none: every latency
// figure on a shared machine is reported with the load it was taken under.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}
