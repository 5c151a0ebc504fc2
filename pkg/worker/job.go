package worker

import (
	"context"
	"errors"
	"fmt"

	"github.com/cortex-os/core/pkg/blob"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// Job is one attempt of a job, as a Handler is given it. Its methods read
// the request the scheduler dispatched; Request returns that request itself
// for what they do not cover. A Job is the handler's until it returns: it
// must not be kept, or used from another goroutine, after that.
//
// Job is a struct with methods rather than the wire's *pb.JobRequest so that
// what a handler can ask of its job grows (its input from a blob store, say)
// without changing the Handler signature.
type Job struct {
	req      *pb.JobRequest
	traceID  string
	workerID string
	blobs    *blob.Store // nil outside a worker

	input     []byte
	inputErr  error
	inputRead bool
}

// NewJob wraps req as a Job, for calling a Handler outside a running worker:
// in a unit test of the handler, say.
func NewJob(req *pb.JobRequest) *Job {
	if req == nil {
		req = &pb.JobRequest{}
	}
	return &Job{req: req}
}

// ID is the job's id.
func (j *Job) ID() string { return j.req.GetJobId() }

// Topic is the topic the job was submitted to (job.<kind>, say).
func (j *Job) Topic() string { return j.req.GetTopic() }

// Attempt is which attempt of the job this is: 1, 2, ... for a job the
// scheduler dispatched; 0 for one published straight on the topic.
func (j *Job) Attempt() int { return int(j.req.GetAttempt()) }

// Payload is the job's inline input (cortex submit --payload); nil if none.
// The handler must not modify it.
func (j *Job) Payload() []byte { return j.req.GetPayload() }

// Input is the job's input: its payload when it has one, else the bytes
// behind its context_ptr, a data: URL or an obj:// object in the blob store
// (read once, checked against its SHA-256 digest, at most the store's
// MaxBytes; docs/blobs.md); nil when it has neither. A context_ptr of
// another scheme is blob.ErrUnsupported: ContextPtr has it. Outside a worker
// (NewJob) an obj:// pointer cannot be read.
func (j *Job) Input(ctx context.Context) ([]byte, error) {
	if p := j.req.GetPayload(); len(p) > 0 {
		return p, nil
	}
	ptr := j.req.GetContextPtr()
	if ptr == "" {
		return nil, nil
	}
	if !j.inputRead {
		j.input, j.inputErr = j.readInput(ctx, ptr)
		j.inputRead = j.inputErr == nil
	}
	return j.input, j.inputErr
}

func (j *Job) readInput(ctx context.Context, ptr string) ([]byte, error) {
	if j.blobs != nil {
		return j.blobs.Get(ctx, ptr)
	}
	p, err := blob.ParsePointer(ptr)
	switch {
	case err != nil:
		return nil, err
	case p.Scheme == blob.SchemeData:
		return p.Data, nil
	case p.Scheme == blob.SchemeObj:
		return nil, errors.New("worker: job input " + ptr + ": no blob store outside a worker")
	}
	return nil, fmt.Errorf("%w: context_ptr %q", blob.ErrUnsupported, ptr)
}

// ContextPtr says where the job's input is, when it is not inline.
func (j *Job) ContextPtr() string { return j.req.GetContextPtr() }

// Env is the job's environment (cortex submit --env KEY=VALUE). The handler
// must not modify it.
func (j *Job) Env() map[string]string { return j.req.GetEnvVars() }

// Tenant is who the job is for; "" if nobody said.
func (j *Job) Tenant() string { return j.req.GetTenant() }

// Priority is the job's priority.
func (j *Job) Priority() pb.JobPriority { return j.req.GetPriority() }

// TraceID follows the job through the scheduler's and the worker's logs.
func (j *Job) TraceID() string { return j.traceID }

// WorkerID is the id of the worker running the job; "" outside a worker.
func (j *Job) WorkerID() string { return j.workerID }

// Request is the request as it came on the wire. The handler must not
// modify it.
func (j *Job) Request() *pb.JobRequest { return j.req }

// Result is what a handler returns for a job that completed: its output's
// bytes (Data), or where its output is (Ptr), or neither. It is a struct so
// that it can grow without changing the Handler signature.
type Result struct {
	// Ptr says where the job's output is (result_ptr on the wire: a URL,
	// a key in a store), put in result_ptr as it is. The job's caller
	// reads it from the job (cortex job get, Client.Get).
	Ptr string
	// Data is the job's output: the worker stores it and sets result_ptr,
	// as the Python SDK does: up to Config.ResultInlineLimit bytes inline
	// (a data: URL with MediaType), larger ones in the blob store
	// (obj://CORTEX_BLOBS/results/<job>/<attempt>/<random>). The caller
	// reads the bytes with Client.Result or `cortex job result`. Nil: none.
	// Set Data or Ptr, not both.
	Data []byte
	// MediaType of Data in a data: URL. Default application/octet-stream.
	MediaType string
}
