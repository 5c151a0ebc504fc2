// Package client submits jobs to CortexOS and follows them: Submit, Get,
// Watch, Wait, Cancel, List, the dead-letter queue and the live workers, all
// answered by a scheduler over NATS.
//
//	c, err := client.Connect("nats://127.0.0.1:4222", client.Options{})
//	if err != nil { ... }
//	defer c.Close()
//	job, err := c.Submit(ctx, &pb.JobRequest{Topic: "job.echo"})
//	if err != nil { ... } // a *RefusedError when the scheduler said no
//	job, err = c.Wait(ctx, job.GetJobId())
//
// A Client is safe for concurrent use. docs/sdk-go.md walks through it.
package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/cortex-os/core/internal/infrastructure/bus"
	"github.com/cortex-os/core/pkg/blob"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// DefaultRequestTimeout bounds one request to the scheduler when
// Options.RequestTimeout is not set.
const DefaultRequestTimeout = 5 * time.Second

// Options configure a Client, and the connection Connect and Dial make.
type Options struct {
	// Name names the connection in the server's monitoring. Default
	// "cortex-client".
	Name string
	// Credentials: how the connection authenticates (Connect and Dial
	// only; a connection given to New has its own).
	Credentials Credentials
	// Identity, when set, is who the client says it is in its subjects: it
	// submits on sys.job.submit.<Identity>, queries on
	// sys.job.query.<Identity>, cancels on sys.job.cancel.<Identity>, and
	// reads its answers under _INBOX.<Identity>., so that the server's
	// permissions can tie a NATS user to its own subjects. One subject
	// token (no dots, spaces or wildcards). Default "": the bare subjects.
	Identity string
	// Tenant is the tenant the client's identity is bound to, if it is:
	// Watch and Events then subscribe to that tenant's job events only
	// (sys.job.event.<tenant>.<job_id>), which is all the server lets a
	// tenant's client read (docs/security.md). Default "": the events of
	// the job whatever its tenant (sys.job.event.*.<job_id>).
	Tenant string
	// SenderID signs the packets the client sends. Default the Identity,
	// else "cortex-client".
	SenderID string
	// RequestTimeout bounds each request to the scheduler, within the
	// caller's context. Default DefaultRequestTimeout.
	RequestTimeout time.Duration
	// Logger receives connection events (disconnects, reconnects) and
	// dropped packets. Default slog.Default().
	Logger *slog.Logger
	// NATSOptions are extra nats.go options for Connect and Dial, applied
	// after the credentials.
	NATSOptions []nats.Option
	// Blobs uploads large inputs (WithInput) and reads results (Result).
	// Default: a blob.Store on the client's connection (bucket
	// CORTEX_BLOBS, 64 MiB cap; docs/blobs.md).
	Blobs *blob.Store
	// InlineInputLimit: an input (WithInput) up to this many bytes goes in
	// JobRequest.payload; a larger one is uploaded to Blobs and passed as
	// an obj:// context_ptr. Default DefaultInlineInputLimit, as the Python
	// SDK.
	InlineInputLimit int
}

// DefaultInlineInputLimit is Options.InlineInputLimit's default: 256 KiB.
const DefaultInlineInputLimit = 256 << 10

func (o *Options) setDefaults() error {
	if strings.ContainsAny(o.Identity, ". *>\t\r\n") {
		return invalid("identity %q must be one subject token: no dots, spaces or wildcards", o.Identity)
	}
	if o.RequestTimeout < 0 {
		return invalid("request timeout %s must not be negative", o.RequestTimeout)
	}
	if o.InlineInputLimit < 0 {
		return invalid("inline input limit %d must not be negative", o.InlineInputLimit)
	}
	if o.InlineInputLimit == 0 {
		o.InlineInputLimit = DefaultInlineInputLimit
	}
	if o.Name == "" {
		o.Name = "cortex-client"
	}
	if o.SenderID == "" {
		o.SenderID = o.Identity
	}
	if o.SenderID == "" {
		o.SenderID = "cortex-client"
	}
	if o.RequestTimeout == 0 {
		o.RequestTimeout = DefaultRequestTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return nil
}

// InboxPrefix is the inbox prefix of a client with the given identity,
// _INBOX.<identity>: a connection given to New for a client with that
// Identity must use it (nats.CustomInboxPrefix).
func InboxPrefix(identity string) string { return bus.DefaultInboxPrefix(identity) }

// Client submits jobs and asks a scheduler about them.
type Client struct {
	bus      *bus.NatsBus
	owned    bool // made by Connect: Close drains the connection
	senderID string
	tenant   string
	timeout  time.Duration
	blobs    *blob.Store
	inline   int

	submitSubject, querySubject, cancelSubject string
}

// Connect connects to the NATS server(s) at url (comma separated) and
// returns a client on that connection, which Close drains. The connection
// reconnects for ever and logs its disconnects and reconnects.
func Connect(url string, opts Options) (*Client, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	b, err := dial(url, opts)
	if err != nil {
		return nil, err
	}
	c, err := newClient(b, opts)
	if err != nil {
		b.Close()
		return nil, err
	}
	c.owned = true
	return c, nil
}

// Dial makes the connection Connect makes (reconnecting for ever, logging
// its events, with opts' credentials and inbox prefix) and returns it, for
// a caller that wants the connection itself: to run a pkg/worker worker on
// it, say. The caller closes it.
func Dial(url string, opts Options) (*nats.Conn, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	b, err := dial(url, opts)
	if err != nil {
		return nil, err
	}
	return b.Conn(), nil
}

func dial(url string, opts Options) (*bus.NatsBus, error) {
	creds := opts.Credentials.bus()
	if creds.InboxPrefix == "" && opts.Identity != "" {
		creds.InboxPrefix = InboxPrefix(opts.Identity)
	}
	natsOpts, err := creds.Options()
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	b, err := bus.Connect(bus.Config{
		URL: url, Name: opts.Name, Logger: opts.Logger, DrainTimeout: 2 * time.Second,
		Options: append(natsOpts, opts.NATSOptions...),
	})
	if err != nil {
		cause := errors.Unwrap(err) // nats.go's error, without the bus's words
		if cause == nil {
			cause = err
		}
		return nil, fmt.Errorf("client: connect %s: %w", url, cause)
	}
	return b, nil
}

// New returns a client on nc, a connection the caller made and closes. With
// opts.Identity, nc must read its answers under InboxPrefix(opts.Identity)
// (nats.CustomInboxPrefix); Credentials and NATSOptions do not apply.
func New(nc *nats.Conn, opts Options) (*Client, error) {
	if nc == nil {
		return nil, invalid("a NATS connection is required")
	}
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	if opts.Identity != "" {
		if want := InboxPrefix(opts.Identity) + "."; !strings.HasPrefix(nc.NewInbox(), want) {
			return nil, invalid("identity %q reads its answers under %s, but the connection's inbox is %s: connect with nats.CustomInboxPrefix(client.InboxPrefix(%q))",
				opts.Identity, want, nc.NewInbox(), opts.Identity)
		}
	}
	return newClient(bus.FromConn(nc, bus.Config{Logger: opts.Logger}), opts)
}

func newClient(b *bus.NatsBus, opts Options) (*Client, error) {
	if opts.Blobs == nil {
		s, err := blob.New(b.Conn(), blob.Config{})
		if err != nil {
			return nil, fmt.Errorf("client: %w", err)
		}
		opts.Blobs = s
	}
	c := &Client{
		bus: b, senderID: opts.SenderID, tenant: opts.Tenant, timeout: opts.RequestTimeout, blobs: opts.Blobs, inline: opts.InlineInputLimit,
		submitSubject: wire.SubjectSubmit, querySubject: wire.SubjectQuery, cancelSubject: wire.SubjectCancel,
	}
	if id := opts.Identity; id != "" {
		c.submitSubject += "." + id
		c.querySubject += "." + id
		c.cancelSubject += "." + id
	}
	return c, nil
}

// Blobs is the blob store the client uploads inputs to and reads results from.
func (c *Client) Blobs() *blob.Store { return c.blobs }

// Conn is the client's connection.
func (c *Client) Conn() *nats.Conn { return c.bus.Conn() }

// Close drains the connection Connect made; a connection given to New is
// left to its owner.
func (c *Client) Close() {
	if c.owned {
		c.bus.Close()
	}
}

// SubmitOption sets an option of one submission.
type SubmitOption func(*submitOptions)

type submitOptions struct {
	traceID  string
	input    []byte
	hasInput bool
}

// WithInput sets the job's input: in req.Payload when it is at most
// Options.InlineInputLimit bytes, else uploaded to the blob store under an
// unguessable key (inputs/<job_id>/<random>) and passed as an obj://
// context_ptr. A worker reads it either way with Job.Input. req must have
// neither a payload nor a context_ptr. An input over the store's cap is
// blob.ErrTooLarge, and nothing is submitted.
func WithInput(data []byte) SubmitOption {
	return func(o *submitOptions) { o.input, o.hasInput = data, true }
}

// WithTraceID sets the trace id the job is followed by through the logs.
// Default: a new UUID.
func WithTraceID(traceID string) SubmitOption {
	return func(o *submitOptions) { o.traceID = traceID }
}

// Submit sends req and waits for the scheduler to record it: the answer is
// the job as recorded (PENDING or DISPATCHED; or, when req repeats an
// earlier submission with the same content, that job as it is now). An
// empty req.JobId is set to a new UUID first (in req).
//
// A refusal is a *RefusedError: ErrInvalid (the request cannot be a job),
// ErrDenied (the safety policy; the job is recorded DENIED and is
// RefusedError.Job), ErrThrottled (retry after RefusedError.RetryAfter) or
// ErrConflict (the job_id is taken by different content).
//
// The submission is first published for an answer (docs/protocol.md): a
// durable intake does not store it, the scheduler's answer says it is
// kept. With no answer within 3 s (or before ctx ends), or an answer
// saying the store failed, it is published once more plainly, for the
// intake stream to keep, and Submit waits for the answer until ctx ends.
func (c *Client) Submit(ctx context.Context, req *pb.JobRequest, opts ...SubmitOption) (_ *pb.JobInfo, err error) {
	if req == nil {
		return nil, invalid("nil request")
	}
	var o submitOptions
	for _, opt := range opts {
		opt(&o)
	}
	if req.JobId == "" {
		req.JobId = uuid.NewString()
	}
	var endSpan func(error)
	if o.traceID, endSpan = c.startSubmit(ctx, req, o.traceID); endSpan != nil { // trace.go
		defer func() { endSpan(err) }()
	}
	if o.hasInput {
		if err := c.setInput(ctx, req, o.input); err != nil {
			return nil, err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	inbox := c.bus.NewInbox()
	answers := make(chan *pb.JobAnswer, 4) // each copy's, and a redelivered copy's
	drain, err := c.bus.Subscribe(inbox, "", func(p *pb.BusPacket) {
		if a := p.GetJobAnswer(); a != nil {
			select {
			case answers <- a:
			default:
			}
		}
	})
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	defer func() { _ = drain() }()
	// The server has the subscription before the scheduler can answer.
	if err := c.bus.Flush(ctx); err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	// Published for an answer, the submission is not stored by the intake
	// stream: a scheduler records it and answers with the job. Unanswered
	// (no scheduler, one of an earlier version, a lost connection) or
	// answered "publish it for the stream" (the store failed), it is
	// published again plainly, once, and the stream keeps it; the scheduler
	// records a job once whichever copies reach it (by job_id).
	packet := wire.JobRequestPacket(o.traceID, c.senderID, req)
	if err := c.bus.PublishAnsweredSubmit(c.submitSubject, packet, inbox); err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	patience := time.NewTimer(submitPatience)
	defer patience.Stop()
	republished := false
	republish := func() error {
		republished = true
		if err := c.bus.PublishReplyTo(c.submitSubject, packet, inbox); err != nil {
			return fmt.Errorf("client: %w", err)
		}
		return nil
	}
	for {
		select {
		case a := <-answers:
			if a.GetRetryable() && a.GetRetryAfterMs() == 0 {
				if !republished {
					if err := republish(); err != nil {
						return nil, err
					}
					continue
				}
				if a.GetError() == bus.SubmitRetryError {
					continue // the first copy's, late: the stream has the plain one
				}
			}
			return answerJob(a)
		case <-patience.C:
			if !republished {
				if err := republish(); err != nil {
					return nil, err
				}
			}
		case <-ctx.Done():
			if !republished {
				// Kept by the stream, it is recorded when a scheduler runs.
				if err := republish(); err != nil {
					return nil, fmt.Errorf("no answer from a scheduler for job %s (%w), and publishing it for the stream failed: %w", req.JobId, context.Cause(ctx), err)
				}
				fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), submitFlush)
				_ = c.bus.Flush(fctx)
				cancel()
			}
			return nil, fmt.Errorf("no answer from a scheduler for job %s (%w); if the intake is durable, it is recorded when a scheduler runs", req.JobId, context.Cause(ctx))
		}
	}
}

// submitPatience is how long Submit waits for the answer to a submission
// published for one before it publishes it again plainly, for the intake
// stream to keep. A scheduler answers in milliseconds; one that does not
// answer within this is not running, or of a version that takes
// submissions only from the stream.
var submitPatience = 3 * time.Second

// submitFlush bounds the flush of a submission published plainly as
// Submit gives up, so that it reaches the server before Submit returns.
const submitFlush = time.Second

func newTraceID() string { return uuid.NewString() }

func (c *Client) setInput(ctx context.Context, req *pb.JobRequest, data []byte) error {
	if len(req.GetPayload()) > 0 || req.GetContextPtr() != "" {
		return invalid("WithInput and a request with a payload or context_ptr: give one")
	}
	if len(data) <= c.inline {
		req.Payload = data
		return nil
	}
	p, err := c.blobs.PutBytes(ctx, blob.NewKey("inputs/"+req.GetJobId()), data)
	if err != nil {
		return fmt.Errorf("client: uploading the input of job %s: %w", req.GetJobId(), err)
	}
	req.ContextPtr = p.String()
	return nil
}

// Result returns the bytes of a completed job's result: what its result_ptr
// points at (a data: URL, or an obj:// object, checked against its digest);
// nil when it has none. A job that has not completed is a *JobError
// (ErrNotCompleted); a result_ptr of another scheme is blob.ErrUnsupported
// (Get has the pointer).
func (c *Client) Result(ctx context.Context, jobID string) ([]byte, error) {
	job, err := c.Get(ctx, jobID)
	if err != nil {
		return nil, err
	}
	if job.GetState() != pb.JobState_JOB_STATE_COMPLETED {
		return nil, &JobError{Job: job}
	}
	if job.GetResultPtr() == "" {
		return nil, nil
	}
	data, err := c.blobs.Get(ctx, job.GetResultPtr())
	if err != nil {
		return nil, fmt.Errorf("client: result of job %s: %w", jobID, err)
	}
	return data, nil
}

// ErrNotCompleted: the job has no result to read: it has not ended, or
// ended otherwise than COMPLETED. Every *JobError matches it.
var ErrNotCompleted = errors.New("job not completed")

// JobError is Result's error for a job that did not complete.
type JobError struct{ Job *pb.JobInfo }

func (e *JobError) Error() string {
	msg := fmt.Sprintf("client: job %s is %s", e.Job.GetJobId(), StateName(e.Job.GetState()))
	if e.Job.GetError() != "" {
		msg += ": " + e.Job.GetError()
	}
	return msg + ": no result"
}

// Is makes errors.Is(err, ErrNotCompleted) true.
func (e *JobError) Is(target error) bool { return target == ErrNotCompleted }

// Get returns a job as the scheduler knows it now. A job that does not
// exist is ErrNotFound.
func (c *Client) Get(ctx context.Context, jobID string) (*pb.JobInfo, error) {
	if jobID == "" {
		return nil, invalid("empty job id")
	}
	patience := time.NewTimer(notRecordedPatience)
	defer patience.Stop()
	for {
		job, err := c.one(ctx, c.querySubject, c.query(&pb.JobQuery{JobId: jobID}))
		var re *RefusedError
		if err == nil || !errors.As(err, &re) || !re.Retryable || !strings.Contains(re.Reason, notRecordedYet) {
			return job, err
		}
		// The scheduler was still recording submissions it had received:
		// this job may be one of them. Ask again for a while; then the
		// answer is the retryable refusal itself.
		select {
		case <-patience.C:
			return nil, err
		case <-ctx.Done():
			return nil, err
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// notRecordedYet is in the scheduler's retryable answer to a get of a job it
// does not hold while submissions it received are still being recorded.
const notRecordedYet = "not recorded yet"

// notRecordedPatience is how long Get asks again while the answer is
// notRecordedYet: submissions are recorded in milliseconds.
const notRecordedPatience = time.Second

// Cancel cancels a job that has not ended, whatever its state; reason is
// recorded as its error ("" : "cancelled by request"). A running handler
// sees its context cancelled. The answer is the job, CANCELLED. A job that
// has already ended is ErrConflict (RefusedError.Job is the job).
func (c *Client) Cancel(ctx context.Context, jobID, reason string) (*pb.JobInfo, error) {
	if jobID == "" {
		return nil, invalid("empty job id")
	}
	p := wire.NewPacket(uuid.NewString(), c.senderID)
	p.Payload = &pb.BusPacket_JobCancel{JobCancel: &pb.JobCancel{JobId: jobID, Reason: reason}}
	return c.one(ctx, c.cancelSubject, p)
}

// ListOptions select the jobs List and DeadLetters return.
type ListOptions struct {
	// State: only jobs in this state; JOB_STATE_UNSPECIFIED (the zero
	// value) lists every state. Not for DeadLetters.
	State pb.JobState
	// Topic and Tenant: only jobs of this topic, of this tenant; "" any. A
	// client bound to a tenant sees its tenant's jobs only, whatever it asks.
	// Not for DeadLetters.
	Topic, Tenant string
	// Limit: at most this many jobs; 0 is the scheduler's default (100). For
	// List, the size of one page (the scheduler gives at most 1000); for
	// ListAll, the total.
	Limit int
	// PageToken continues a listing where an earlier page ended
	// (JobList.NextPageToken); "" starts from the newest job.
	PageToken string
}

func (o ListOptions) check() error {
	if o.Limit < 0 || o.Limit > math.MaxInt32 {
		return invalid("limit %d out of range", o.Limit)
	}
	return nil
}

// JobList is one page of jobs and the token of the next ("" at the end).
type JobList struct {
	Jobs          []*pb.JobInfo
	NextPageToken string
}

// maxPageSize is the most jobs the scheduler puts in one page.
const maxPageSize = 1000

// List returns one page of the jobs that opts selects, the most recently
// written first, with the token of the next page. The scheduler does bounded
// work for a page, so a page may hold fewer jobs than asked, even none, and
// still have a next page: ListAll reads on until it has opts.Limit.
func (c *Client) List(ctx context.Context, opts ListOptions) (*JobList, error) {
	if err := opts.check(); err != nil {
		return nil, err
	}
	return c.many(ctx, c.query(&pb.JobQuery{State: opts.State, Topic: opts.Topic, Tenant: opts.Tenant,
		Limit: int32(min(opts.Limit, maxPageSize)), PageToken: opts.PageToken}))
}

// ListAll reads pages from opts.PageToken on until it has opts.Limit jobs
// (0: 100) or there are no more, and returns them, newest first, with the
// token that continues after them.
func (c *Client) ListAll(ctx context.Context, opts ListOptions) (*JobList, error) {
	want := opts.Limit
	if want <= 0 {
		want = 100
	}
	all := &JobList{}
	for {
		opts.Limit = min(want-len(all.Jobs), maxPageSize)
		page, err := c.List(ctx, opts)
		if err != nil {
			return nil, err
		}
		all.Jobs, all.NextPageToken = append(all.Jobs, page.Jobs...), page.NextPageToken
		if page.NextPageToken == "" || len(all.Jobs) >= want {
			return all, nil
		}
		opts.PageToken = page.NextPageToken
	}
}

// DeadLetters lists the dead-letter queue, oldest first: jobs that failed
// every one of their attempts. opts.State must be unset.
func (c *Client) DeadLetters(ctx context.Context, opts ListOptions) (*JobList, error) {
	if err := opts.check(); err != nil {
		return nil, err
	}
	if opts.State != pb.JobState_JOB_STATE_UNSPECIFIED {
		return nil, invalid("dead letters are FAILED: ListOptions.State does not apply")
	}
	if opts.Topic != "" || opts.Tenant != "" || opts.PageToken != "" {
		return nil, invalid("dead letters are listed oldest first, unfiltered: ListOptions.Topic, Tenant and PageToken do not apply")
	}
	return c.many(ctx, c.query(&pb.JobQuery{DeadLetter: true, Limit: int32(opts.Limit)}))
}

// RetryDeadLetter takes a job out of the dead-letter queue and runs its
// request again as a new job, <job_id>-redrive-<n>, which it returns; the
// failed job itself stays FAILED. A job not in the queue is ErrNotFound.
func (c *Client) RetryDeadLetter(ctx context.Context, jobID string) (*pb.JobInfo, error) {
	if jobID == "" {
		return nil, invalid("empty job id")
	}
	return c.one(ctx, c.querySubject, c.query(&pb.JobQuery{JobId: jobID, DeadLetter: true, Redrive: true}))
}

// Workers lists the live workers a scheduler knows, with their capacity,
// load, capabilities, labels and last heartbeat.
func (c *Client) Workers(ctx context.Context) ([]*pb.WorkerInfo, error) {
	a, err := c.ask(ctx, c.querySubject, c.query(&pb.JobQuery{Workers: true}))
	if err != nil {
		return nil, err
	}
	if !a.GetOk() {
		return nil, refused(a, nil)
	}
	return a.GetWorkers(), nil
}

func (c *Client) query(q *pb.JobQuery) *pb.BusPacket {
	p := wire.NewPacket(uuid.NewString(), c.senderID)
	p.Payload = &pb.BusPacket_JobQuery{JobQuery: q}
	return p
}

// ask sends p on subject and returns the scheduler's answer.
func (c *Client) ask(ctx context.Context, subject string, p *pb.BusPacket) (*pb.JobAnswer, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	reply, err := c.bus.Request(ctx, subject, p)
	if err != nil {
		if errors.Is(err, wire.ErrNoResponders) {
			return nil, fmt.Errorf("client: %w on %s: %w", ErrNoScheduler, subject, wire.ErrNoResponders)
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("client: no answer on %s: %w", subject, context.Cause(ctx))
		}
		return nil, fmt.Errorf("client: %w", err)
	}
	a := reply.GetJobAnswer()
	if a == nil {
		return nil, fmt.Errorf("client: unexpected answer on %s", subject)
	}
	return a, nil
}

func (c *Client) one(ctx context.Context, subject string, p *pb.BusPacket) (*pb.JobInfo, error) {
	a, err := c.ask(ctx, subject, p)
	if err != nil {
		return nil, err
	}
	return answerJob(a)
}

func (c *Client) many(ctx context.Context, p *pb.BusPacket) (*JobList, error) {
	a, err := c.ask(ctx, c.querySubject, p)
	if err != nil {
		return nil, err
	}
	if !a.GetOk() {
		return nil, refused(a, nil)
	}
	return &JobList{Jobs: a.GetJobs(), NextPageToken: a.GetNextPageToken()}, nil
}

// answerJob reads an answer about one job.
func answerJob(a *pb.JobAnswer) (*pb.JobInfo, error) {
	var job *pb.JobInfo
	if len(a.GetJobs()) > 0 {
		job = a.GetJobs()[0]
	}
	if !a.GetOk() {
		return nil, refused(a, job)
	}
	if job == nil {
		return nil, errors.New("client: answer without a job")
	}
	return job, nil
}
