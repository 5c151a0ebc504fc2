package bench_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"github.com/cortex-os/core/internal/embeddednats"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/cortex-os/core/internal/bench"
	"github.com/cortex-os/core/internal/natstest"
)

// requiredKeys are the keys issue 3 asks of `cortex bench --json`.
var requiredKeys = []string{
	"jobs", "window", "store", "jobs_per_sec", "p50_us", "p99_us",
	"floor_jobs_per_sec", "floor_p50_us", "floor_p99_us", "ratio", "rss_mb",
}

// TestRunTinyBench runs the whole bench once, in process, on a tiny job count.
// It checks only that it completes, that its JSON is one well-formed object
// with the required keys, and that the table prints: no timing is asserted.
func TestRunTinyBench(t *testing.T) {
	before := runtime.NumGoroutine()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rep, err := bench.Run(ctx, bench.Options{Jobs: 200, Window: 10, Warmup: 20, Workers: 2, Payload: 64})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}

	var out bytes.Buffer
	if err := rep.WriteJSON(&out); err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(out.Bytes()))
	var obj map[string]any
	if err := dec.Decode(&obj); err != nil {
		t.Fatalf("JSON output is not an object: %v\n%s", err, out.String())
	}
	if dec.More() {
		t.Fatalf("JSON output has more than one value:\n%s", out.String())
	}
	for _, k := range requiredKeys {
		if _, ok := obj[k]; !ok {
			t.Errorf("JSON output lacks %q", k)
		}
	}
	if obj["submit"] != bench.SubmitPlain {
		t.Errorf("submit = %v; want %s", obj["submit"], bench.SubmitPlain)
	}
	if obj["jobs"] != float64(200) || obj["window"] != float64(10) || obj["store"] != "memory" {
		t.Errorf("jobs, window, store = %v, %v, %v; want 200, 10, memory", obj["jobs"], obj["window"], obj["store"])
	}
	if obj["rounds"] != float64(bench.DefaultRounds) || obj["worker_mode"] != "inline" {
		t.Errorf("rounds, worker_mode = %v, %v; want %d, inline", obj["rounds"], obj["worker_mode"], bench.DefaultRounds)
	}
	// The system path is the default one: placement and the safety kernel.
	if obj["placement"] != "least-loaded" || obj["policy"] != "kernel, shipped default policy" || obj["worker_capacity"] != float64(64) {
		t.Errorf("placement, policy, worker_capacity = %v, %v, %v; want least-loaded, the kernel with the shipped policy, 64",
			obj["placement"], obj["policy"], obj["worker_capacity"])
	}
	if rep.Floor.Jobs != 200 || rep.System.Jobs != 200 {
		t.Errorf("measured jobs: floor %d, system %d; want 200 each, over the rounds", rep.Floor.Jobs, rep.System.Jobs)
	}
	for _, k := range []string{"failed", "floor_failed", "duplicates", "floor_duplicates"} {
		if obj[k] != float64(0) {
			t.Errorf("%s = %v, want 0", k, obj[k])
		}
	}

	var table bytes.Buffer
	if err := rep.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"floor (core NATS)", "system", "jobs/s", "submit->result p50", "submit->dispatch p50", "CPU s / 1,000 jobs", "peak RSS"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, table.String())
		}
	}

	checkNoLeak(t, before)
}

// checkNoLeak checks that everything the bench started has stopped: the
// goroutines go back to what they were (the runtime is given a moment to
// reap the ones that are ending).
func checkNoLeak(t *testing.T, before int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines before the bench, %d after:\n%s", before, n, buf[:runtime.Stack(buf, true)])
	}
}

// Rounds split the measured jobs unevenly when they must, never into more
// rounds than jobs; the workers may run their handler on runners.
func TestRoundsAndWorkerRunners(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, tc := range []struct{ jobs, rounds, wantRounds int }{{7, 3, 3}, {4, 10, 4}} {
		rep, err := bench.Run(ctx, bench.Options{Jobs: tc.jobs, Rounds: tc.rounds, Window: 2, Warmup: -1, WorkerRunners: true})
		if err != nil {
			t.Fatalf("Run(jobs %d, rounds %d): %v", tc.jobs, tc.rounds, err)
		}
		if rep.Opts.Rounds != tc.wantRounds || rep.Floor.Jobs != tc.jobs || rep.System.Jobs != tc.jobs || rep.System.Failed != 0 {
			t.Errorf("jobs %d, rounds %d: ran %d rounds, floor %d jobs, system %d jobs (%d failed)",
				tc.jobs, tc.rounds, rep.Opts.Rounds, rep.Floor.Jobs, rep.System.Jobs, rep.System.Failed)
		}
		if m := rep.JSON()["worker_mode"]; m != "runners" {
			t.Errorf("worker_mode %v, want runners", m)
		}
	}
}

func TestRateModeCompletes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rep, err := bench.Run(ctx, bench.Options{Jobs: 100, Rate: 2000, Window: 50, Warmup: -1})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if rep.System.Failed != 0 || rep.Floor.Failed != 0 {
		t.Errorf("failed jobs: floor %d, system %d", rep.Floor.Failed, rep.System.Failed)
	}
}

// The durable store runs too: a key-value bucket and stream intake.
func TestJetStreamStore(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rep, err := bench.Run(ctx, bench.Options{Jobs: 100, Window: 10, Warmup: -1, Store: bench.StoreJetStream})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if rep.System.Failed != 0 {
		t.Errorf("failed jobs: system %d", rep.System.Failed)
	}
	// Submitted as client.Submit does: the scheduler took the load
	// generator's inbox (or no job would have completed).
	if m := rep.JSON()["submit"]; m != bench.SubmitAnswered {
		t.Errorf("submit = %v; want %s", m, bench.SubmitAnswered)
	}
	if rep.System.Resubmitted != 0 || rep.System.Refused != 0 {
		t.Errorf("resubmitted %d, refused %d; want 0, 0", rep.System.Resubmitted, rep.System.Refused)
	}
}

func TestBadOptionsAreRefused(t *testing.T) {
	for _, o := range []bench.Options{
		{Jobs: -1},
		{Window: -1},
		{Rate: -5},
		{Workers: -2},
		{Payload: -1},
		{Payload: 10 << 20},
		{Store: "redis"},
		{Rounds: -1},
	} {
		if _, err := bench.Run(context.Background(), o); err == nil {
			t.Errorf("Run(%+v) = nil error", o)
		}
	}
}

// TestCancelAbortsCleanly is Ctrl-C: Run returns the cancellation, having
// stopped everything it started.
func TestCancelAbortsCleanly(t *testing.T) {
	before := runtime.NumGoroutine()
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(300*time.Millisecond, cancel)
	// A rate slow enough that the run is still going when ctx ends.
	_, err := bench.Run(ctx, bench.Options{Jobs: 100_000, Rate: 100, Warmup: -1})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	checkNoLeak(t, before)
}

// TestExistingServer is --nats-url: the bench uses a server it did not start.
func TestExistingServer(t *testing.T) {
	url := natstest.URL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rep, err := bench.Run(ctx, bench.Options{Jobs: 100, Window: 5, Warmup: -1, NatsURL: url})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if !strings.HasPrefix(rep.Nats, "external ") || !strings.Contains(rep.CPUScope, "not the external NATS server") {
		t.Errorf("nats %q, cpu scope %q: want an external server, outside the CPU figure", rep.Nats, rep.CPUScope)
	}
}

// Against a server that admits only a user, the bench connects with the
// credentials it is given.
func TestBenchWithCredentials(t *testing.T) {
	t.Parallel()
	srv := natstest.RunServerWith(t, embeddednats.Config{Users: []*server.User{{Username: "bench", Password: "secret"}}})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	o := bench.Options{Jobs: 50, Window: 10, Warmup: -1, NatsURL: srv.ClientURL()}
	if _, err := bench.Run(ctx, o); err == nil {
		t.Fatal("the bench ran without credentials on a server that requires them")
	}
	o.NatsOptions = []nats.Option{nats.UserInfo("bench", "secret")}
	if rep, err := bench.Run(ctx, o); err != nil || rep.System.Failed != 0 {
		t.Fatalf("with credentials: %v", err)
	}
}
