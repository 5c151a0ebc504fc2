package scheduler

import (
	"errors"
	"fmt"
	"github.com/cortex-os/core/pkg/wire"
	"math"
	"strings"
	"unicode/utf8"

	"github.com/cortex-os/core/internal/jobstore"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// Limits on fields. Everything the scheduler takes from the bus (a
// submission, a worker's heartbeat, result or confirmation, a cancel or a
// query) is checked against the bounds below before any of it is stored,
// indexed, or put into a subject: a job lives in memory and in the job store
// while it is active, its tenant and requirements index queues and
// throttles, and its topic and ids become NATS subjects, which the server
// takes only up to its protocol line (max_control_line, 4096 bytes by
// default: a longer one closes the connection for good). The rules are
// tables, one per message, listed by FieldLimits and in docs/security.md
// ("Limits on fields"); a test holds the two together.
const (
	// MaxTopicLength bounds a topic, the subject a job is dispatched on.
	MaxTopicLength = wire.MaxTopicLength
	// MaxJobIDLength bounds a job id (jobstore.MaxIDLength).
	MaxJobIDLength = jobstore.MaxIDLength
	// MaxWorkerIDLength bounds a worker id, which names the subjects
	// sys.worker.<id>.job and sys.worker.<id>.cancel.
	MaxWorkerIDLength = 256
	// MaxTraceIDLength bounds a packet's trace_id, which is stored with its job.
	MaxTraceIDLength = 128
	// MaxTenantLength bounds a tenant.
	MaxTenantLength = 128
	// MaxNameLength bounds a capability, a label or env var key,
	// adapter_id, a worker's region, type and pool.
	MaxNameLength = 128
	// MaxValueLength bounds a label or env var value, context_ptr, result_ptr.
	MaxValueLength = 4096
	// MaxListLength bounds the lists and maps of placement: capabilities,
	// labels, a worker's topics.
	MaxListLength = 64
	// MaxEnvVars bounds env_vars.
	MaxEnvVars = 256
	// MaxPayloadBytes bounds a request's inline payload.
	MaxPayloadBytes = 256 << 10
	// MaxRequestBytes bounds a whole encoded request, so that its dispatch
	// (the request and an envelope) fits in a packet of the bus (1 MiB).
	MaxRequestBytes = 512 << 10
	// MaxAttemptsLimit bounds max_attempts.
	MaxAttemptsLimit = 100
	// MaxDurationMs bounds timeout_ms and ttl_ms: 30 days.
	MaxDurationMs = 30 * 24 * 3600 * 1000
	// MaxTextLength bounds free text: a cancel's reason; a worker's error
	// or refusal longer than this is cut, not refused.
	MaxTextLength = 4096
	// MaxHeldJobs bounds the jobs one heartbeat lists as held.
	MaxHeldJobs = 4096
	// MaxIntervalMs bounds a heartbeat's interval_ms: one hour.
	MaxIntervalMs = 3600 * 1000
	// MaxCapacity bounds a heartbeat's capacity.
	MaxCapacity = 1 << 20
)

// ErrInvalidField is wrapped by every FieldError.
var ErrInvalidField = errors.New("invalid field")

// FieldError is a field out of its bounds. Error names the field as its
// message spells it (topic, env_vars["K"], held[3].job_id).
type FieldError struct {
	Field  string
	Reason string
	// Err is a more specific cause, if any: ErrEmptyTopic, ErrInvalidTopic,
	// jobstore.ErrInvalidID.
	Err error
}

func (e *FieldError) Error() string { return "invalid " + e.Field + ": " + e.Reason }

// Unwrap gives ErrInvalidField and the specific cause.
func (e *FieldError) Unwrap() []error {
	if e.Err == nil {
		return []error{ErrInvalidField}
	}
	return []error{ErrInvalidField, e.Err}
}

func fieldErr(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// Limit is one bound, as docs/security.md lists it.
type Limit struct {
	Message string // JobRequest, Heartbeat, ...
	Field   string
	Bound   string
}

// rule is one row of a message's table: the field, its documented bound and
// the check, which gets the field's name to build its error with.
type rule[T any] struct {
	field string
	bound string
	check func(field string, m T) error
}

func apply[T any](rules []rule[T], m T) error {
	for i := range rules {
		if err := rules[i].check(rules[i].field, m); err != nil {
			return err
		}
	}
	return nil
}

func limits[T any](message string, rules []rule[T]) []Limit {
	out := make([]Limit, len(rules))
	for i, r := range rules {
		out[i] = Limit{Message: message, Field: r.field, Bound: r.bound}
	}
	return out
}

// FieldLimits lists every bound, message by message.
func FieldLimits() []Limit {
	var out []Limit
	out = append(out, limits("BusPacket", packetRules)...)
	out = append(out, limits("JobRequest", requestRules)...)
	out = append(out, limits("JobResult", resultRules)...)
	out = append(out, limits("Heartbeat", heartbeatRules)...)
	out = append(out, limits("JobAck", ackRules)...)
	out = append(out, limits("JobCancel", cancelRules)...)
	out = append(out, limits("JobQuery", queryRules)...)
	return out
}

// Documented bounds shared by several rules.
const (
	boundJobID    = "required; letters, digits, `-` `_` `=` and inner `.`; at most 256 bytes"
	boundWorkerID = "required; one subject token (no `.` `*` `>`, blank or control character); at most 256 bytes"
	boundName     = "at most 128 bytes, no control character"
	boundList     = "at most 64 entries, each 1 to 128 bytes, no control character"
	boundMap      = "at most 64 entries; key 1 to 128 bytes, no control character; value at most 4096 bytes"
	boundTopic    = "`job.<token>[.<token>…]`: no empty, wildcard or blank token, no control character; at most 255 bytes"
)

// ---- the messages' tables ----

var packetRules = []rule[*pb.BusPacket]{
	{"trace_id", "at most 128 bytes, no control character (of a submission: it is stored)", func(f string, p *pb.BusPacket) error {
		return validName(f, p.GetTraceId(), MaxTraceIDLength)
	}},
}

var requestRules = []rule[*pb.JobRequest]{
	{"job_id", boundJobID, func(f string, r *pb.JobRequest) error { return validJobID(f, r.GetJobId()) }},
	{"topic", boundTopic, func(f string, r *pb.JobRequest) error {
		if r.GetTopic() == ForbiddenTopic {
			return nil // the safety check answers for it
		}
		return validTopic(f, r.GetTopic())
	}},
	{"priority", "a JobPriority value (0 to 3)", func(f string, r *pb.JobRequest) error {
		return validEnum(f, int32(r.GetPriority()), pb.JobPriority_name)
	}},
	{"tenant", boundName, func(f string, r *pb.JobRequest) error { return validName(f, r.GetTenant(), MaxTenantLength) }},
	{"adapter_id", boundName, func(f string, r *pb.JobRequest) error { return validName(f, r.GetAdapterId(), MaxNameLength) }},
	{"context_ptr", "at most 4096 bytes", func(f string, r *pb.JobRequest) error {
		return validLength(f, r.GetContextPtr(), MaxValueLength)
	}},
	{"env_vars", "at most 256 entries; key 1 to 128 bytes, no control character; value at most 4096 bytes", func(f string, r *pb.JobRequest) error {
		return validMap(f, r.GetEnvVars(), MaxEnvVars)
	}},
	{"max_attempts", "0 (the default) to 100", func(f string, r *pb.JobRequest) error {
		return validRange(f, int64(r.GetMaxAttempts()), MaxAttemptsLimit)
	}},
	{"timeout_ms", "0 (the default) to 30 days", func(f string, r *pb.JobRequest) error {
		return validRange(f, r.GetTimeoutMs(), MaxDurationMs)
	}},
	{"ttl_ms", "0 (the default) to 30 days", func(f string, r *pb.JobRequest) error {
		return validRange(f, r.GetTtlMs(), MaxDurationMs)
	}},
	{"attempt", "0 or more (set by the scheduler on dispatch)", func(f string, r *pb.JobRequest) error {
		return validRange(f, int64(r.GetAttempt()), math.MaxInt32)
	}},
	{"required_capabilities", boundList, func(f string, r *pb.JobRequest) error {
		return validList(f, r.GetRequiredCapabilities(), MaxListLength)
	}},
	{"required_labels", boundMap, func(f string, r *pb.JobRequest) error {
		return validMap(f, r.GetRequiredLabels(), MaxListLength)
	}},
	{"payload", "at most 256 KiB", func(f string, r *pb.JobRequest) error {
		if n := len(r.GetPayload()); n > MaxPayloadBytes {
			return fieldErr(f, "%d bytes, at most %d", n, MaxPayloadBytes)
		}
		return nil
	}},
	{"size", "at most 512 KiB encoded, all fields together", func(f string, r *pb.JobRequest) error {
		if n := r.SizeVT(); n > MaxRequestBytes {
			return fieldErr(f, "%d bytes encoded, at most %d", n, MaxRequestBytes)
		}
		return nil
	}},
}

var resultRules = []rule[*pb.JobResult]{
	{"job_id", boundJobID, func(f string, r *pb.JobResult) error { return validJobID(f, r.GetJobId()) }},
	{"worker_id", "one subject token (no `.` `*` `>`, blank or control character); at most 256 bytes; empty only on the bare sys.job.result", func(f string, r *pb.JobResult) error {
		if r.GetWorkerId() == "" {
			return nil
		}
		return validWorkerID(f, r.GetWorkerId())
	}},
	{"status", "a JobStatus value (0 to 4)", func(f string, r *pb.JobResult) error {
		return validEnum(f, int32(r.GetStatus()), pb.JobStatus_name)
	}},
	{"attempt", "0 (a worker that does not say) or more", func(f string, r *pb.JobResult) error {
		return validRange(f, int64(r.GetAttempt()), math.MaxInt32)
	}},
	{"result_ptr", "at most 4096 bytes", func(f string, r *pb.JobResult) error {
		return validLength(f, r.GetResultPtr(), MaxValueLength)
	}},
	{"error", "longer than 4096 bytes is cut, not refused", func(string, *pb.JobResult) error { return nil }},
}

var heartbeatRules = []rule[*pb.Heartbeat]{
	{"worker_id", boundWorkerID, func(f string, h *pb.Heartbeat) error { return validWorkerID(f, h.GetWorkerId()) }},
	{"region", boundName, func(f string, h *pb.Heartbeat) error { return validName(f, h.GetRegion(), MaxNameLength) }},
	{"type", boundName, func(f string, h *pb.Heartbeat) error { return validName(f, h.GetType(), MaxNameLength) }},
	{"pool", boundName, func(f string, h *pb.Heartbeat) error { return validName(f, h.GetPool(), MaxNameLength) }},
	{"capabilities", boundList, func(f string, h *pb.Heartbeat) error {
		return validList(f, h.GetCapabilities(), MaxListLength)
	}},
	{"labels", boundMap, func(f string, h *pb.Heartbeat) error { return validMap(f, h.GetLabels(), MaxListLength) }},
	{"topics", "at most 64 entries, each a valid topic (as JobRequest.topic)", func(f string, h *pb.Heartbeat) error {
		if n := len(h.GetTopics()); n > MaxListLength {
			return fieldErr(f, "%d entries, at most %d", n, MaxListLength)
		}
		for i, t := range h.GetTopics() {
			if err := validTopic(fmt.Sprintf("%s[%d]", f, i), t); err != nil {
				return err
			}
		}
		return nil
	}},
	{"held", "at most 4096 entries, each job_id at most 256 bytes", func(f string, h *pb.Heartbeat) error {
		if n := len(h.GetHeld()); n > MaxHeldJobs {
			return fieldErr(f, "%d entries, at most %d", n, MaxHeldJobs)
		}
		for i, j := range h.GetHeld() {
			if len(j.GetJobId()) > MaxJobIDLength {
				return fieldErr(fmt.Sprintf("%s[%d].job_id", f, i), "%d bytes, at most %d", len(j.GetJobId()), MaxJobIDLength)
			}
		}
		return nil
	}},
	{"interval_ms", "0 (the scheduler's lease interval) to one hour", func(f string, h *pb.Heartbeat) error {
		return validRange(f, h.GetIntervalMs(), MaxIntervalMs)
	}},
	{"capacity", "0 (unknown: 1) to 1,048,576", func(f string, h *pb.Heartbeat) error {
		return validRange(f, int64(h.GetCapacity()), MaxCapacity)
	}},
	{"cpu_load", "a finite number", func(f string, h *pb.Heartbeat) error { return validFinite(f, h.GetCpuLoad()) }},
	{"gpu_utilization", "a finite number", func(f string, h *pb.Heartbeat) error {
		return validFinite(f, h.GetGpuUtilization())
	}},
}

var ackRules = []rule[*pb.JobAck]{
	{"worker_id", boundWorkerID, func(f string, a *pb.JobAck) error { return validWorkerID(f, a.GetWorkerId()) }},
}

var cancelRules = []rule[*pb.JobCancel]{
	{"job_id", boundJobID, func(f string, c *pb.JobCancel) error { return validJobID(f, c.GetJobId()) }},
	{"reason", "at most 4096 bytes", func(f string, c *pb.JobCancel) error {
		return validLength(f, c.GetReason(), MaxTextLength)
	}},
}

var queryRules = []rule[*pb.JobQuery]{
	{"job_id", "at most 256 bytes", func(f string, q *pb.JobQuery) error {
		return validLength(f, q.GetJobId(), MaxJobIDLength)
	}},
	{"state", "a JobState value (0 to 8)", func(f string, q *pb.JobQuery) error {
		return validEnum(f, int32(q.GetState()), pb.JobState_name)
	}},
}

// ---- the checks ----

// ValidateRequest checks every field of a job request against its bound
// and returns a *FieldError naming the first that is out of it. The
// scheduler refuses such a submission before it records anything.
func ValidateRequest(req *pb.JobRequest) error { return apply(requestRules, req) }

func validateResult(r *pb.JobResult) error    { return apply(resultRules, r) }
func validateHeartbeat(h *pb.Heartbeat) error { return apply(heartbeatRules, h) }
func validateAck(a *pb.JobAck) error          { return apply(ackRules, a) }
func validateCancel(c *pb.JobCancel) error    { return apply(cancelRules, c) }
func validateQuery(q *pb.JobQuery) error      { return apply(queryRules, q) }

func validJobID(field, id string) error {
	if err := jobstore.ValidID(id); err != nil {
		return &FieldError{Field: field, Err: jobstore.ErrInvalidID,
			Reason: fmt.Sprintf("%q: letters, digits and - _ = . only, at most %d bytes", clip(id), MaxJobIDLength)}
	}
	return nil
}

func validTopic(field, topic string) error {
	err := ValidateTopic(topic)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrEmptyTopic):
		return &FieldError{Field: field, Err: ErrEmptyTopic, Reason: "empty"}
	}
	// "invalid topic: 300 bytes, ...", "invalid topic \"x\": ...": the
	// FieldError says invalid <field> itself.
	reason := strings.TrimPrefix(err.Error(), ErrInvalidTopic.Error())
	reason = strings.TrimPrefix(strings.TrimPrefix(reason, ":"), " ")
	return &FieldError{Field: field, Err: ErrInvalidTopic, Reason: reason}
}

func validWorkerID(field, id string) error {
	switch {
	case id == "":
		return fieldErr(field, "empty")
	case len(id) > MaxWorkerIDLength:
		return fieldErr(field, "%d bytes, at most %d", len(id), MaxWorkerIDLength)
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c <= ' ' || c == 0x7f || c == '.' || c == '*' || c == '>' {
			return fieldErr(field, "%q: one subject token, no '.', '*', '>', blank or control character", id)
		}
	}
	return nil
}

// validSchedulerID: the replica's id starts the reply subjects of its
// dispatches (_CORTEX.ack.<id>.<attempt>.<job_id>); dots are fine there.
func validSchedulerID(field, id string) error {
	if len(id) > MaxWorkerIDLength {
		return fieldErr(field, "%d bytes, at most %d", len(id), MaxWorkerIDLength)
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c <= ' ' || c == 0x7f || c == '*' || c == '>' {
			return fieldErr(field, "%q: no '*', '>', blank or control character", id)
		}
	}
	return nil
}

func validEnum(field string, v int32, names map[int32]string) error {
	if _, ok := names[v]; !ok {
		return fieldErr(field, "%d is not a value this scheduler knows", v)
	}
	return nil
}

func validRange(field string, v, maxV int64) error {
	switch {
	case v < 0:
		return fieldErr(field, "%d: must not be negative", v)
	case v > maxV:
		return fieldErr(field, "%d: at most %d", v, maxV)
	}
	return nil
}

func validFinite(field string, v float32) error {
	if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
		return fieldErr(field, "%v is not a finite number", v)
	}
	return nil
}

func validLength(field, s string, maxLen int) error {
	if len(s) > maxLen {
		return fieldErr(field, "%d bytes, at most %d", len(s), maxLen)
	}
	return nil
}

func validList(field string, l []string, maxLen int) error {
	if len(l) > maxLen {
		return fieldErr(field, "%d entries, at most %d", len(l), maxLen)
	}
	for i, c := range l {
		f := fmt.Sprintf("%s[%d]", field, i)
		if c == "" {
			return fieldErr(f, "empty")
		}
		if err := validName(f, c, MaxNameLength); err != nil {
			return err
		}
	}
	return nil
}

func validMap(field string, m map[string]string, maxLen int) error {
	if len(m) > maxLen {
		return fieldErr(field, "%d entries, at most %d", len(m), maxLen)
	}
	for k, v := range m {
		if k == "" {
			return fieldErr(field, "an empty key")
		}
		if err := validName(field+" key", k, MaxNameLength); err != nil {
			return err
		}
		if len(v) > MaxValueLength {
			return fieldErr(fmt.Sprintf("%s[%q]", field, k), "value of %d bytes, at most %d", len(v), MaxValueLength)
		}
	}
	return nil
}

// validName: at most maxLen bytes, no control characters.
func validName(field, s string, maxLen int) error {
	if len(s) > maxLen {
		return fieldErr(field, "%d bytes, at most %d", len(s), maxLen)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f {
			return fieldErr(field, "%q: control characters are not allowed", s)
		}
	}
	return nil
}

// clip keeps a value that may be out of bounds short in a log line.
func clip(s string) string {
	const keep = 64
	if len(s) <= keep {
		return s
	}
	n := keep
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return fmt.Sprintf("%s…(%d bytes)", s[:n], len(s))
}

// cut shortens free text from a worker to MaxTextLength bytes, on a rune
// boundary, saying it was cut.
func cut(s string) string {
	if len(s) <= MaxTextLength {
		return s
	}
	const mark = "…(cut)"
	n := MaxTextLength - len(mark)
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return strings.Clone(s[:n]) + mark
}
