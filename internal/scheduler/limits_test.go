package scheduler_test

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/cortex-os/core/internal/jobstore"
	"github.com/cortex-os/core/internal/lifecycle"
	"github.com/cortex-os/core/internal/scheduler"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// n repeats c n times.
func n(c string, count int) string { return strings.Repeat(c, count) }

// entries is a map of count distinct keys.
func entries(count int) map[string]string {
	m := make(map[string]string, count)
	for i := range count {
		m["k"+strings.Repeat("x", i%8)+string(rune('a'+i%26))+string(rune('a'+i/26%26))+string(rune('a'+i/676))] = "v"
	}
	return m
}

func list(count int) []string {
	l := make([]string, count)
	for i := range l {
		l[i] = "c"
	}
	return l
}

// Every field of a request at its bound is accepted; one past it, or an enum
// value this version does not know, is refused with a FieldError that names
// the field.
func TestValidateRequestFieldBounds(t *testing.T) {
	t.Parallel()
	ok := func(mod func(r *pb.JobRequest)) *pb.JobRequest {
		r := &pb.JobRequest{JobId: "j", Topic: "job.echo"}
		mod(r)
		return r
	}
	atBound := []*pb.JobRequest{
		ok(func(r *pb.JobRequest) { r.JobId = n("j", scheduler.MaxJobIDLength) }),
		ok(func(r *pb.JobRequest) { r.Topic = "job." + n("a", scheduler.MaxTopicLength-4) }),
		ok(func(r *pb.JobRequest) { r.Priority = pb.JobPriority_JOB_PRIORITY_CRITICAL }),
		ok(func(r *pb.JobRequest) { r.Tenant = n("t", scheduler.MaxTenantLength) }),
		ok(func(r *pb.JobRequest) { r.AdapterId = n("a", scheduler.MaxNameLength) }),
		ok(func(r *pb.JobRequest) { r.ContextPtr = n("c", scheduler.MaxValueLength) }),
		ok(func(r *pb.JobRequest) { r.EnvVars = entries(scheduler.MaxEnvVars) }),
		ok(func(r *pb.JobRequest) {
			r.EnvVars = map[string]string{n("K", scheduler.MaxNameLength): n("v", scheduler.MaxValueLength)}
		}),
		ok(func(r *pb.JobRequest) { r.MaxAttempts = scheduler.MaxAttemptsLimit }),
		ok(func(r *pb.JobRequest) { r.TimeoutMs, r.TtlMs = scheduler.MaxDurationMs, scheduler.MaxDurationMs }),
		ok(func(r *pb.JobRequest) { r.RequiredCapabilities = list(scheduler.MaxListLength) }),
		ok(func(r *pb.JobRequest) { r.RequiredLabels = entries(scheduler.MaxListLength) }),
		ok(func(r *pb.JobRequest) { r.Payload = make([]byte, scheduler.MaxPayloadBytes) }),
		ok(func(r *pb.JobRequest) { r.Topic = scheduler.ForbiddenTopic }), // the policy answers for it
	}
	for i, r := range atBound {
		if err := scheduler.ValidateRequest(r); err != nil {
			t.Errorf("at its bound (%d): refused: %v", i, err)
		}
	}

	for _, tc := range []struct {
		field string // the FieldError's field starts with it
		req   *pb.JobRequest
		cause error
	}{
		{"job_id", ok(func(r *pb.JobRequest) { r.JobId = "" }), jobstore.ErrInvalidID},
		{"job_id", ok(func(r *pb.JobRequest) { r.JobId = n("j", scheduler.MaxJobIDLength+1) }), jobstore.ErrInvalidID},
		{"job_id", ok(func(r *pb.JobRequest) { r.JobId = "a b" }), jobstore.ErrInvalidID},
		{"topic", ok(func(r *pb.JobRequest) { r.Topic = "" }), scheduler.ErrEmptyTopic},
		{"topic", ok(func(r *pb.JobRequest) { r.Topic = "job." + n("a", 5000) }), scheduler.ErrInvalidTopic},
		{"topic", ok(func(r *pb.JobRequest) { r.Topic = "job." + n("a", scheduler.MaxTopicLength-3) }), scheduler.ErrInvalidTopic},
		{"topic", ok(func(r *pb.JobRequest) { r.Topic = "job.a\x00b" }), scheduler.ErrInvalidTopic},
		{"topic", ok(func(r *pb.JobRequest) { r.Topic = "job.a\x7fb" }), scheduler.ErrInvalidTopic},
		{"topic", ok(func(r *pb.JobRequest) { r.Topic = "job.>" }), scheduler.ErrInvalidTopic},
		{"priority", ok(func(r *pb.JobRequest) { r.Priority = 99 }), nil},
		{"priority", ok(func(r *pb.JobRequest) { r.Priority = -1 }), nil},
		{"tenant", ok(func(r *pb.JobRequest) { r.Tenant = n("t", scheduler.MaxTenantLength+1) }), nil},
		{"tenant", ok(func(r *pb.JobRequest) { r.Tenant = "a\nb" }), nil},
		{"adapter_id", ok(func(r *pb.JobRequest) { r.AdapterId = n("a", scheduler.MaxNameLength+1) }), nil},
		{"context_ptr", ok(func(r *pb.JobRequest) { r.ContextPtr = n("c", scheduler.MaxValueLength+1) }), nil},
		{"env_vars", ok(func(r *pb.JobRequest) { r.EnvVars = entries(scheduler.MaxEnvVars + 1) }), nil},
		{"env_vars", ok(func(r *pb.JobRequest) { r.EnvVars = map[string]string{"": "v"} }), nil},
		{"env_vars key", ok(func(r *pb.JobRequest) { r.EnvVars = map[string]string{n("K", scheduler.MaxNameLength+1): "v"} }), nil},
		{`env_vars["K"]`, ok(func(r *pb.JobRequest) { r.EnvVars = map[string]string{"K": n("v", scheduler.MaxValueLength+1)} }), nil},
		{"max_attempts", ok(func(r *pb.JobRequest) { r.MaxAttempts = -1 }), nil},
		{"max_attempts", ok(func(r *pb.JobRequest) { r.MaxAttempts = scheduler.MaxAttemptsLimit + 1 }), nil},
		{"timeout_ms", ok(func(r *pb.JobRequest) { r.TimeoutMs = -1 }), nil},
		{"timeout_ms", ok(func(r *pb.JobRequest) { r.TimeoutMs = math.MaxInt64 }), nil},
		{"ttl_ms", ok(func(r *pb.JobRequest) { r.TtlMs = scheduler.MaxDurationMs + 1 }), nil},
		{"attempt", ok(func(r *pb.JobRequest) { r.Attempt = -1 }), nil},
		{"required_capabilities", ok(func(r *pb.JobRequest) { r.RequiredCapabilities = list(scheduler.MaxListLength + 1) }), nil},
		{"required_capabilities[1]", ok(func(r *pb.JobRequest) { r.RequiredCapabilities = []string{"gpu", ""} }), nil},
		{"required_capabilities[0]", ok(func(r *pb.JobRequest) { r.RequiredCapabilities = []string{n("c", scheduler.MaxNameLength+1)} }), nil},
		{"required_labels", ok(func(r *pb.JobRequest) { r.RequiredLabels = entries(scheduler.MaxListLength + 1) }), nil},
		{"required_labels", ok(func(r *pb.JobRequest) { r.RequiredLabels = map[string]string{"": "x"} }), nil},
		{"payload", ok(func(r *pb.JobRequest) { r.Payload = make([]byte, scheduler.MaxPayloadBytes+1) }), nil},
		{"size", ok(func(r *pb.JobRequest) {
			r.EnvVars = entries(scheduler.MaxEnvVars)
			for k := range r.EnvVars {
				r.EnvVars[k] = n("v", scheduler.MaxValueLength)
			}
		}), nil},
	} {
		err := scheduler.ValidateRequest(tc.req)
		var fe *scheduler.FieldError
		switch {
		case !errors.As(err, &fe) || !errors.Is(err, scheduler.ErrInvalidField):
			t.Errorf("%s out of bounds: %v, want a FieldError", tc.field, err)
		case !strings.HasPrefix(fe.Field, tc.field) || !strings.Contains(err.Error(), "invalid "+tc.field):
			t.Errorf("%s out of bounds: the error names %q: %v", tc.field, fe.Field, err)
		case tc.cause != nil && !errors.Is(err, tc.cause):
			t.Errorf("%s out of bounds: %v, want it to wrap %v", tc.field, err, tc.cause)
		case len(err.Error()) > 600:
			t.Errorf("%s out of bounds: an error of %d bytes repeats the value", tc.field, len(err.Error()))
		}
	}
}

// priority 99 in raw protobuf (no Go client would send it) is refused at
// admission, naming the field: a deny rule on priorities cannot miss it and
// placement cannot take it for another priority.
func TestUnknownEnumValueInRawProtobufIsRefused(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	good, err := proto.Marshal(submitPacket("t-raw", request("raw-99", "job.echo")))
	if err != nil {
		t.Fatal(err)
	}
	// Field 10 of BusPacket is job_request; append priority (field 3) = 99
	// to its bytes: decoding merges it into the request.
	var req []byte
	req = protowire.AppendTag(req, 3, protowire.VarintType)
	req = protowire.AppendVarint(req, 99)
	raw := protowire.AppendTag(append([]byte(nil), good...), 10, protowire.BytesType)
	raw = protowire.AppendBytes(raw, req)
	p := new(pb.BusPacket)
	if err := proto.Unmarshal(raw, p); err != nil {
		t.Fatal(err)
	}
	if got := p.GetJobRequest().GetPriority(); got != 99 {
		t.Fatalf("decoded priority %d, want 99", got)
	}
	if err := r.bus.submit(t, p, "_INBOX.test.raw"); err != nil {
		t.Fatal(err)
	}
	if _, a := r.answerOn("_INBOX.test.raw"); a.GetOk() || a.GetRetryable() || !strings.Contains(a.GetError(), "invalid priority: 99") {
		t.Errorf("answer %v, want a final refusal naming priority", a)
	}
	if r.job("raw-99") != nil {
		t.Error("a job with priority 99 was recorded")
	}
}

// A submission out of bounds is refused before anything is stored: the
// 5,000-byte topic of finding 2, and a trace id no job may carry.
func TestSubmissionOutOfBoundsIsRefusedUnrecorded(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.submit(request("long-topic", "job."+n("a", 5000)), "t", "_INBOX.test.long")
	if _, a := r.answerOn("_INBOX.test.long"); a.GetOk() || !strings.Contains(a.GetError(), "invalid topic: 5004 bytes, at most 255") {
		t.Errorf("answer %v", a)
	}
	r.submit(request("long-trace", "job.echo"), n("t", scheduler.MaxTraceIDLength+1), "_INBOX.test.trace")
	if _, a := r.answerOn("_INBOX.test.trace"); a.GetOk() || !strings.Contains(a.GetError(), "invalid trace_id") {
		t.Errorf("answer %v", a)
	}
	if r.job("long-topic") != nil || r.job("long-trace") != nil || len(r.bus.dispatches()) != 0 {
		t.Error("a refused submission was recorded or dispatched")
	}
	if st := r.e.Stats(); st.Rejected != 2 || st.Accepted != 0 {
		t.Errorf("stats %+v, want 2 rejected", st)
	}
	if logs := r.logs.String(); strings.Contains(logs, n("a", 100)) {
		t.Error("the log repeats the 5,000-byte topic")
	}
	// It keeps serving.
	r.bus.fallback("", ackBy("w1"))
	r.submit(request("after", "job.echo"), "t", "")
	r.waitState("after", lifecycle.Running, 1)
}

// Heartbeats, results and confirmations out of bounds are refused, counted
// and logged, and change nothing.
func TestWorkerPacketsOutOfBoundsAreRefused(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	runningOn(r, "j1", "w1")

	for _, hb := range []*pb.Heartbeat{
		{WorkerId: n("w", scheduler.MaxWorkerIDLength+1)},
		{WorkerId: "w.x"},
		{WorkerId: "w2", Region: n("r", scheduler.MaxNameLength+1)},
		{WorkerId: "w2", Topics: []string{"job." + n("a", 300)}},
		{WorkerId: "w2", Held: heldJobs(scheduler.MaxHeldJobs + 1)},
		{WorkerId: "w2", Held: []*pb.HeldJob{{JobId: n("j", scheduler.MaxJobIDLength+1)}}},
		{WorkerId: "w2", IntervalMs: math.MaxInt64},
		{WorkerId: "w2", Capacity: -1},
		{WorkerId: "w2", CpuLoad: float32(math.NaN())},
		{WorkerId: "w2", Labels: entries(scheduler.MaxListLength + 1)},
	} {
		r.heartbeatOn(hb)
	}
	for _, res := range []*pb.JobResult{
		{JobId: "j1", Attempt: 1, WorkerId: "w1", Status: 99},
		{JobId: "j1", Attempt: 1, WorkerId: "w1", Status: pb.JobStatus_JOB_STATUS_COMPLETED, ResultPtr: n("p", scheduler.MaxValueLength+1)},
		{JobId: n("j", 300), Attempt: 1, WorkerId: "w1", Status: pb.JobStatus_JOB_STATUS_COMPLETED},
		{JobId: "j1", Attempt: -1, WorkerId: "w1", Status: pb.JobStatus_JOB_STATUS_COMPLETED},
	} {
		r.result(res)
	}
	st := r.e.Stats()
	if st.InvalidPackets != 14 || st.Heartbeats != 0 || st.Results != 0 {
		t.Errorf("stats %+v: want 14 refused, none applied", st)
	}
	if len(r.reg.Snapshot()) != 0 {
		t.Errorf("registry %v: a refused heartbeat was applied", r.reg.Snapshot())
	}
	if j := r.job("j1"); j.GetState() != lifecycle.Running {
		t.Errorf("job %s after refused results, want RUNNING", describe(j))
	}
	if logs := r.logs.String(); !strings.Contains(logs, "refused a heartbeat") || !strings.Contains(logs, "refused a result") {
		t.Errorf("refusals not logged:\n%s", logs)
	}

	// A confirmation whose worker id could not name a subject is not taken:
	// the job waits as unconfirmed.
	r.bus.fallback("", ackBy("bad.worker"))
	r.submit(request("j2", "job.echo"), "t", "")
	r.waitStats("the confirmation refused", func(s scheduler.Stats) bool { return s.InvalidPackets == 15 })
	if j := r.job("j2"); j.GetState() == lifecycle.Running {
		t.Errorf("job %s confirmed by a worker id with a dot", describe(j))
	}

	// A worker's error text is cut, not refused.
	r.result(failedResult("j1", 1, "w1", pb.JobStatus_JOB_STATUS_FAILED, n("e", 100_000)))
	j := r.waitJob("j1", "failed or retried", func(j *pb.JobInfo) bool { return j.GetFailedAttempts() == 1 })
	if len(j.GetError()) > scheduler.MaxTextLength+100 || !strings.Contains(j.GetError(), "(cut)") {
		t.Errorf("error of %d bytes stored", len(j.GetError()))
	}

	// Cancels and queries out of bounds are answered with the field.
	if a := r.cancel("j2", n("r", scheduler.MaxTextLength+1)); a.GetOk() || !strings.Contains(a.GetError(), "invalid reason") {
		t.Errorf("cancel answer %v", a)
	}
	if a := r.query(&pb.JobQuery{State: 42}); a.GetOk() || !strings.Contains(a.GetError(), "invalid state") {
		t.Errorf("query answer %v", a)
	}
}

// heartbeatOn delivers a heartbeat on the bare subject, which names no
// worker (whatever its id, it is not refused for its subject).
func (r *rig) heartbeatOn(hb *pb.Heartbeat) {
	r.t.Helper()
	r.bus.heartbeatOn(r.t, wire.HeartbeatSubject("echo"), wire.HeartbeatPacket("hb", "x", hb))
}

func heldJobs(count int) []*pb.HeldJob {
	h := make([]*pb.HeldJob, count)
	for i := range h {
		h[i] = &pb.HeldJob{JobId: "j", Attempt: 1}
	}
	return h
}

// A dispatch the bus can never publish (wire.ErrUnpublishable) fails its
// job with the reason, once: it is not retried into the same failure.
func TestUnpublishableDispatchFailsTheJob(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.bus.script("job.echo", failPublish(errors.Join(wire.ErrUnpublishable, errors.New("subject too long"))))
	r.bus.fallback("", ackBy("w1"))
	r.submit(request("doomed", "job.echo"), "t", "")
	j := r.waitState("doomed", lifecycle.Failed, 1)
	if !strings.Contains(j.GetError(), "cannot be dispatched") || j.GetDeadLetter() {
		t.Errorf("job %s, want FAILED saying it cannot be dispatched, not dead-lettered", describe(j))
	}
	if st := r.e.Stats(); st.Undeliverable != 1 || st.Retries != 0 {
		t.Errorf("stats %+v", st)
	}
	// A transient publish error is still retried.
	r.bus.script("job.echo", failPublish(errors.New("connection reconnecting")))
	r.submit(request("later", "job.echo"), "t", "")
	r.waitState("later", lifecycle.Running, 1)
	if n := len(r.bus.dispatchesOf("doomed")); n != 1 {
		t.Errorf("the doomed job was tried %d times, want once", n)
	}
}

// A job stored by an earlier version with a request out of today's bounds
// (finding 2's 5,000-byte topic) is failed with the reason when it comes up
// for dispatch, not offered again and again; the engine goes on serving.
func TestStoredRequestOutOfBoundsFailsOnDispatch(t *testing.T) {
	t.Parallel()
	stored := &pb.JobInfo{JobId: "old", State: lifecycle.Pending, MaxAttempts: 3, TraceId: "t",
		Request: request("old", "job."+n("a", 5000))}
	r := newRig(t, func(r *rig) {
		r.store.watch = true // the engine reads what the store holds, as after a restart
		if _, err := r.store.Memory.Create(context.Background(), stored); err != nil {
			t.Fatal(err)
		}
	})
	j := r.waitState("old", lifecycle.Failed, 0)
	if !strings.Contains(j.GetError(), "out of bounds") || !strings.Contains(j.GetError(), "invalid topic") {
		t.Errorf("job %s", describe(j))
	}
	if st := r.e.Stats(); st.Undeliverable != 1 || len(r.bus.dispatches()) != 0 {
		t.Errorf("stats %+v, %d dispatches", st, len(r.bus.dispatches()))
	}
	r.bus.fallback("", ackBy("w1"))
	r.submit(request("new", "job.echo"), "t", "")
	r.waitState("new", lifecycle.Running, 1)
}

// docs/security.md lists every bound of FieldLimits, as a row of its
// "Limits on fields" table.
func TestSecurityDocListsEveryLimit(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "security.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range scheduler.FieldLimits() {
		row := "| `" + l.Message + "." + l.Field + "` | " + l.Bound + " |"
		if !strings.Contains(string(doc), row) {
			t.Errorf("docs/security.md has no row\n%s", row)
		}
	}
}

// FuzzValidateRequest: whatever bytes decode into a request, validation
// returns (never panics), refuses with a FieldError, and what it accepts is
// within the bounds that matter to the bus: a topic that fits a subject, a
// request that fits a dispatch.
func FuzzValidateRequest(f *testing.F) {
	for _, r := range []*pb.JobRequest{
		{JobId: "j", Topic: "job.echo"},
		{JobId: "j", Topic: "job." + n("a", 5000)},
		{JobId: "j", Topic: "job.echo", Priority: 99, Tenant: "a\nb"},
		{JobId: "j", Topic: "job.echo", EnvVars: map[string]string{"K": "v"}, RequiredLabels: map[string]string{"gpu": "h100"},
			RequiredCapabilities: []string{"gpu"}, MaxAttempts: 3, TimeoutMs: 1000, TtlMs: 60000, Payload: []byte("x")},
		{JobId: "", Topic: ""},
	} {
		data, err := proto.Marshal(r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		req := new(pb.JobRequest)
		if err := proto.Unmarshal(data, req); err != nil {
			return
		}
		err := scheduler.ValidateRequest(req)
		if err != nil {
			var fe *scheduler.FieldError
			if !errors.As(err, &fe) || fe.Field == "" {
				t.Fatalf("refusal %v is not a FieldError naming a field", err)
			}
			return
		}
		if req.GetTopic() != scheduler.ForbiddenTopic {
			if len(req.GetTopic()) > scheduler.MaxTopicLength || scheduler.ValidateTopic(req.GetTopic()) != nil {
				t.Fatalf("accepted topic %q", req.GetTopic())
			}
		}
		if proto.Size(req) > scheduler.MaxRequestBytes || len(req.GetJobId()) > scheduler.MaxJobIDLength {
			t.Fatalf("accepted a request of %d bytes", proto.Size(req))
		}
		if _, known := pb.JobPriority_name[int32(req.GetPriority())]; !known {
			t.Fatalf("accepted priority %d", req.GetPriority())
		}
	})
}
