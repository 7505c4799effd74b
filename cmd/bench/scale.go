package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/kafkachannel/kafkachannel/bench"
)

// The control-plane section (`make bench-scale`) is its own run: `make bench` and the Apache
// Kafka run keep it as it is.
const (
	scaleBegin = "<!-- scale bench: begin -->"
	scaleEnd   = "<!-- scale bench: end -->"
)

const scaleHeading = `
## Control plane at scale

S1 and S3 of issue 16 on the local stack (kube-apiserver and etcd of envtest, kfake, the
manager binary) with the dispatcher pods faked (` + "`LOCALSTACK_FAKE_PODS=dispatcher`" + `): the
local node marks them Ready without running them, and writes the Deployments' status as for
real pods, so the manager's DispatcherReady is what it would be. "Ready" below is each
channel's Ready condition at its generation, written by the manager. Subscribers' readiness in
status.subscribers is written by running dispatchers only and is not measured here (S2 measures
real dispatcher processes). ` + "`make bench-scale`" + ` regenerates this section alone.

`

// scaleRun runs S1 and S3 and writes their section into doc (empty: stdout only).
func scaleRun(doc string, channels, changes int, idle, budget time.Duration, pprofAddr string) int {
	repo, err := os.Getwd()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	dir, err := os.MkdirTemp("", "bench-scale-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	start := time.Now()
	r, err := bench.Scale(context.Background(), bench.ScaleOptions{
		Dir: dir, BinDir: filepath.Join(repo, "bin"), Channels: channels, Subscribers: 2,
		Idle: idle, Changes: changes, Budget: budget, PprofAddr: pprofAddr,
	})
	if err != nil {
		// The stack's logs tell why: keep them.
		fmt.Fprintf(os.Stderr, "scale run: %v\nthe stack's directory (manager log in logs/) is kept: %s\n", err, dir)
		return 1
	}
	_ = os.RemoveAll(dir)
	if dir, err = os.MkdirTemp("", "bench-idle-"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	idleRes, err := bench.RealIdle(context.Background(), bench.RealIdleOptions{
		Dir: dir, BinDir: filepath.Join(repo, "bin"), Channels: 8, Partitions: 4,
		Settle: 5 * time.Second, Window: 10 * time.Second, Budget: budget,
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "idle dispatchers: %v\nthe stack's directory (logs/) is kept: %s\n", err, dir)
		return 1
	}
	_ = os.RemoveAll(dir)
	section := scaleSection(r, idleRes, time.Since(start))
	fmt.Print(section)
	if doc == "" {
		return 0
	}
	old, err := os.ReadFile(doc)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := os.WriteFile(doc, []byte(withScaleSection(string(old), section)), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("wrote", doc)
	return 0
}

func mb(v float64) string { return fmt.Sprintf("%.0f MB", v) }

func passIf(ok bool) string {
	if ok {
		return "pass"
	}
	return "miss"
}

// scaleSection is the table of a scale run, between the markers.
func scaleSection(r bench.ScaleResult, idle bench.IdleResult, took time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n- command: `make bench-scale` (`go run ./cmd/bench -scale`)\n- date: %s, commit %s, run took %s\n- machine: %s\n\n",
		scaleBegin, time.Now().UTC().Format("2006-01-02 15:04 MST"), gitCommit(), took.Round(time.Second), machine())
	perCh := float64(r.Reconciles) / float64(r.Channels)
	b.WriteString("| id | what | measured | target | |\n|---|---|---|---|---|\n")
	fmt.Fprintf(&b, "| S1 | %d channels x %d subscribers created at once: time until all Ready | %s | all Ready | pass |\n",
		r.Channels, r.Subscribers, r.ToReady.Round(100*time.Millisecond))
	fmt.Fprintf(&b, "| S1 rss | manager VmRSS when all Ready / after the idle window / peak (VmHWM) | %s / %s / %s | <= 200 MB | %s |\n",
		mb(r.RSSReady), mb(r.RSSIdle), mb(r.HWMMB), passIf(max(r.RSSReady, r.RSSIdle, r.HWMMB) <= 200))
	fmt.Fprintf(&b, "| S1 idle | reconciles per channel in %s idle (controller_runtime_reconcile_total, all controllers) | %.2f (%d) | 0 | %s |\n",
		r.Idle, perCh, r.Reconciles, passIf(r.Reconciles == 0))
	fmt.Fprintf(&b, "| S1 churn | resourceVersion changes in the same window: channels / dispatcher Deployments | %d / %d | 0 | %s |\n",
		r.ChannelWrites, r.DeploymentWrites, passIf(r.ChannelWrites == 0 && r.DeploymentWrites == 0))
	fmt.Fprintf(&b, "| S3 | at %d channels, numPartitions 1 -> 2: until the dispatcher Deployment's spec.replicas follows (%d changes, one at a time) | p50 %s ms, p99 %s ms, max %s ms | p99 reported | pass |\n",
		r.Channels, r.Latencies.N, ms(r.Latencies.P50), ms(r.Latencies.P99), ms(r.Latencies.Max))
	what := fmt.Sprintf("idle `dispatcher` binary in the local stack, real processes (%d channels x 1 subscriber x %d partitions)", idle.Channels, idle.Partitions)
	fmt.Fprintf(&b, "| S2 real rss | %s: VmRSS mean (max), anonymous / file-backed; PSS (the shared binary divided among the sample) | %.1f MB (%.1f), %.1f / %.1f MB; PSS %.1f MB | <= 25 MB (RSS) | %s |\n",
		what, idle.RSSMB, idle.MaxRSSMB, idle.AnonMB, idle.FileMB, idle.PSSMB, passIf(idle.MaxRSSMB <= 25))
	fmt.Fprintf(&b, "| S2 real proc | %s: goroutines and Kafka connections, mean (max) | %.0f (%.0f), %.1f (%.0f) | reported | - |\n",
		what, idle.Goroutines, idle.MaxGorout, idle.KafkaConns, idle.MaxConns)
	fmt.Fprintf(&b, "| S2 real fetch | %s: requests to the broker in %s idle | %.2f fetch/s per partition; %.1f requests/s per channel (%s; the receiver and manager included) | <= 1 fetch/s per partition | %s |\n",
		what, idle.Window, idle.FetchPerPartitionSec(), idle.PerChannelSec(), requestMix(idle), passIf(idle.FetchPerPartitionSec() <= 1))
	if len(r.ReconcilesByController) > 0 {
		var parts []string
		for k, v := range r.ReconcilesByController {
			parts = append(parts, fmt.Sprintf("%s %d", k, v))
		}
		sort.Strings(parts)
		fmt.Fprintf(&b, "\nIdle reconciles by controller: %s.\n", strings.Join(parts, ", "))
	}
	b.WriteString(scaleEnd + "\n")
	return b.String()
}

// keptScaleSection is the control-plane section of an existing document, with its heading,
// or the heading and an empty section.
func keptScaleSection(old string) string {
	i, j := strings.Index(old, scaleBegin), strings.Index(old, scaleEnd)
	if i < 0 || j < i {
		return scaleHeading + scaleBegin + "\nNot run yet: `make bench-scale`.\n" + scaleEnd + "\n"
	}
	return scaleHeading + old[i:j+len(scaleEnd)] + "\n"
}

// withScaleSection replaces the control-plane section of doc with section, appending it with
// its heading when the document has none yet.
func withScaleSection(doc, section string) string {
	i, j := strings.Index(doc, scaleBegin), strings.Index(doc, scaleEnd)
	if i < 0 || j < i {
		return strings.TrimRight(doc, "\n") + "\n" + scaleHeading + section
	}
	return doc[:i] + strings.TrimSuffix(section, "\n") + doc[j+len(scaleEnd):]
}
