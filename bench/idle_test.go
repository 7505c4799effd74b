package bench

import (
	"os"
	"testing"
)

// S2 states an idle channel's cost as the anonymous memory of its process (smaps_rollup's
// Anonymous: heap and stacks, what each further process adds) and the PSS of the whole sample,
// not the RSS, whose file-backed part is the binary every process shares.
func TestIdleSampleReportsAnonymousPerProcessAndPSSOfTheSample(t *testing.T) {
	var r IdleResult
	for range 2 {
		if err := r.sample(os.Getpid(), "1", 1); err != nil {
			t.Skipf("no /proc here: %v", err)
		}
	}
	anon, err := procFileMB(os.Getpid(), "smaps_rollup", "Anonymous")
	if err != nil {
		t.Fatal(err)
	}
	r.average()
	if r.MaxAnonMB <= 0 || r.AnonMB <= 0 || r.MaxAnonMB < r.AnonMB {
		t.Errorf("anonymous per process: mean %.1f MB, max %.1f MB; want both > 0 and max >= mean", r.AnonMB, r.MaxAnonMB)
	}
	// The test's heap moves a little between reads; a different field would be far off.
	if r.MaxAnonMB > 2*anon || r.MaxAnonMB < anon/2 {
		t.Errorf("max anonymous %.1f MB, smaps_rollup says %.1f MB", r.MaxAnonMB, anon)
	}
	if r.TotalPSSMB < 1.5*r.PSSMB || r.TotalPSSMB > 2.5*r.PSSMB {
		t.Errorf("PSS over the sample of 2 = %.1f MB, want about twice the mean %.1f MB", r.TotalPSSMB, r.PSSMB)
	}
}
