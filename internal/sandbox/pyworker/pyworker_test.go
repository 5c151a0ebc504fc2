package pyworker_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cortex-os/core/internal/infrastructure/bus"
	"github.com/cortex-os/core/internal/lifecycle"
	"github.com/cortex-os/core/internal/logging"
	"github.com/cortex-os/core/internal/natstest"
	"github.com/cortex-os/core/internal/sandbox"
	"github.com/cortex-os/core/internal/sandbox/pyworker"
	"github.com/cortex-os/core/internal/system"
	"github.com/cortex-os/core/internal/systest"
	"github.com/cortex-os/core/pkg/blob"
	"github.com/cortex-os/core/pkg/client"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// rig is NATS with JetStream, a scheduler and a code-python worker, until
// the test ends; and a client.
type rig struct {
	url    string
	bus    *bus.NatsBus
	client *client.Client
}

func newRig(t *testing.T, l sandbox.Limits) *rig {
	t.Helper()
	sb, err := sandbox.New(sandbox.Config{Limits: l})
	if err != nil {
		t.Fatalf("the sandbox cannot be set up here: %v", err)
	}
	if err := sb.Probe(context.Background()); err != nil {
		t.Fatalf("the sandbox does not work here: %v", err)
	}
	url := natstest.URL(t)
	log := logging.Discard()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	started := make(chan struct{})
	go func() {
		defer func() { done <- struct{}{} }()
		if err := system.RunScheduler(ctx, system.SchedulerOptions{NatsURL: url, Logger: log, Started: func() { close(started) }}); err != nil {
			t.Errorf("scheduler: %v", err)
		}
	}()
	<-started
	go func() {
		defer func() { done <- struct{}{} }()
		if err := pyworker.Run(ctx, pyworker.Options{NatsURL: url, Sandbox: sb, Logger: log, Capacity: 2}); err != nil {
			t.Errorf("worker: %v", err)
		}
	}()
	b, err := bus.Connect(bus.Config{URL: url, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		b.Close()
		cancel()
		<-done
		<-done
	})
	return &rig{url: url, bus: b, client: systest.Client(t, b, client.Options{SenderID: "pyworker-test"})}
}

// run submits req and waits for its end.
func (r *rig) run(t *testing.T, req *pb.JobRequest) *pb.JobInfo {
	t.Helper()
	req.Topic = pyworker.Topic
	if req.MaxAttempts == 0 {
		req.MaxAttempts = 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// The worker may not have subscribed yet: a job nobody took is offered
	// again, so submitting at once is fine.
	job, err := r.client.Submit(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	final, err := r.client.Wait(ctx, job.GetJobId())
	if err != nil {
		t.Fatal(err)
	}
	return final
}

func (r *rig) output(t *testing.T, job *pb.JobInfo) pyworker.Output {
	t.Helper()
	var raw []byte
	if key, ok := strings.CutPrefix(job.GetResultPtr(), "obj://"+pyworker.ResultBucket+"/"); ok {
		nc, err := nats.Connect(r.url)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		js, _ := jetstream.New(nc)
		obs, err := js.ObjectStore(context.Background(), pyworker.ResultBucket)
		if err != nil {
			t.Fatal(err)
		}
		if raw, err = obs.GetBytes(context.Background(), key); err != nil {
			t.Fatal(err)
		}
	} else {
		ptr, ok := strings.CutPrefix(job.GetResultPtr(), "data:application/json;base64,")
		if !ok {
			t.Fatalf("result_ptr %q", job.GetResultPtr())
		}
		var err error
		if raw, err = base64.StdEncoding.DecodeString(ptr); err != nil {
			t.Fatal(err)
		}
	}
	var out pyworker.Output
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

var limits = sandbox.Limits{CPUTime: 5 * time.Second, Memory: 256 << 20, Processes: 16, Output: 4 << 10, TmpSize: 4 << 20}

func TestRunsCodeFromEverySource(t *testing.T) {
	t.Parallel()
	r := newRig(t, limits)
	src := "import os, sys\nprint('hello', os.environ.get('WHO'))\nprint('note', file=sys.stderr)"

	job := r.run(t, &pb.JobRequest{Payload: []byte(src), EnvVars: map[string]string{"WHO": "payload"}})
	if job.GetState() != lifecycle.Completed {
		t.Fatalf("%s: %s", lifecycle.Name(job.GetState()), job.GetError())
	}
	if out := r.output(t, job); out.Stdout != "hello payload\n" || out.Stderr != "note\n" || out.ExitCode != 0 || out.Truncated {
		t.Fatalf("output %+v", out)
	}

	ptr := "data:text/x-python;base64," + base64.StdEncoding.EncodeToString([]byte(src))
	job = r.run(t, &pb.JobRequest{ContextPtr: ptr, EnvVars: map[string]string{"WHO": "data-url"}})
	if out := r.output(t, job); out.Stdout != "hello data-url\n" {
		t.Fatalf("output %+v (%s)", out, job.GetError())
	}

	// obj://: an object in the blob store (the scheduler made its bucket).
	blobs, err := blob.New(r.bus.Conn(), blob.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := blobs.PutBytes(context.Background(), "code/hello.py", []byte(src)); err != nil {
		t.Fatal(err)
	}
	job = r.run(t, &pb.JobRequest{ContextPtr: "obj://CORTEX_BLOBS/code/hello.py", EnvVars: map[string]string{"WHO": "object"}})
	if out := r.output(t, job); out.Stdout != "hello object\n" {
		t.Fatalf("output %+v (%s)", out, job.GetError())
	}

	for ptr, want := range map[string]string{
		"":                            "nothing to run",
		"s3://bucket/x.py":            `scheme "s3"`,
		"obj://CORTEX_BLOBS/missing":  "obj://CORTEX_BLOBS/missing",
		"data:text/x-python;base64,!": "data: URL",
	} {
		job = r.run(t, &pb.JobRequest{ContextPtr: ptr})
		if job.GetState() != lifecycle.Failed || !strings.Contains(job.GetError(), want) {
			t.Errorf("context_ptr %q: %s %q, want FAILED with %q", ptr, lifecycle.Name(job.GetState()), job.GetError(), want)
		}
	}
}

// Hostile programs end in FAILED or TIMEOUT with the reason, and the worker
// goes on: the next job runs.
func TestHostileCodeFailsTheJobNotTheWorker(t *testing.T) {
	t.Parallel()
	r := newRig(t, limits)
	for _, tc := range []struct {
		name, src string
		timeout   time.Duration
		state     pb.JobState
		err       string
	}{
		{"exit", "import sys\nprint('bye', file=sys.stderr)\nsys.exit(4)", 0, lifecycle.Failed, "exit code 4: bye"},
		{"exception", "raise ValueError('no')", 0, lifecycle.Failed, "ValueError: no"},
		{"endless loop", "while True:\n    pass", 800 * time.Millisecond, lifecycle.Timeout, "wall time limit reached"},
		{"memory bomb", "x = bytearray(4 * 1024**3)", 0, lifecycle.Failed, "memory limit (256 MiB) reached"},
		{"fork bomb", "import os\nwhile True:\n    os.fork()", 0, lifecycle.Failed, "BlockingIOError"},
		{"network", "import socket\nsocket.create_connection(('127.0.0.1', 4222), timeout=2)", 0, lifecycle.Failed, "ConnectionRefusedError"},
	} {
		job := r.run(t, &pb.JobRequest{Payload: []byte(tc.src), TimeoutMs: tc.timeout.Milliseconds()})
		if job.GetState() != tc.state || !strings.Contains(job.GetError(), tc.err) {
			t.Errorf("%s: %s %q, want %s with %q", tc.name, lifecycle.Name(job.GetState()), job.GetError(), lifecycle.Name(tc.state), tc.err)
		}
	}
	job := r.run(t, &pb.JobRequest{Payload: []byte("import sys\nfor _ in range(100):\n    print('x' * 100)")})
	if out := r.output(t, job); job.GetState() != lifecycle.Completed || !out.Truncated || len(out.Stdout) != limits.Output {
		t.Errorf("output flood: %s, truncated %v, %d bytes kept", lifecycle.Name(job.GetState()), out.Truncated, len(out.Stdout))
	}
	job = r.run(t, &pb.JobRequest{Payload: []byte("print(6 * 7)")})
	if out := r.output(t, job); job.GetState() != lifecycle.Completed || out.Stdout != "42\n" {
		t.Fatalf("after the hostile jobs: %s %+v %s", lifecycle.Name(job.GetState()), out, job.GetError())
	}
}
