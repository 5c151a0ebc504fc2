package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/cortex-os/core/internal/jobstore"
	"github.com/cortex-os/core/internal/lifecycle"
	"github.com/cortex-os/core/internal/tenancy"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// queries answers the requests that come as queries and cancels
// (sys.job.query[.<identity>], sys.job.cancel[.<identity>]): a job's get,
// a page of the job list, the dead letters and their re-drive, the live
// workers, a cancel. It holds no job state of its own: it reads the job
// store and the dead-letter queue, and reaches the other parts directly:
// requesters (who asks), the job cache (compare-and-set), the placer (why
// a job waits, the workers) and admission (a re-drive). Its subscriptions ("queries", "cancels") are parts the engine
// starts and stops (parts.go); it has no loop of its own.
type queries struct {
	id    string // the sender id of answers and cancel notices
	log   *slog.Logger
	bus   Bus
	store JobStore
	dead  DeadLetters
	stats *counters

	requesters *requesters
	cache      *jobCache
	placer     *placer
	admission  *admission
}

// serveCancel and serveQuery answer a cancel or query that came on subject
// (sys.job.<verb>[.<identity>]) with its NATS reply subject reply, once
// its requester is known and reply is its own (identify); nil means no
// answer.
func (qs *queries) serveCancel(subject, reply string, p *pb.BusPacket, decodeErr error) *pb.BusPacket {
	return qs.serve(wire.SubjectCancel, subject, reply, p, decodeErr, qs.handleCancel)
}

func (qs *queries) serveQuery(subject, reply string, p *pb.BusPacket, decodeErr error) *pb.BusPacket {
	return qs.serve(wire.SubjectQuery, subject, reply, p, decodeErr, qs.handleQuery)
}

func (qs *queries) serve(base, subject, reply string, p *pb.BusPacket, decodeErr error,
	handle func(tenancy.Principal, *pb.BusPacket) *pb.BusPacket) *pb.BusPacket {
	who, drop, err := qs.requesters.identify(base, subject, reply)
	switch {
	case drop:
		return nil
	case decodeErr != nil: // the sender is waiting: tell it what was wrong
		return qs.answer(nil, refusal(decodeErr.Error(), false))
	case err != nil:
		return qs.answer(p, refusal(err.Error(), false))
	}
	return handle(who, p)
}

// notFound is the answer about a job that does not exist, or that the
// requester may not see: the two are not told apart.
func (qs *queries) notFound(p *pb.BusPacket, what, id string) *pb.BusPacket {
	return qs.answer(p, refusal(fmt.Sprintf("%s %s: %v", what, id, jobstore.ErrNotFound), false))
}

func (qs *queries) handleCancel(who tenancy.Principal, p *pb.BusPacket) *pb.BusPacket {
	c := p.GetJobCancel()
	if c == nil {
		return qs.answer(p, refusal("sys.job.cancel takes a job_cancel packet", false))
	}
	if err := validateCancel(c); err != nil {
		qs.stats.invalidPackets.Add(1)
		return qs.answer(p, refusal(err.Error(), false))
	}
	ctx, cancel := storeCtx()
	defer cancel()
	rec, err := qs.store.Get(ctx, c.GetJobId())
	if err != nil {
		return qs.answer(p, refusal(fmt.Sprintf("job %s: %v", c.GetJobId(), err), storeRetryable(err)))
	}
	if !who.Sees(rec.Job.GetRequest().GetTenant()) {
		return qs.notFound(p, "job", c.GetJobId())
	}
	reason := c.GetReason()
	if reason == "" {
		reason = "cancelled by request"
	}
	var was *pb.JobInfo
	rec, written, err := qs.cache.mutate(rec, func(j *pb.JobInfo) bool {
		if lifecycle.Terminal(j.State) {
			return false
		}
		was = cloneInfo(j)
		j.State = lifecycle.Cancelled
		j.Error = reason
		return true
	})
	if err != nil {
		return qs.answer(p, refusal(err.Error(), true))
	}
	if !written {
		return qs.answer(p, &pb.JobAnswer{Error: "job already " + lifecycle.Name(rec.Job.GetState()), Jobs: []*pb.JobInfo{rec.Job}})
	}
	qs.stats.cancelled.Add(1)
	if w := was.GetWorkerId(); w != "" && workerSubjectOK(qs.log, rec.Job.GetJobId(), w) {
		// Tell the worker, so the handler's context is cancelled.
		msg := wire.NewPacket(rec.Job.TraceId, qs.id)
		msg.Payload = &pb.BusPacket_JobCancel{JobCancel: &pb.JobCancel{JobId: rec.Job.JobId, Reason: reason}}
		if err := qs.bus.Publish(wire.WorkerCancelSubject(w), msg); err != nil {
			qs.log.Warn("telling the worker of a cancel failed", "job_id", rec.Job.JobId, "worker_id", w, "err", err)
		}
	}
	qs.log.Info("job cancelled", "job_id", rec.Job.JobId, "was", lifecycle.Name(was.GetState()), "reason", reason)
	return qs.answer(p, &pb.JobAnswer{Ok: true, Jobs: []*pb.JobInfo{rec.Job}})
}

func (qs *queries) handleQuery(who tenancy.Principal, p *pb.BusPacket) *pb.BusPacket {
	q := p.GetJobQuery()
	if q == nil {
		return qs.answer(p, refusal("sys.job.query takes a job_query packet", false))
	}
	if err := validateQuery(q); err != nil {
		qs.stats.invalidPackets.Add(1)
		return qs.answer(p, refusal(err.Error(), false))
	}
	ctx, cancel := storeCtx()
	defer cancel()
	limit := int(q.GetLimit())
	if limit <= 0 {
		limit = 100
	}
	switch {
	case q.GetWorkers():
		return qs.answer(p, &pb.JobAnswer{Ok: true, Workers: qs.placer.workersFor(who)})
	case q.GetDeadLetter() && q.GetRedrive():
		return qs.answer(p, qs.redrive(ctx, who, q.GetJobId()))
	case q.GetDeadLetter():
		jobs, err := qs.deadLetters(ctx, who, limit)
		if err != nil {
			return qs.answer(p, refusal(err.Error(), true))
		}
		return qs.answer(p, &pb.JobAnswer{Ok: true, Jobs: jobs})
	case q.GetJobId() != "":
		rec, err := qs.store.Get(ctx, q.GetJobId())
		if errors.Is(err, jobstore.ErrNotFound) {
			if n := qs.intakeBacklog(ctx); n > 0 {
				// Its submission may be one of those received and not yet
				// recorded: not a "not found" to give up on.
				qs.stats.notYetRecorded.Add(1)
				return qs.answer(p, refusal(fmt.Sprintf("job %s: %s (%d submissions received are being recorded); ask again",
					q.GetJobId(), NotRecordedYet, n), true))
			}
		}
		if err != nil {
			return qs.answer(p, refusal(fmt.Sprintf("job %s: %v", q.GetJobId(), err), storeRetryable(err)))
		}
		if !who.Sees(rec.Job.GetRequest().GetTenant()) {
			return qs.notFound(p, "job", q.GetJobId())
		}
		job := rec.Job
		if r := qs.placer.pendingReason(job); r != "" && r != job.GetPendingReason() {
			job = cloneInfo(job) // why it waits now, as this replica's queues see it
			job.PendingReason = r
		}
		return qs.answer(p, &pb.JobAnswer{Ok: true, Jobs: []*pb.JobInfo{job}})
	default:
		return qs.answer(p, qs.listPage(ctx, who, q, limit))
	}
}

// deadLetters lists up to limit dead letters the requester may see, oldest
// first.
func (qs *queries) deadLetters(ctx context.Context, who tenancy.Principal, limit int) ([]*pb.JobInfo, error) {
	if !who.Restricted() {
		return qs.dead.List(ctx, limit)
	}
	jobs, err := qs.dead.List(ctx, 0)
	if err != nil {
		return nil, err
	}
	jobs = slices.DeleteFunc(jobs, func(j *pb.JobInfo) bool { return !who.Sees(j.GetRequest().GetTenant()) })
	if len(jobs) > limit {
		jobs = jobs[:limit]
	}
	return jobs, nil
}

// NotRecordedYet is the answer to a get of a job the store does not hold
// while submissions received are still being recorded: it may be one of
// them, so the answer is retryable, not "not found".
const NotRecordedYet = "not recorded yet"

// intakeBacklog is how many submissions the bus has received and not yet
// handed back (0 when it cannot tell): over core NATS those this replica
// holds, with durable intake those the shared stream holds.
func (qs *queries) intakeBacklog(ctx context.Context) int {
	n, err := qs.bus.Backlog(ctx, wire.SubjectSubmit)
	if err != nil {
		qs.log.Warn("reading the intake backlog failed", "err", err)
	}
	return n
}

// maxListAnswerBytes bounds the jobs of one list answer, well under the
// bus's packet limit (1 MiB by default): a page of large jobs ends early,
// with a token for the rest.
const maxListAnswerBytes = 512 << 10

// listPage answers a list query with one page of the store, newest first:
// bounded work per query (jobstore.PageQuery), whatever the store holds.
func (qs *queries) listPage(ctx context.Context, who tenancy.Principal, q *pb.JobQuery, limit int) *pb.JobAnswer {
	tenant := q.GetTenant()
	if who.Restricted() { // its tenant's jobs only: another tenant's look like none
		if tenant != "" && !who.Sees(tenant) {
			return &pb.JobAnswer{Ok: true}
		}
		tenant = who.Tenant
	}
	page, err := qs.store.ListPage(ctx, jobstore.PageQuery{
		Filter: jobstore.Filter{State: q.GetState(), Topic: q.GetTopic(), Tenant: tenant},
		Token:  q.GetPageToken(),
		Size:   limit,
	})
	if errors.Is(err, jobstore.ErrBadPageToken) {
		return refusal("page_token: "+err.Error(), false)
	}
	if err != nil {
		return refusal(err.Error(), true)
	}
	a := &pb.JobAnswer{Ok: true, NextPageToken: page.Next, Jobs: make([]*pb.JobInfo, 0, len(page.Records))}
	size := 0
	for i, r := range page.Records {
		job := r.Job
		if why := qs.placer.pendingReason(job); why != "" && why != job.GetPendingReason() {
			job = cloneInfo(job) // why it waits now, as in job get
			job.PendingReason = why
		}
		if size += job.SizeVT(); size > maxListAnswerBytes && i > 0 {
			a.NextPageToken = jobstore.PageTokenBefore(page.Records[i-1].Revision)
			break
		}
		a.Jobs = append(a.Jobs, job)
	}
	return a
}

// redrive takes a job out of the dead-letter queue and submits its request
// again as a new job, <job_id>-redrive-<n>: the failed job itself stays
// FAILED, as every terminal job does. A dead letter the requester may not
// see is, to it, one that does not exist.
func (qs *queries) redrive(ctx context.Context, who tenancy.Principal, id string) *pb.JobAnswer {
	notFound := refusal(fmt.Sprintf("dead letter %s: %v", id, jobstore.ErrNotFound), false)
	if who.Restricted() {
		// Look before taking: another tenant's dead letter stays where it is.
		if rec, err := qs.store.Get(ctx, id); err == nil && !who.Sees(rec.Job.GetRequest().GetTenant()) {
			return notFound
		}
	}
	job, err := qs.dead.Take(ctx, id)
	if err != nil {
		return refusal(fmt.Sprintf("dead letter %s: %v", id, err), storeRetryable(err))
	}
	if !who.Sees(job.GetRequest().GetTenant()) { // the record said otherwise: put it back
		if err := qs.dead.Put(ctx, job); err != nil {
			qs.log.Error("returning a dead letter failed", "job_id", id, "err", err)
		}
		return notFound
	}
redrive:
	for n := 1; n <= 100; n++ {
		req := proto.CloneOf(job.GetRequest())
		req.JobId = fmt.Sprintf("%s-redrive-%d", id, n)
		req.Attempt = 0
		answer, created, err := qs.admission.admit(req, job.GetTraceId(), true)
		switch {
		case err != nil:
			break redrive
		case created: // a new job, PENDING or DISPATCHED (or DENIED by today's policy)
			qs.log.Info("dead letter re-driven", "job_id", id, "new_job_id", req.JobId, "ok", answer.GetOk())
			return answer
		case answer.GetOk() || strings.HasPrefix(answer.GetError(), conflictPrefix):
			continue // that id was taken by an earlier re-drive: try the next
		default:
			break redrive
		}
	}
	// Put it back: nothing may be lost on the way.
	if err := qs.dead.Put(ctx, job); err != nil {
		qs.log.Error("returning a dead letter failed", "job_id", id, "err", err)
	}
	return refusal("re-driving "+id+" failed; it stays in the dead-letter queue", true)
}

// storeRetryable reports whether asking again may be answered otherwise: not
// for a job that does not exist, nor for an id no job can have.
func storeRetryable(err error) bool {
	return !errors.Is(err, jobstore.ErrNotFound) && !errors.Is(err, jobstore.ErrInvalidID)
}

func (qs *queries) answer(p *pb.BusPacket, a *pb.JobAnswer) *pb.BusPacket {
	out := wire.NewPacket(p.GetTraceId(), qs.id)
	out.Payload = &pb.BusPacket_JobAnswer{JobAnswer: a}
	return out
}
