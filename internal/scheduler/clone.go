package scheduler

import pb "github.com/cortex-os/core/pkg/pb/v1"

// cloneInfo copies a job record for editing. The request is shared, not
// copied: nothing edits a job's request once it is recorded. This is the
// per-change copy of the hot path, so it copies fields by hand instead of
// proto.Clone's reflection; TestCloneInfoCopiesEveryField keeps it complete.
func cloneInfo(j *pb.JobInfo) *pb.JobInfo {
	return &pb.JobInfo{
		JobId:            j.JobId,
		State:            j.State,
		Attempt:          j.Attempt,
		MaxAttempts:      j.MaxAttempts,
		WorkerId:         j.WorkerId,
		ResultPtr:        j.ResultPtr,
		Error:            j.Error,
		PendingReason:    j.PendingReason,
		TraceId:          j.TraceId,
		Request:          j.Request,
		CreatedMs:        j.CreatedMs,
		UpdatedMs:        j.UpdatedMs,
		NextAttemptMs:    j.NextAttemptMs,
		DeadlineMs:       j.DeadlineMs,
		ExecutionMs:      j.ExecutionMs,
		DeadLetter:       j.DeadLetter,
		AttemptStartedMs: j.AttemptStartedMs,
		FailedAttempts:   j.FailedAttempts,
		RuleId:           j.RuleId,
		PolicyVersion:    j.PolicyVersion,
		Pool:             j.Pool,
		AwaitingSafety:   j.AwaitingSafety,
	}
}

// cloneRequest copies a request to dispatch (with its attempt set). The
// environment map, requirements and payload are shared: nothing edits them.
func cloneRequest(r *pb.JobRequest) *pb.JobRequest {
	return &pb.JobRequest{
		JobId:                r.JobId,
		Topic:                r.Topic,
		Priority:             r.Priority,
		ContextPtr:           r.ContextPtr,
		AdapterId:            r.AdapterId,
		EnvVars:              r.EnvVars,
		MaxAttempts:          r.MaxAttempts,
		TimeoutMs:            r.TimeoutMs,
		Attempt:              r.Attempt,
		TtlMs:                r.TtlMs,
		Tenant:               r.Tenant,
		RequiredCapabilities: r.RequiredCapabilities,
		RequiredLabels:       r.RequiredLabels,
		Payload:              r.Payload,
	}
}
