package scheduler

import pb "github.com/cortex-os/core/pkg/pb/v1"

// cloneInfo copies a job record for editing. The request is shared, not
// copied: nothing edits a job's request once it is recorded. This is the
// per-change copy of the hot path, so it copies fields by hand instead of
// proto.Clone's reflection; TestCloneInfoCopiesEveryField keeps it complete.
func cloneInfo(j *pb.JobInfo) *pb.JobInfo {
	out := new(pb.JobInfo)
	copyInfo(out, j)
	return out
}

// copyInfo sets dst to a shallow copy of j (as cloneInfo), in place.
func copyInfo(dst, j *pb.JobInfo) {
	*dst = pb.JobInfo{
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

// cloneRequest copies a request. The environment map, requirements and
// payload are shared: nothing edits them.
func cloneRequest(r *pb.JobRequest) *pb.JobRequest {
	out := new(pb.JobRequest)
	copyRequest(out, r)
	return out
}

// copyRequest sets dst's fields to r's (a dispatch's copy, its attempt to be
// set), sharing maps and slices as cloneRequest does.
// TestCopyRequestCopiesEveryField keeps it complete.
func copyRequest(dst, r *pb.JobRequest) {
	dst.JobId = r.JobId
	dst.Topic = r.Topic
	dst.Priority = r.Priority
	dst.ContextPtr = r.ContextPtr
	dst.AdapterId = r.AdapterId
	dst.EnvVars = r.EnvVars
	dst.MaxAttempts = r.MaxAttempts
	dst.TimeoutMs = r.TimeoutMs
	dst.Attempt = r.Attempt
	dst.TtlMs = r.TtlMs
	dst.Tenant = r.Tenant
	dst.RequiredCapabilities = r.RequiredCapabilities
	dst.RequiredLabels = r.RequiredLabels
	dst.Payload = r.Payload
}
