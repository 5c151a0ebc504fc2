package scheduler

import (
	"math"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// plainRequest checks these JobRequest fields. A new field may need a rule,
// and plainRequest then a check (or to refuse a request that sets it).
func TestPlainRequestKnowsEveryField(t *testing.T) {
	t.Parallel()
	known := map[protoreflect.Name]bool{
		"job_id": true, "topic": true, "priority": true, "context_ptr": true, "adapter_id": true,
		"env_vars": true, "max_attempts": true, "timeout_ms": true, "attempt": true, "ttl_ms": true,
		"tenant": true, "required_capabilities": true, "required_labels": true, "payload": true,
	}
	fields := (&pb.JobRequest{}).ProtoReflect().Descriptor().Fields()
	for i := range fields.Len() {
		if name := fields.Get(i).Name(); !known[name] {
			t.Errorf("JobRequest.%s: plainRequest does not check it", name)
		}
	}
	if fields.Len() != len(known) {
		t.Errorf("JobRequest has %d fields, plainRequest knows %d", fields.Len(), len(known))
	}
	if len(requestRules) != len(known)+1 { // and the size
		t.Errorf("%d request rules for %d fields and the size: plainRequest may lack a check", len(requestRules), len(known))
	}
}

// The usual submission takes the quick path; one the rules refuse never
// does.
func TestPlainRequest(t *testing.T) {
	t.Parallel()
	ok := []*pb.JobRequest{
		{JobId: "bench-1a2b-17", Topic: "job.echo"},
		{JobId: "j", Topic: "job.echo", Priority: pb.JobPriority_JOB_PRIORITY_CRITICAL, MaxAttempts: 3, TimeoutMs: 1000, TtlMs: 60000, Attempt: 2, ContextPtr: "memory://x", Payload: []byte("p")},
		{JobId: "j", Topic: ForbiddenTopic},
	}
	for _, r := range ok {
		if !plainRequest(r) || ValidateRequest(r) != nil {
			t.Errorf("%v: plain %v, ValidateRequest %v; want plain and valid", r, plainRequest(r), ValidateRequest(r))
		}
	}
	big := &pb.JobRequest{JobId: "j", Topic: "job.echo", Payload: make([]byte, MaxPayloadBytes)}
	bigUnknown := proto.Clone(big).(*pb.JobRequest)
	bigUnknown.ProtoReflect().SetUnknown(protowire.AppendBytes(protowire.AppendTag(nil, 99, protowire.BytesType), make([]byte, MaxRequestBytes-MaxPayloadBytes)))
	refused := []*pb.JobRequest{
		{JobId: "", Topic: "job.echo"},
		{JobId: "a b", Topic: "job.echo"},
		{JobId: "j", Topic: ""},
		{JobId: "j", Topic: "job." + strings.Repeat("a", MaxTopicLength)},
		{JobId: "j", Topic: "job.echo", Priority: 99},
		{JobId: "j", Topic: "job.echo", Priority: -1},
		{JobId: "j", Topic: "job.echo", MaxAttempts: MaxAttemptsLimit + 1},
		{JobId: "j", Topic: "job.echo", MaxAttempts: -1},
		{JobId: "j", Topic: "job.echo", TimeoutMs: MaxDurationMs + 1},
		{JobId: "j", Topic: "job.echo", TimeoutMs: math.MinInt64},
		{JobId: "j", Topic: "job.echo", TtlMs: -1},
		{JobId: "j", Topic: "job.echo", Attempt: -1},
		{JobId: "j", Topic: "job.echo", ContextPtr: strings.Repeat("c", MaxValueLength+1)},
		{JobId: "j", Topic: "job.echo", Payload: make([]byte, MaxPayloadBytes+1)},
		bigUnknown,
	}
	for _, r := range refused {
		if plainRequest(r) || ValidateRequest(r) == nil {
			t.Errorf("%.200v: plain %v, ValidateRequest %v; want neither", r, plainRequest(r), ValidateRequest(r))
		}
	}
	// Not plain, for the table to judge (valid here).
	for _, r := range []*pb.JobRequest{
		{JobId: "j", Topic: "job.echo", Tenant: "t"},
		{JobId: "j", Topic: "job.echo", AdapterId: "a"},
		{JobId: "j", Topic: "job.echo", EnvVars: map[string]string{"K": "v"}},
		{JobId: "j", Topic: "job.echo", RequiredCapabilities: []string{"gpu"}},
		{JobId: "j", Topic: "job.echo", RequiredLabels: map[string]string{"a": "b"}},
	} {
		if plainRequest(r) || ValidateRequest(r) != nil {
			t.Errorf("%v: plain %v, ValidateRequest %v; want not plain, valid", r, plainRequest(r), ValidateRequest(r))
		}
	}
}

// Whatever plainRequest accepts, every rule accepts.
func FuzzPlainRequestAgreesWithTheRules(f *testing.F) {
	for _, r := range []*pb.JobRequest{
		{JobId: "j", Topic: "job.echo"},
		{JobId: "j", Topic: "job.echo", Priority: 3, MaxAttempts: 100, TimeoutMs: MaxDurationMs, TtlMs: 1, Attempt: 7, ContextPtr: "c", Payload: []byte("x")},
		{JobId: "j", Topic: ForbiddenTopic},
		{JobId: "j", Topic: "job.echo", Priority: 4},
	} {
		data, err := proto.Marshal(r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		req := new(pb.JobRequest)
		if err := req.UnmarshalVT(data); err != nil {
			return
		}
		if plainRequest(req) {
			if err := apply(requestRules, req); err != nil {
				t.Fatalf("plainRequest accepted %v, which the rules refuse: %v", req, err)
			}
		}
	})
}
