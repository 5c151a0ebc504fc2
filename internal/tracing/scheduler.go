package tracing

import (
	"context"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/cortex-os/core/internal/lifecycle"
	"github.com/cortex-os/core/internal/safety"
	"github.com/cortex-os/core/internal/scheduler"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// Headers is the bus's side of trace propagation (bus.NatsBus): the
// traceparent a received packet came with, and the one to send with the
// packets of a trace id.
type Headers interface {
	TakeTraceparent(traceID string) string
	SetTraceparent(traceID, tp string)
}

// Scheduler records the scheduler's spans of each job, as a
// scheduler.Observer: admission (with the decision and rule), placement
// (the queue wait, from PENDING to DISPATCHED), dispatch (from DISPATCHED
// to the worker's confirmation) and result, all children of the client's
// submit span, whose context came in the submission's traceparent header.
// The dispatch's span context goes out in the dispatch's header, so that
// the worker's run is its child; the result span is the child of the
// worker's run, whose context came with the result.
//
// The spans are built from the job's records (their times are the
// records'), on the engine's goroutines, when a record is written.
type Scheduler struct {
	h      Headers
	tracer trace.Tracer

	mu   sync.Mutex
	jobs map[string]*jobSpans
}

type jobSpans struct {
	parent   context.Context // the submit span's context
	dispatch trace.Span      // open from DISPATCHED to RUNNING or the attempt's end
}

var _ scheduler.Observer = (*Scheduler)(nil)

// NewScheduler returns the scheduler's tracing observer on h.
func NewScheduler(h Headers) *Scheduler {
	return &Scheduler{h: h, tracer: Tracer(), jobs: map[string]*jobSpans{}}
}

// maxTracedJobs bounds the active jobs whose spans a scheduler keeps.
const maxTracedJobs = 1 << 17

func ms(v int64) time.Time { return time.UnixMilli(v) }

func jobAttrs(j *pb.JobInfo) []attribute.KeyValue {
	return []attribute.KeyValue{
		attribute.String("cortex.job_id", j.GetJobId()),
		attribute.String("cortex.topic", j.GetRequest().GetTopic()),
		attribute.Int("cortex.attempt", int(j.GetAttempt())),
	}
}

// SafetyDecided implements scheduler.Observer: a throttled submission is
// never recorded, so its admission span is made here.
func (s *Scheduler) SafetyDecided(req *pb.JobRequest, traceID string, v safety.Verdict) {
	if v.Decision != safety.Throttle {
		return
	}
	ctx := Parent(context.Background(), traceID, s.h.TakeTraceparent(traceID))
	_, sp := s.tracer.Start(ctx, SpanAdmission, trace.WithAttributes(
		attribute.String("cortex.job_id", req.GetJobId()), attribute.String("cortex.topic", req.GetTopic()),
		attribute.String("cortex.decision", v.Decision.String()), attribute.String("cortex.rule_id", v.RuleID),
		attribute.String("cortex.policy_version", v.PolicyVersion)))
	sp.End()
}

// JobRecorded implements scheduler.Observer.
func (s *Scheduler) JobRecorded(prev, next *pb.JobInfo) {
	id := next.GetJobId()
	s.mu.Lock()
	defer s.mu.Unlock()
	js := s.jobs[id]
	if js == nil {
		var tp string
		if prev == nil {
			tp = s.h.TakeTraceparent(next.GetTraceId())
		}
		js = &jobSpans{parent: Parent(context.Background(), next.GetTraceId(), tp)}
		if lifecycle.Active(next.GetState()) {
			if len(s.jobs) >= maxTracedJobs {
				// Jobs another replica finished are never seen ending
				// here: start over rather than grow (their later spans
				// still land in their traces, under a derived parent).
				s.jobs = map[string]*jobSpans{}
			}
			s.jobs[id] = js
		}
	}
	now := time.Now()
	if prev == nil {
		decision := "allow"
		switch {
		case next.GetState() == lifecycle.Denied:
			decision = "deny"
		case next.GetAwaitingSafety():
			decision = "unavailable"
		}
		_, sp := s.tracer.Start(js.parent, SpanAdmission, trace.WithTimestamp(ms(next.GetCreatedMs())), trace.WithAttributes(append(jobAttrs(next),
			attribute.String("cortex.decision", decision), attribute.String("cortex.rule_id", next.GetRuleId()),
			attribute.String("cortex.policy_version", next.GetPolicyVersion()), attribute.String("cortex.pool", next.GetPool()))...))
		if decision == "deny" {
			sp.SetStatus(codes.Error, next.GetError())
		}
		sp.End(trace.WithTimestamp(now))
	}
	from, to := prev.GetState(), next.GetState()
	if from == to && prev.GetAttempt() == next.GetAttempt() {
		return
	}
	switch {
	case to == lifecycle.Dispatched:
		since := next.GetCreatedMs()
		if prev != nil {
			since = prev.GetUpdatedMs()
		}
		_, sp := s.tracer.Start(js.parent, SpanPlacement, trace.WithTimestamp(ms(since)),
			trace.WithAttributes(append(jobAttrs(next), attribute.String("cortex.pool", next.GetPool()))...))
		sp.End(trace.WithTimestamp(ms(next.GetUpdatedMs())))
		if js.dispatch != nil {
			js.dispatch.End()
		}
		_, js.dispatch = s.tracer.Start(js.parent, SpanDispatch, trace.WithTimestamp(ms(next.GetUpdatedMs())),
			trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(jobAttrs(next)...))
		s.h.SetTraceparent(next.GetTraceId(), Traceparent(js.dispatch.SpanContext()))
	case to == lifecycle.Running:
		if js.dispatch != nil {
			js.dispatch.SetAttributes(attribute.String("cortex.worker_id", next.GetWorkerId()))
			js.dispatch.End(trace.WithTimestamp(now))
		}
	case lifecycle.Terminal(to) || to == lifecycle.Pending:
		if from == lifecycle.Dispatched || from == lifecycle.Running {
			s.result(js, prev, next, now)
		}
	}
	if lifecycle.Terminal(to) {
		delete(s.jobs, id)
		s.h.SetTraceparent(next.GetTraceId(), "")
		if js.dispatch != nil {
			js.dispatch.End(trace.WithTimestamp(now))
		}
	}
}

// result records the end of an attempt: the worker's result (its run's
// context came with it), or the scheduler's giving up on the attempt.
func (s *Scheduler) result(js *jobSpans, prev, next *pb.JobInfo, now time.Time) {
	parent := js.parent
	if sc := Remote(s.h.TakeTraceparent(next.GetTraceId())); sc.IsValid() {
		parent = trace.ContextWithRemoteSpanContext(context.Background(), sc)
	} else if js.dispatch != nil {
		parent = trace.ContextWithSpan(context.Background(), js.dispatch)
	}
	if js.dispatch != nil {
		js.dispatch.End(trace.WithTimestamp(now)) // ended already when RUNNING
		js.dispatch = nil
	}
	_, sp := s.tracer.Start(parent, SpanResult, trace.WithTimestamp(now), trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(append(jobAttrs(prev), attribute.String("cortex.state", lifecycle.Name(next.GetState())),
			attribute.String("cortex.worker_id", prev.GetWorkerId()))...))
	if st := next.GetState(); st != lifecycle.Completed {
		sp.SetStatus(codes.Error, firstNonEmpty(next.GetError(), next.GetPendingReason()))
	}
	sp.End(trace.WithTimestamp(now))
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}
