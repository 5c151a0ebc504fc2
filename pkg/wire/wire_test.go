package wire_test

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// The subjects are the bus contract shared with workers outside this repository.
func TestSubjects(t *testing.T) {
	t.Parallel()
	for got, want := range map[string]string{
		wire.SubjectSubmit:            "sys.job.submit",
		wire.SubjectResult:            "sys.job.result",
		wire.SubjectHeartbeats:        "sys.heartbeat.>",
		wire.JobSubjectPrefix:         "job.",
		wire.HeartbeatSubject("echo"): "sys.heartbeat.echo",
	} {
		if got != want {
			t.Errorf("subject %q, want %q", got, want)
		}
	}
	if wire.ProtocolVersion != 1 {
		t.Errorf("ProtocolVersion = %d, want 1", wire.ProtocolVersion)
	}
}

func TestPackets(t *testing.T) {
	t.Parallel()
	req := &pb.JobRequest{JobId: "j", Topic: "job.echo"}
	res := &pb.JobResult{JobId: "j", Status: pb.JobStatus_JOB_STATUS_COMPLETED}
	hb := &pb.Heartbeat{WorkerId: "w"}
	ans := &pb.JobAnswer{Ok: true}
	before := time.Now().Add(-time.Second)
	for name, tc := range map[string]struct {
		p       *pb.BusPacket
		payload proto.Message
	}{
		"request":   {wire.JobRequestPacket("trace", "sender", req), req},
		"result":    {wire.JobResultPacket("trace", "sender", res), res},
		"heartbeat": {wire.HeartbeatPacket("trace", "sender", hb), hb},
		"answer":    {wire.JobAnswerPacket("trace", "sender", ans), ans},
	} {
		p := tc.p
		if p.GetTraceId() != "trace" || p.GetSenderId() != "sender" || p.GetProtocolVersion() != wire.ProtocolVersion {
			t.Errorf("%s envelope = %v", name, p)
		}
		if c := p.GetCreatedAt(); c == nil || c.AsTime().Before(before) || c.AsTime().After(time.Now().Add(time.Second)) {
			t.Errorf("%s created_at = %v, want now", name, c)
		}
		var got proto.Message
		switch {
		case p.GetJobRequest() != nil:
			got = p.GetJobRequest()
		case p.GetJobResult() != nil:
			got = p.GetJobResult()
		case p.GetHeartbeat() != nil:
			got = p.GetHeartbeat()
		case p.GetJobAnswer() != nil:
			got = p.GetJobAnswer()
		}
		if got != tc.payload {
			t.Errorf("%s payload = %v, want %v", name, got, tc.payload)
		}
		data, err := proto.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		var back pb.BusPacket
		if err := proto.Unmarshal(data, &back); err != nil || !proto.Equal(&back, p) {
			t.Errorf("%s does not survive the wire: %v", name, err)
		}
	}
	if p := wire.NewPacket("t", "s"); p.Payload != nil {
		t.Errorf("NewPacket has a payload: %v", p)
	}
}

// A worker names itself in the subjects it publishes on; the scheduler reads
// the name back.
func TestWorkerSubjects(t *testing.T) {
	t.Parallel()
	for got, want := range map[string]string{
		wire.WorkerHeartbeatSubject("echo", "w1"): "sys.heartbeat.echo.w1",
		wire.ResultSubject("w1"):                  "sys.job.result.w1",
		wire.SubjectResults:                       "sys.job.result.>",
	} {
		if got != want {
			t.Errorf("subject %q, want %q", got, want)
		}
	}
	for _, tc := range []struct {
		subject, id string
		named       bool
	}{
		{"sys.heartbeat.echo.w1", "w1", true},
		{"sys.heartbeat.gpu.a100.w1", "w1", true},
		{"sys.heartbeat.echo", "", false},
		{"sys.job.result.w1", "", false},
	} {
		if id, named := wire.HeartbeatSubjectWorker(tc.subject); id != tc.id || named != tc.named {
			t.Errorf("HeartbeatSubjectWorker(%q) = %q, %v; want %q, %v", tc.subject, id, named, tc.id, tc.named)
		}
	}
	for _, tc := range []struct {
		subject, id string
		named       bool
	}{
		{"sys.job.result.w1", "w1", true},
		{"sys.job.result", "", false},
		{"sys.heartbeat.echo.w1", "", false},
	} {
		if id, named := wire.ResultSubjectWorker(tc.subject); id != tc.id || named != tc.named {
			t.Errorf("ResultSubjectWorker(%q) = %q, %v; want %q, %v", tc.subject, id, named, tc.id, tc.named)
		}
	}
}

// Client identities ride in the subject: base.<identity>.
func TestClientSubjects(t *testing.T) {
	t.Parallel()
	if got := wire.ClientSubject(wire.SubjectSubmit, "tenant-a"); got != "sys.job.submit.tenant-a" {
		t.Errorf("ClientSubject = %q", got)
	}
	if got := wire.ClientSubject(wire.SubjectQuery, ""); got != wire.SubjectQuery {
		t.Errorf("ClientSubject without identity = %q", got)
	}
	if got := wire.ClientInbox("tenant-a"); got != "_INBOX.tenant-a" {
		t.Errorf("ClientInbox = %q", got)
	}
	for _, tc := range []struct {
		subject, identity string
		named, ok         bool
	}{
		{"sys.job.submit", "", false, true},
		{"sys.job.submit.a", "a", true, true},
		{"sys.job.submit.a.b", "a.b", true, true}, // the scheduler refuses it
		{"sys.job.submitx", "", false, false},
		{"sys.job.query.a", "", false, false},
	} {
		id, named, ok := wire.SubjectClient(wire.SubjectSubmit, tc.subject)
		if id != tc.identity || named != tc.named || ok != tc.ok {
			t.Errorf("SubjectClient(%q) = %q %v %v, want %q %v %v", tc.subject, id, named, ok, tc.identity, tc.named, tc.ok)
		}
	}
}

func TestIsInbox(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"_INBOX.a", "_INBOX.client.abc", "_INBOX.x.y.z"} {
		if !wire.IsInbox(s) {
			t.Errorf("IsInbox(%q) = false", s)
		}
	}
	for _, s := range []string{"", "_INBOX", "_INBOX.", "_INBOX..a", "_INBOX.a.", "_INBOX.*", "_INBOX.a.>", "_INBOX.a b",
		"_INBOX.a\x00", "_INBOX.a\x7f", "_inbox.a", "$JS.API.STREAM.PURGE.KV_CORTEX_JOBS", "x._INBOX.a", "_INBOX.a." + string(make([]byte, 600))} {
		if wire.IsInbox(s) {
			t.Errorf("IsInbox(%q) = true", s)
		}
	}
}
