package client_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cortex-os/core/pkg/blob"
	"github.com/cortex-os/core/pkg/client"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/worker"
	"github.com/cortex-os/core/pkg/workertest"
)

// TestInputAndResultBlobs: inputs small and large reach a Go worker's
// Job.Input (inline, then uploaded to the blob store); the bytes it returns
// are stored (inline, then in the store) and read back by Client.Result.
// A job with no result reads as nil; one that failed is ErrNotCompleted.
func TestInputAndResultBlobs(t *testing.T) {
	t.Parallel()
	env := startSDK(t, worker.HandlerFunc(func(ctx context.Context, job *worker.Job) (worker.Result, error) {
		in, err := job.Input(ctx)
		if err != nil {
			return worker.Result{}, err
		}
		switch string(in) {
		case "none":
			return worker.Result{}, nil
		case "fail":
			return worker.Result{}, errors.New("told to fail")
		}
		out := append([]byte("out:"), in...)
		return worker.Result{Data: out}, nil
	}), workertest.WithMaxAttempts(1))
	c := env.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	large := make([]byte, 1<<20) // past the client's 256 KiB and the worker's 64 KiB
	_, _ = rand.Read(large)
	for _, tc := range []struct {
		name         string
		in           []byte
		inputObj     bool
		resultScheme string
	}{
		{"small", []byte("hello"), false, "data:"},
		{"large", large, true, "obj://CORTEX_BLOBS/results/"},
	} {
		req := &pb.JobRequest{Topic: "job.sdk"}
		job, err := c.Submit(ctx, req, client.WithInput(tc.in))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := strings.HasPrefix(req.GetContextPtr(), "obj://CORTEX_BLOBS/inputs/"+req.GetJobId()+"/"); got != tc.inputObj || (tc.inputObj == (len(req.GetPayload()) > 0)) {
			t.Fatalf("%s: payload %d bytes, context_ptr %q", tc.name, len(req.GetPayload()), req.GetContextPtr())
		}
		job, err = c.Wait(ctx, job.GetJobId())
		if err != nil || job.GetState() != pb.JobState_JOB_STATE_COMPLETED {
			t.Fatalf("%s: %v, %v", tc.name, job, err)
		}
		if !strings.HasPrefix(job.GetResultPtr(), tc.resultScheme) {
			t.Fatalf("%s: result_ptr %.80q", tc.name, job.GetResultPtr())
		}
		got, err := c.Result(ctx, job.GetJobId())
		if err != nil || !bytes.Equal(got, append([]byte("out:"), tc.in...)) {
			t.Fatalf("%s: Result: %d bytes, %v", tc.name, len(got), err)
		}
	}

	job, err := c.Submit(ctx, &pb.JobRequest{Topic: "job.sdk"}, client.WithInput([]byte("none")))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Wait(ctx, job.GetJobId()); err != nil {
		t.Fatal(err)
	}
	if got, err := c.Result(ctx, job.GetJobId()); err != nil || got != nil {
		t.Fatalf("no result: %q, %v", got, err)
	}
	job, err = c.Submit(ctx, &pb.JobRequest{Topic: "job.sdk"}, client.WithInput([]byte("fail")))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Wait(ctx, job.GetJobId()); err != nil {
		t.Fatal(err)
	}
	var je *client.JobError
	if _, err := c.Result(ctx, job.GetJobId()); !errors.Is(err, client.ErrNotCompleted) || !errors.As(err, &je) || !strings.Contains(err.Error(), "told to fail") {
		t.Fatalf("failed job: %v", err)
	}

	// An input over the store's cap is refused before anything is submitted.
	small, err := blob.New(env.Conn(), blob.Config{MaxBytes: 300 << 10})
	if err != nil {
		t.Fatal(err)
	}
	c2, err := client.New(env.Conn(), client.Options{Blobs: small})
	if err != nil {
		t.Fatal(err)
	}
	req := &pb.JobRequest{Topic: "job.sdk"}
	if _, err := c2.Submit(ctx, req, client.WithInput(large)); !errors.Is(err, blob.ErrTooLarge) {
		t.Fatalf("input over the cap: %v", err)
	}
	if _, err := c.Get(ctx, req.GetJobId()); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("a refused input was submitted: %v", err)
	}
	if _, err := c.Submit(ctx, &pb.JobRequest{Topic: "job.x", Payload: []byte("p")}, client.WithInput([]byte("i"))); !errors.Is(err, client.ErrInvalid) {
		t.Fatalf("payload and WithInput: %v", err)
	}
}
