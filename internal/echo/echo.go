// Package echo is the example worker of the design document: it "runs" a job
// by waiting its simulated work time and answers memory://echo/<job_id>.
package echo

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/cortex-os/core/pkg/worker"
)

// Kind is the echo worker's kind: topic job.echo, heartbeats on sys.heartbeat.echo.
const Kind = "echo"

// DefaultWorkTime is the design document's 100 to 500 ms.
var DefaultWorkTime = WorkTime{Min: 100 * time.Millisecond, Max: 500 * time.Millisecond}

// WorkTime is the simulated work time of a job: a duration picked uniformly
// in [Min, Max]. It is a pflag.Value: "0", "250ms" or "100ms-500ms".
type WorkTime struct{ Min, Max time.Duration }

// String implements pflag.Value.
func (w *WorkTime) String() string {
	if w.Min == w.Max {
		return w.Min.String()
	}
	return w.Min.String() + "-" + w.Max.String()
}

// Set implements pflag.Value.
func (w *WorkTime) Set(s string) error {
	lo, hi, isRange := strings.Cut(strings.TrimSpace(s), "-")
	minD, err := parseDuration(lo)
	if err != nil {
		return err
	}
	maxD := minD
	if isRange {
		if maxD, err = parseDuration(hi); err != nil {
			return err
		}
	}
	if minD < 0 || maxD < minD {
		return fmt.Errorf("work time %q: want D or MIN-MAX with 0 <= MIN <= MAX", s)
	}
	w.Min, w.Max = minD, maxD
	return nil
}

// Type implements pflag.Value.
func (w *WorkTime) Type() string { return "duration[-duration]" }

func parseDuration(s string) (time.Duration, error) {
	if s == "0" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("work time: %w", err)
	}
	return d, nil
}

// Pick returns one job's work time.
func (w WorkTime) Pick() time.Duration {
	if w.Max <= w.Min {
		return w.Min
	}
	return w.Min + rand.N(w.Max-w.Min+1)
}

// Echo runs one echo job: it waits a work time picked from work (returning
// ctx's error if ctx ends first) and returns the job's result pointer,
// memory://echo/<job_id>.
func Echo(ctx context.Context, work WorkTime, jobID string) (string, error) {
	if d := work.Pick(); d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	return "memory://echo/" + jobID, nil
}

// Handler returns the echo handler for a work time: Echo, in pkg/worker's
// terms.
func Handler(work WorkTime) worker.HandlerFunc {
	return func(ctx context.Context, job *worker.Job) (worker.Result, error) {
		ptr, err := Echo(ctx, work, job.ID())
		return worker.Result{Ptr: ptr}, err
	}
}
