package gateway

import (
	"strings"
	"time"

	"github.com/cortex-os/core/pkg/client"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// timeLayout is RFC 3339 with milliseconds, in UTC, as the cortex command
// prints times.
const timeLayout = "2006-01-02T15:04:05.000Z07:00"

// Job is a job as the API returns it: the fields, names and formats of
// `cortex job get --json` (cmd/cortex's jobView).
type Job struct {
	JobID          string            `json:"job_id"`
	State          string            `json:"state"`
	Attempts       int32             `json:"attempts"`
	MaxAttempts    int32             `json:"max_attempts"`
	FailedAttempts int32             `json:"failed_attempts"`
	WorkerID       string            `json:"worker_id"`
	ResultPtr      string            `json:"result_ptr"`
	Error          string            `json:"error"`
	PendingReason  string            `json:"pending_reason"`
	Topic          string            `json:"topic"`
	Priority       string            `json:"priority"`
	ContextPtr     string            `json:"context_ptr,omitempty"`
	Env            map[string]string `json:"env,omitempty"`
	TraceID        string            `json:"trace_id"`
	Created        string            `json:"created"`
	Updated        string            `json:"updated"`
	AttemptStarted string            `json:"attempt_started,omitempty"`
	NextAttempt    string            `json:"next_attempt,omitempty"`
	Deadline       string            `json:"deadline,omitempty"`
	ExecutionMs    int64             `json:"execution_ms"`
	DeadLetter     bool              `json:"dead_letter"`
	Tenant         string            `json:"tenant,omitempty"`
	Pool           string            `json:"pool,omitempty"`
	RuleID         string            `json:"rule_id,omitempty"`
	PolicyVersion  string            `json:"policy_version,omitempty"`
}

// JobOf is j as the API returns it.
func JobOf(j *pb.JobInfo) Job {
	req := j.GetRequest()
	return Job{
		JobID:          j.GetJobId(),
		State:          client.StateName(j.GetState()),
		Attempts:       j.GetAttempt(),
		MaxAttempts:    j.GetMaxAttempts(),
		FailedAttempts: j.GetFailedAttempts(),
		WorkerID:       j.GetWorkerId(),
		ResultPtr:      j.GetResultPtr(),
		Error:          j.GetError(),
		PendingReason:  j.GetPendingReason(),
		Topic:          req.GetTopic(),
		Priority:       PriorityName(req.GetPriority()),
		ContextPtr:     req.GetContextPtr(),
		Env:            req.GetEnvVars(),
		TraceID:        j.GetTraceId(),
		Created:        formatMs(j.GetCreatedMs()),
		Updated:        formatMs(j.GetUpdatedMs()),
		AttemptStarted: formatMs(j.GetAttemptStartedMs()),
		NextAttempt:    formatMs(j.GetNextAttemptMs()),
		Deadline:       formatMs(j.GetDeadlineMs()),
		ExecutionMs:    j.GetExecutionMs(),
		DeadLetter:     j.GetDeadLetter(),
		Tenant:         req.GetTenant(),
		Pool:           j.GetPool(),
		RuleID:         j.GetRuleId(),
		PolicyVersion:  j.GetPolicyVersion(),
	}
}

func formatMs(ms int64) string {
	if ms <= 0 {
		return ""
	}
	return time.UnixMilli(ms).UTC().Format(timeLayout)
}

// PriorityName is a priority as the cortex command prints it: batch,
// interactive, critical ("unspecified" for none).
func PriorityName(p pb.JobPriority) string {
	return strings.ToLower(strings.TrimPrefix(p.String(), "JOB_PRIORITY_"))
}
