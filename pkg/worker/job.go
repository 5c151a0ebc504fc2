package worker

import (
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

// Result is what a handler returns for a job that completed. It is a struct
// so that it can grow (result data stored for the caller, say) without
// changing the Handler signature.
type Result struct {
	// Ptr says where the job's output is (result_ptr on the wire: a URL,
	// a key in a store). The job's caller reads it from the job
	// (cortex job get, Client.Get).
	Ptr string
}
