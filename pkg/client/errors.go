package client

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cortex-os/core/internal/jobstore"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// Errors a Client returns, to match with errors.Is. A scheduler's refusal
// is a *RefusedError, which matches ErrRefused and, when the refusal is of
// a kind below, that kind as well:
//
//	var refused *client.RefusedError
//	switch {
//	case errors.Is(err, client.ErrThrottled) && errors.As(err, &refused):
//		time.Sleep(refused.RetryAfter)
//	case errors.Is(err, client.ErrDenied):
//		...
//	}
var (
	// ErrRefused: the scheduler said no. Every *RefusedError matches it.
	ErrRefused = errors.New("refused")
	// ErrInvalid: the request can never succeed as it is (an empty job
	// id, a topic that is not a job subject, a negative limit). The client
	// refuses some before sending; the scheduler refuses the rest.
	ErrInvalid = errors.New("invalid request")
	// ErrDenied: the safety policy denied the job (RefusedError.RuleID
	// names the rule). The job is recorded DENIED.
	ErrDenied = errors.New("denied")
	// ErrThrottled: not now; the same request may succeed after
	// RefusedError.RetryAfter (a policy's rate limit, RuleID naming it, or a
	// full placement queue).
	ErrThrottled = errors.New("throttled")
	// ErrConflict: the job's state does not allow it: a job_id already
	// taken by a job with different content, or a cancel of a job that has
	// ended (RefusedError.Job is that job).
	ErrConflict = errors.New("conflict")
	// ErrNotFound: no such job (or no such dead letter).
	ErrNotFound = errors.New("not found")
	// ErrNoScheduler: the request reached no scheduler: nothing subscribes
	// to its subject. A submission to a durable intake (JetStream) is kept
	// until a scheduler runs, so a missing scheduler shows there as a
	// request that is not answered in time (context.DeadlineExceeded).
	ErrNoScheduler = errors.New("no scheduler is answering")
)

// RefusedError is the scheduler's "no" to a submission, query, cancel or
// re-drive.
type RefusedError struct {
	// Reason is the scheduler's words.
	Reason string
	// Retryable: the same request may succeed later.
	Retryable bool
	// RetryAfter, with Retryable: not sooner than this (a throttle).
	RetryAfter time.Duration
	// RuleID is the policy rule that denied or throttled it.
	RuleID string
	// Job is the job concerned, when there is one: a DENIED job, or the
	// ended job a cancel found.
	Job *pb.JobInfo

	kind error // ErrDenied, ErrThrottled, ...; nil for another refusal
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

// Is makes errors.Is(err, ErrRefused) true, and errors.Is(err, kind) for the
// refusal's kind (ErrDenied, ErrThrottled, ErrConflict, ErrNotFound,
// ErrInvalid).
func (e *RefusedError) Is(target error) bool {
	return target == ErrRefused || (e.kind != nil && target == e.kind)
}

// refused turns a JobAnswer that is not ok into a *RefusedError.
func refused(a *pb.JobAnswer, job *pb.JobInfo) *RefusedError {
	e := &RefusedError{
		Reason:     a.GetError(),
		Retryable:  a.GetRetryable(),
		RetryAfter: time.Duration(a.GetRetryAfterMs()) * time.Millisecond,
		RuleID:     a.GetRuleId(),
		Job:        job,
	}
	if e.RuleID == "" {
		e.RuleID = job.GetRuleId()
	}
	e.kind = refusalKind(a, job)
	return e
}

// refusalKind reads what kind of refusal an answer is. The wire carries no
// code, so the kind is read from what the scheduler sets: the job's state,
// retryable with a retry-after, and the words of its errors (the tests of
// this package hold them against a real scheduler).
func refusalKind(a *pb.JobAnswer, job *pb.JobInfo) error {
	msg := a.GetError()
	switch {
	case job.GetState() == pb.JobState_JOB_STATE_DENIED:
		return ErrDenied
	case a.GetRetryable() && a.GetRetryAfterMs() > 0:
		return ErrThrottled
	case a.GetRetryable():
		return nil // the store, say: try again
	case strings.HasPrefix(msg, "conflict: "), job != nil && strings.HasPrefix(msg, "job already "):
		return ErrConflict
	case strings.Contains(msg, jobstore.ErrNotFound.Error()):
		return ErrNotFound
	case job == nil:
		return ErrInvalid // a request no retry can fix
	}
	return nil
}

// invalid is a request the client refuses before sending it.
func invalid(format string, args ...any) error {
	return fmt.Errorf("client: %w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}
