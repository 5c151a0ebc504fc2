package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/cortex-os/core/internal/lifecycle"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// ErrRefused is wrapped by every *RefusedError.
var ErrRefused = errors.New("refused")

// RefusedError is the scheduler's "no" to a submission, query or cancel.
type RefusedError struct {
	Reason     string
	Retryable  bool          // the same request may succeed later
	RetryAfter time.Duration // with Retryable: not sooner than this (a throttle)
	RuleID     string        // the policy rule that denied or throttled it
	Job        *pb.JobInfo   // the job concerned, when there is one (a DENIED job)
}

func (e *RefusedError) Error() string {
	msg := e.Reason
	if e.RuleID != "" {
		msg += " (rule " + e.RuleID + ")"
	}
	if e.RetryAfter > 0 {
		msg += "; retry after " + e.RetryAfter.String()
	}
	return msg
}

// Is makes errors.Is(err, ErrRefused) true.
func (e *RefusedError) Is(target error) bool { return target == ErrRefused }

// Requester is what a Client needs of the bus; *bus.NatsBus has it.
type Requester interface {
	Request(ctx context.Context, subject string, packet *pb.BusPacket) (*pb.BusPacket, error)
	PublishReplyTo(subject string, packet *pb.BusPacket, replyTo string) error
	Subscribe(subject, queue string, handler func(*pb.BusPacket)) (drain func() error, err error)
	Flush(ctx context.Context) error
	NewInbox() string
}

// Client submits jobs and asks the scheduler about them.
type Client struct {
	bus      Requester
	senderID string
	identity string
}

// Option configures a Client.
type Option func(*Client)

// WithIdentity names the client to the scheduler: it submits, queries and
// cancels on sys.job.<verb>.<identity>, and the scheduler answers it only
// under _INBOX.<identity>, which must be the bus's inbox prefix (the
// cortex commands set both from the NATS user). The server's permissions
// let only that identity's user publish there; the scheduler binds it to a
// tenant (docs/security.md). Empty: the bare subjects, which name nobody.
func WithIdentity(identity string) Option { return func(c *Client) { c.identity = identity } }

// New returns a client that signs its packets with senderID.
func New(b Requester, senderID string, opts ...Option) *Client {
	if senderID == "" {
		senderID = "cortex-client"
	}
	c := &Client{bus: b, senderID: senderID}
	for _, o := range opts {
		o(c)
	}
	return c
}

// Identity is the identity the client names itself by ("" for none).
func (c *Client) Identity() string { return c.identity }

// subject is base for this client's identity.
func (c *Client) subject(base string) string { return wire.ClientSubject(base, c.identity) }

// Submit sends req and waits for the scheduler to record it: the answer is
// the job as recorded (PENDING, or the existing job when req repeats one). A
// refusal (invalid, denied, a job_id taken by different content) is a
// *RefusedError. An empty job_id is filled with a new UUID.
func (c *Client) Submit(ctx context.Context, req *pb.JobRequest, traceID string) (*pb.JobInfo, error) {
	if req.JobId == "" {
		req.JobId = uuid.NewString()
	}
	if traceID == "" {
		traceID = uuid.NewString()
	}
	inbox := c.bus.NewInbox()
	answers := make(chan *pb.JobAnswer, 1)
	drain, err := c.bus.Subscribe(inbox, "", func(p *pb.BusPacket) {
		if a := p.GetJobAnswer(); a != nil {
			select {
			case answers <- a:
			default:
			}
		}
	})
	if err != nil {
		return nil, err
	}
	defer func() { _ = drain() }()
	if err := c.bus.Flush(ctx); err != nil {
		return nil, err
	}
	if err := c.bus.PublishReplyTo(c.subject(wire.SubjectSubmit), wire.JobRequestPacket(traceID, c.senderID, req), inbox); err != nil {
		return nil, err
	}
	select {
	case a := <-answers:
		return answerJob(a)
	case <-ctx.Done():
		return nil, fmt.Errorf("no answer from a scheduler for job %s (%w); if the intake is durable, it is recorded when a scheduler runs", req.JobId, context.Cause(ctx))
	}
}

// Get returns a job.
func (c *Client) Get(ctx context.Context, jobID string) (*pb.JobInfo, error) {
	return c.one(ctx, c.subject(wire.SubjectQuery), c.query(&pb.JobQuery{JobId: jobID}))
}

// List returns up to limit jobs in state (UNSPECIFIED: any), newest first
// (0: 100). It asks for as many pages as it takes (ListUpTo).
func (c *Client) List(ctx context.Context, state pb.JobState, limit int) ([]*pb.JobInfo, error) {
	jobs, _, err := c.ListUpTo(ctx, ListOptions{State: state, Limit: limit})
	return jobs, err
}

// ListOptions selects jobs to list.
type ListOptions struct {
	State  pb.JobState // UNSPECIFIED: any
	Topic  string      // "": any
	Tenant string      // "": any
	// Limit is the jobs wanted: for ListPage the size of the page (0: the
	// scheduler's default, 100; it gives at most 1000), for ListUpTo the
	// total (0: 100).
	Limit int
	// PageToken continues a listing where a page ended; "": from the newest.
	PageToken string
}

// DefaultListLimit is the jobs List and ListUpTo return when asked for 0.
const DefaultListLimit = 100

// maxPageSize is the most jobs the scheduler puts in one page.
const maxPageSize = 1000

// ListPage asks for one page of jobs, newest first (the most recently
// written first), and returns it with the token of the next page ("" when
// there is none). The scheduler does bounded work for a page, so a page may
// hold fewer jobs than asked, even none, and still have a next page.
func (c *Client) ListPage(ctx context.Context, o ListOptions) (jobs []*pb.JobInfo, next string, err error) {
	a, err := c.ask(ctx, c.subject(wire.SubjectQuery), c.query(&pb.JobQuery{
		State: o.State, Topic: o.Topic, Tenant: o.Tenant, Limit: int32(min(max(o.Limit, 0), maxPageSize)), PageToken: o.PageToken,
	}))
	if err != nil {
		return nil, "", err
	}
	if !a.GetOk() {
		return nil, "", &RefusedError{Reason: a.GetError(), Retryable: a.GetRetryable(),
			RetryAfter: time.Duration(a.GetRetryAfterMs()) * time.Millisecond, RuleID: a.GetRuleId()}
	}
	return a.GetJobs(), a.GetNextPageToken(), nil
}

// ListUpTo reads pages from o.PageToken on until it has o.Limit jobs (0:
// 100) or there are no more, and returns them, newest first, with the token
// that continues after them ("" at the end).
func (c *Client) ListUpTo(ctx context.Context, o ListOptions) (jobs []*pb.JobInfo, next string, err error) {
	want := o.Limit
	if want <= 0 {
		want = DefaultListLimit
	}
	for {
		o.Limit = min(want-len(jobs), maxPageSize)
		page, token, err := c.ListPage(ctx, o)
		if err != nil {
			return nil, "", err
		}
		jobs = append(jobs, page...)
		if token == "" || len(jobs) >= want {
			return jobs, token, nil
		}
		o.PageToken = token
	}
}

// Cancel cancels a job in any non-terminal state.
func (c *Client) Cancel(ctx context.Context, jobID, reason string) (*pb.JobInfo, error) {
	p := wire.NewPacket(uuid.NewString(), c.senderID)
	p.Payload = &pb.BusPacket_JobCancel{JobCancel: &pb.JobCancel{JobId: jobID, Reason: reason}}
	return c.one(ctx, c.subject(wire.SubjectCancel), p)
}

// DeadLetters lists up to limit dead-lettered jobs, oldest first.
func (c *Client) DeadLetters(ctx context.Context, limit int) ([]*pb.JobInfo, error) {
	return c.many(ctx, c.subject(wire.SubjectQuery), c.query(&pb.JobQuery{DeadLetter: true, Limit: int32(limit)}))
}

// Redrive takes a job out of the dead-letter queue and runs its request again
// as a new job, which it returns.
func (c *Client) Redrive(ctx context.Context, jobID string) (*pb.JobInfo, error) {
	return c.one(ctx, c.subject(wire.SubjectQuery), c.query(&pb.JobQuery{JobId: jobID, DeadLetter: true, Redrive: true}))
}

// Workers lists the live workers a scheduler knows, with their capacity,
// load, capabilities, labels and last heartbeat.
func (c *Client) Workers(ctx context.Context) ([]*pb.WorkerInfo, error) {
	a, err := c.ask(ctx, c.subject(wire.SubjectQuery), c.query(&pb.JobQuery{Workers: true}))
	if err != nil {
		return nil, err
	}
	if !a.GetOk() {
		return nil, &RefusedError{Reason: a.GetError(), Retryable: a.GetRetryable()}
	}
	return a.GetWorkers(), nil
}

// Watch polls a job every interval, calling onChange with each new state,
// until the job is terminal (returned) or ctx ends.
func (c *Client) Watch(ctx context.Context, jobID string, interval time.Duration, onChange func(*pb.JobInfo)) (*pb.JobInfo, error) {
	if interval <= 0 {
		interval = 100 * time.Millisecond
	}
	var last *pb.JobInfo
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		// Each poll has its own bound: a scheduler that dies holding the
		// query never answers it, and the watch must go on asking.
		getCtx, cancel := context.WithTimeout(ctx, watchPollTimeout)
		job, err := c.Get(getCtx, jobID)
		cancel()
		if err != nil && !retryable(err) && ctx.Err() == nil {
			return nil, err
		}
		if job != nil {
			if last == nil || job.GetState() != last.GetState() || job.GetAttempt() != last.GetAttempt() ||
				job.GetPendingReason() != last.GetPendingReason() {
				if onChange != nil {
					onChange(job)
				}
				last = job
			}
			if lifecycle.Terminal(job.GetState()) {
				return job, nil
			}
		}
		select {
		case <-ctx.Done():
			return last, fmt.Errorf("job %s not finished: %w", jobID, context.Cause(ctx))
		case <-t.C:
		}
	}
}

// watchPollTimeout bounds each of Watch's queries.
var watchPollTimeout = 5 * time.Second

func retryable(err error) bool {
	var r *RefusedError
	if errors.As(err, &r) {
		return r.Retryable
	}
	return errors.Is(err, wire.ErrNoResponders) || errors.Is(err, context.DeadlineExceeded)
}

func (c *Client) query(q *pb.JobQuery) *pb.BusPacket {
	p := wire.NewPacket(uuid.NewString(), c.senderID)
	p.Payload = &pb.BusPacket_JobQuery{JobQuery: q}
	return p
}

func (c *Client) ask(ctx context.Context, subject string, p *pb.BusPacket) (*pb.JobAnswer, error) {
	reply, err := c.bus.Request(ctx, subject, p)
	if err != nil {
		if errors.Is(err, wire.ErrNoResponders) {
			return nil, fmt.Errorf("no scheduler is answering on %s: %w", subject, err)
		}
		return nil, err
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

func (c *Client) many(ctx context.Context, subject string, p *pb.BusPacket) ([]*pb.JobInfo, error) {
	a, err := c.ask(ctx, subject, p)
	if err != nil {
		return nil, err
	}
	if !a.GetOk() {
		return nil, &RefusedError{Reason: a.GetError(), Retryable: a.GetRetryable(),
			RetryAfter: time.Duration(a.GetRetryAfterMs()) * time.Millisecond, RuleID: a.GetRuleId()}
	}
	return a.GetJobs(), nil
}

func answerJob(a *pb.JobAnswer) (*pb.JobInfo, error) {
	var job *pb.JobInfo
	if len(a.GetJobs()) > 0 {
		job = a.GetJobs()[0]
	}
	if !a.GetOk() {
		return job, &RefusedError{Reason: a.GetError(), Retryable: a.GetRetryable(), RuleID: a.GetRuleId(), Job: job,
			RetryAfter: time.Duration(a.GetRetryAfterMs()) * time.Millisecond}
	}
	if job == nil {
		return nil, errors.New("client: answer without a job")
	}
	return job, nil
}
