package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/cortex-os/core/internal/natstest"
	"github.com/cortex-os/core/pkg/worker"
)

// startBlobWorker runs a pkg/worker worker for job.blobcopy in the test
// process: it returns its job's input (Job.Input) reversed, as Result.Data.
func startBlobWorker(t *testing.T, url string) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	w, err := worker.New(nc, worker.Config{Kind: "blobcopy", Handler: worker.HandlerFunc(
		func(ctx context.Context, job *worker.Job) (worker.Result, error) {
			in, err := job.Input(ctx)
			if err != nil {
				return worker.Result{}, err
			}
			return worker.Result{Data: reversed(in)}, nil
		})})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

func reversed(b []byte) []byte {
	out := make([]byte, len(b))
	for i, c := range b {
		out[len(b)-1-i] = c
	}
	return out
}

// Issue 17 through the binaries: `cortex submit --input FILE --wait` uploads
// a large input (an obj:// context_ptr in the CORTEX_BLOBS bucket the
// scheduler created), a Go worker reads it and returns bytes (stored in the
// bucket), and `cortex job result ID` prints them, or writes them with -o.
// A small input and result go inline. A job that failed has no result.
func TestCLIBlobRoundTrip(t *testing.T) {
	requireBinaries(t)
	t.Parallel()
	url := natstest.URL(t)
	sched := startScheduler(t, url)
	sched.WaitForLog(t, logTimeout, "job store", "store", "jetstream")
	startBlobWorker(t, url)
	env := []string{"NATS_URL=" + url}
	dir := t.TempDir()

	large := make([]byte, 1<<20)
	_, _ = rand.Read(large)
	for name, data := range map[string][]byte{"large": large, "small": []byte("hello, blobs\n")} {
		in := filepath.Join(dir, name+".in")
		if err := os.WriteFile(in, data, 0o600); err != nil {
			t.Fatal(err)
		}
		id := "blob-" + name
		cortexOK(t, env, "submit", "--topic", "job.blobcopy", "--job-id", id, "--input", in, "--wait")
		job := getJob(t, url, id)
		wantScheme := "data:"
		if name == "large" {
			wantScheme = "obj://CORTEX_BLOBS/results/" + id + "/1/"
		}
		if job.State != "COMPLETED" || !strings.HasPrefix(job.ResultPtr, wantScheme) {
			t.Fatalf("%s: job %+v, want COMPLETED with result_ptr %s...", name, job, wantScheme)
		}
		if out := cortexOK(t, env, "job", "result", id); !bytes.Equal([]byte(out), reversed(data)) {
			t.Fatalf("%s: job result printed %d bytes, want the %d reversed", name, len(out), len(data))
		}
		file := filepath.Join(dir, name+".out")
		cortexOK(t, env, "job", "result", id, "-o", file)
		if got, err := os.ReadFile(file); err != nil || !bytes.Equal(got, reversed(data)) {
			t.Fatalf("%s: -o wrote %d bytes, %v", name, len(got), err)
		}
	}

	// An input the worker cannot read (an opaque pointer) fails the job:
	// job result says so.
	cortex(t, env, "submit", "--topic", "job.blobcopy", "--job-id", "blob-opaque", "--context-ptr", "memory://x/1", "--max-attempts", "1", "--wait")
	cortexFails(t, env, "FAILED", "job", "result", "blob-opaque")
	cortexFails(t, env, "give one", "submit", "--topic", "job.blobcopy", "--input", filepath.Join(dir, "small.in"), "--payload", "x")
	cortexFails(t, env, "no such file", "submit", "--topic", "job.blobcopy", "--input", filepath.Join(dir, "missing"))
}
