package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Latency is a latency distribution, in microseconds.
type Latency struct {
	P50, P90, P99, P999, Max float64
}

func latencyOf(h *hdrhistogram.Histogram) Latency {
	if h == nil || h.TotalCount() == 0 {
		return Latency{}
	}
	us := func(ns int64) float64 { return math.Round(float64(ns)/100) / 10 }
	return Latency{
		P50:  us(h.ValueAtQuantile(50)),
		P90:  us(h.ValueAtQuantile(90)),
		P99:  us(h.ValueAtQuantile(99)),
		P999: us(h.ValueAtQuantile(99.9)),
		Max:  us(h.Max()),
	}
}

// PhaseResult is what one path (floor or system) measured.
type PhaseResult struct {
	Jobs int
	// Rounds the jobs were measured in, alternating with the other path's;
	// Seconds is the sum of the rounds' times (first send to last result).
	Rounds     int
	Seconds    float64
	JobsPerSec float64
	// Result is submit -> result; Dispatch is submit -> the worker has the job.
	Result, Dispatch Latency
	// SendLag is how late the load generator sent jobs after their due
	// time (--rate only): it is part of the latencies above.
	SendLag Latency
	// CPUSeconds is the whole process's CPU time (user + system) during the
	// measured jobs; CPUPer1kJobs is the same per 1,000 jobs.
	CPUSeconds, CPUPer1kJobs float64
	// CPUCores is the bench's CPU time over the wall time of the measured
	// jobs; OtherCores is the CPU the rest of the machine used meanwhile
	// (from /proc/stat; -1 where unknown). On a 2-core box, other load above
	// a few tenths of a core disturbs the figures.
	CPUCores, OtherCores float64
	// RSSMB is the process's peak resident set so far, in MiB.
	RSSMB float64
	// AllocsPerJob is the process's heap allocations per job; GCs the
	// garbage collections during the measured jobs.
	AllocsPerJob float64
	GCs          uint64
	// Failed results, results without a recorded dispatch, duplicate results,
	// results of other clients' jobs, and bus errors (should all be 0).
	Failed, Undispatched int64
	Duplicates, Foreign  uint64
	// Resubmitted: answered submissions answered retryable and published
	// again plainly; Refused: answered submissions refused (SubmitMode
	// SubmitAnswered only; both should be 0).
	Resubmitted, Refused uint64
	BusErrors            uint64
}

// Report is a complete run: the floor and the system, side by side.
type Report struct {
	Opts     Options
	Nats     string // "embedded" or "external <url>"
	CPUScope string
	Floor    *PhaseResult
	System   *PhaseResult
	Go       string
	Commit   string
	Date     time.Time
}

func newReport(o Options, nats string, floor, system *PhaseResult) *Report {
	scope := "the whole bench process: embedded NATS server, load generator and result collector, relay (floor) or scheduler (system), and workers"
	if nats != "embedded" {
		scope = "the whole bench process: load generator and result collector, relay (floor) or scheduler (system), and workers; not the external NATS server"
	}
	return &Report{
		Opts: o, Nats: nats, CPUScope: scope,
		Floor: floor, System: system,
		Go: goVersion(), Commit: o.Commit, Date: time.Now().UTC(),
	}
}

// ratio is a/b, 0 when b is 0, rounded to 3 decimals.
func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return math.Round(a/b*1000) / 1000
}

func round1(v float64) float64 { return math.Round(v*10) / 10 }

func round2(v float64) float64 { return math.Round(v*100) / 100 }

func round4(v float64) float64 { return math.Round(v*1e4) / 1e4 }

// JSON is the flat object `cortex bench --json` prints.
func (r *Report) JSON() map[string]any {
	f, s := r.Floor, r.System
	m := map[string]any{
		"jobs":            r.Opts.Jobs,
		"window":          r.Opts.Window,
		"rate":            r.Opts.Rate,
		"workers":         r.Opts.Workers,
		"payload_bytes":   r.Opts.Payload,
		"payload_field":   PayloadField,
		"warmup":          r.Opts.Warmup,
		"rounds":          r.Opts.Rounds,
		"worker_mode":     workerMode(r.Opts),
		"store":           r.Opts.Store,
		"submit":          SubmitMode(r.Opts),
		"worker_capacity": workerCapacity(r.Opts),
		"worker_direct":   true,
		"placement":       r.Opts.Strategy,
		"policy":          policyDesc(r.Opts),
		"nats":            r.Nats,

		"jobs_per_sec":       round1(s.JobsPerSec),
		"floor_jobs_per_sec": round1(f.JobsPerSec),
		"ratio":              ratio(s.JobsPerSec, f.JobsPerSec),
		"p50_ratio":          ratio(s.Result.P50, f.Result.P50),

		"cpu_s_per_1k_jobs":               round4(s.CPUPer1kJobs),
		"floor_cpu_s_per_1k_jobs":         round4(f.CPUPer1kJobs),
		"control_plane_cpu_s_per_1k_jobs": round4(s.CPUPer1kJobs - f.CPUPer1kJobs),
		"cpu_scope":                       r.CPUScope,
		"cpu_cores":                       round2(s.CPUCores),
		"floor_cpu_cores":                 round2(f.CPUCores),
		"other_load_cores":                round2(s.OtherCores),
		"floor_other_load_cores":          round2(f.OtherCores),
		"rss_mb":                          round1(s.RSSMB),
		"floor_rss_mb":                    round1(f.RSSMB),
		"allocs_per_job":                  round1(s.AllocsPerJob),
		"floor_allocs_per_job":            round1(f.AllocsPerJob),
		"gcs":                             s.GCs,
		"floor_gcs":                       f.GCs,

		"failed":           s.Failed,
		"floor_failed":     f.Failed,
		"duplicates":       s.Duplicates,
		"resubmitted":      s.Resubmitted,
		"refused":          s.Refused,
		"floor_duplicates": f.Duplicates,
		"bus_errors":       s.BusErrors,
		"floor_bus_errors": f.BusErrors,

		"go_version": r.Go,
		"goos":       runtime.GOOS,
		"goarch":     runtime.GOARCH,
		"num_cpu":    runtime.NumCPU(),
		"gomaxprocs": runtime.GOMAXPROCS(0),
		"date":       r.Date.Format(time.RFC3339),
	}
	if r.Commit != "" {
		m["commit"] = r.Commit
	}
	put := func(prefix string, l Latency) {
		m[prefix+"p50_us"] = l.P50
		m[prefix+"p90_us"] = l.P90
		m[prefix+"p99_us"] = l.P99
		m[prefix+"p999_us"] = l.P999
		m[prefix+"max_us"] = l.Max
	}
	put("", s.Result)
	put("dispatch_", s.Dispatch)
	put("floor_", f.Result)
	put("floor_dispatch_", f.Dispatch)
	if r.Opts.Rate > 0 {
		put("send_lag_", s.SendLag)
		put("floor_send_lag_", f.SendLag)
	}
	return m
}

// workerMode says how the system's echo workers run their handler.
func workerMode(o Options) string {
	if o.WorkerRunners {
		return "runners"
	}
	return "inline"
}

// WriteJSON writes the report as one JSON object and a newline.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(r.JSON())
}

// disturbing is the other load, in cores, above which the report warns.
const disturbing = 0.25

// WriteTable writes the report for people: the floor and the system side by
// side, with their ratio.
func (r *Report) WriteTable(w io.Writer) error {
	o, f, s := r.Opts, r.Floor, r.System
	load := fmt.Sprintf("window %d", o.Window)
	if o.Rate > 0 {
		load = fmt.Sprintf("rate %g jobs/s (open loop, latency from the intended send time), window cap %d", o.Rate, o.Window)
	}
	fmt.Fprintf(w, "cortex bench: %d jobs (+%d warm-up) in %d alternating round(s), %s, %d echo worker(s) (%s), payload %d B in %s, store %s, submit: %s, NATS %s\n",
		o.Jobs, o.Warmup, o.Rounds, load, o.Workers, workerMode(o), o.Payload, PayloadField, o.Store, SubmitMode(o), r.Nats)
	fmt.Fprintf(w, "system: placement %s, policy: %s, workers: capacity %d, direct\n", o.Strategy, policyDesc(o), workerCapacity(o))
	commit := r.Commit
	if commit == "" {
		commit = "unknown"
	}
	fmt.Fprintf(w, "%s, commit %s, %s/%s, %d CPUs, %s\n\n", r.Go, commit, runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), r.Date.Format(time.RFC3339))

	rows := [][4]string{{"", "floor (core NATS)", "system", "system/floor"}}
	row := func(name string, fv, sv float64, format string) {
		rows = append(rows, [4]string{name, fmt.Sprintf(format, fv), fmt.Sprintf(format, sv), fmt.Sprintf("%.2fx", ratio(sv, fv))})
	}
	row("jobs/s", f.JobsPerSec, s.JobsPerSec, "%.0f")
	lat := func(kind string, fl, sl Latency) {
		row(kind+" p50 (µs)", fl.P50, sl.P50, "%.1f")
		row("  p90", fl.P90, sl.P90, "%.1f")
		row("  p99", fl.P99, sl.P99, "%.1f")
		row("  p99.9", fl.P999, sl.P999, "%.1f")
		row("  max", fl.Max, sl.Max, "%.1f")
	}
	lat("submit->result", f.Result, s.Result)
	lat("submit->dispatch", f.Dispatch, s.Dispatch)
	if o.Rate > 0 {
		row("send lag p50 (µs)", f.SendLag.P50, s.SendLag.P50, "%.1f")
		row("  p99", f.SendLag.P99, s.SendLag.P99, "%.1f")
		row("  max", f.SendLag.Max, s.SendLag.Max, "%.1f")
	}
	row("CPU s / 1,000 jobs", f.CPUPer1kJobs, s.CPUPer1kJobs, "%.4f")
	row("CPU used (cores)", f.CPUCores, s.CPUCores, "%.2f")
	if f.OtherCores >= 0 && s.OtherCores >= 0 {
		row("other processes (cores)", f.OtherCores, s.OtherCores, "%.2f")
	}
	row("heap allocations / job", f.AllocsPerJob, s.AllocsPerJob, "%.1f")
	row("peak RSS (MiB)", f.RSSMB, s.RSSMB, "%.1f")
	var width [4]int
	for _, r := range rows {
		for i, c := range r {
			width[i] = max(width[i], utf8.RuneCountInString(c))
		}
	}
	for _, r := range rows {
		fmt.Fprintf(w, "%-*s  %*s  %*s  %*s\n", width[0], r[0], width[1], r[1], width[2], r[2], width[3], r[3])
	}
	fmt.Fprintf(w, "\nCPU covers %s.\n", r.CPUScope)
	fmt.Fprintf(w, "Control plane (system - floor): %.4f CPU s per 1,000 jobs.\n", s.CPUPer1kJobs-f.CPUPer1kJobs)
	fmt.Fprintf(w, "Peak RSS is the process's high-water mark at each path's last round: one process runs both paths.\n")
	var warn []string
	for _, p := range []struct {
		name string
		r    *PhaseResult
	}{{"floor", f}, {"system", s}} {
		if p.r.Failed > 0 {
			warn = append(warn, fmt.Sprintf("%s: %d failed jobs", p.name, p.r.Failed))
		}
		if p.r.Refused > 0 {
			warn = append(warn, fmt.Sprintf("%s: %d submissions refused", p.name, p.r.Refused))
		}
		if p.r.Resubmitted > 0 {
			warn = append(warn, fmt.Sprintf("%s: %d submissions answered retryable (the store failed) and published again", p.name, p.r.Resubmitted))
		}
		if p.r.Duplicates > 0 {
			warn = append(warn, fmt.Sprintf("%s: %d duplicate results", p.name, p.r.Duplicates))
		}
		if p.r.Undispatched > 0 {
			warn = append(warn, fmt.Sprintf("%s: %d results without a recorded dispatch", p.name, p.r.Undispatched))
		}
		if p.r.OtherCores > disturbing {
			warn = append(warn, fmt.Sprintf("%s: other processes used %.2f cores during the run: its figures are disturbed", p.name, p.r.OtherCores))
		}
		if p.r.BusErrors > 0 {
			warn = append(warn, fmt.Sprintf("%s: %d bus errors (slow consumer, malformed packets or handler panics)", p.name, p.r.BusErrors))
		}
	}
	for _, s := range warn {
		fmt.Fprintln(w, "warning:", s)
	}
	return nil
}

// Commit returns the source revision: the one stamped in the binary if any,
// else `git rev-parse --short HEAD` in the working directory (with "-dirty"
// when the tree has changes), else "".
func Commit() string {
	if info, ok := debug.ReadBuildInfo(); ok {
		var rev string
		dirty := false
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if rev != "" {
			if len(rev) > 7 {
				rev = rev[:7]
			}
			if dirty {
				rev += "-dirty"
			}
			return rev
		}
	}
	out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return ""
	}
	rev := strings.TrimSpace(string(out))
	if st, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(strings.TrimSpace(string(st))) > 0 {
		rev += "-dirty"
	}
	return rev
}
