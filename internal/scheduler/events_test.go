package scheduler

import (
	"log/slog"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/cortex-os/core/internal/lifecycle"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// A job's event carries the job as written, without its inline payload,
// and leaves the written job as it was: with a payload the event encodes a
// copy, without one the written job itself.
func TestJobEventLeavesOutThePayloadOnly(t *testing.T) {
	t.Parallel()
	for _, payload := range [][]byte{nil, []byte("inline bytes")} {
		fb := &eventBus{}
		je := &jobEvents{bus: fb, id: "sched-1", log: slog.New(slog.DiscardHandler)}
		next := &pb.JobInfo{
			JobId: "j1", State: lifecycle.Dispatched, Attempt: 1, WorkerId: "w1", TraceId: "t1",
			Request: &pb.JobRequest{JobId: "j1", Topic: "job.echo", Tenant: "acme", ContextPtr: "ctx", Payload: payload},
		}
		written := proto.CloneOf(next)
		je.publish(nil, next)
		je.publish(next, next) // nothing changed: no event

		if !proto.Equal(next, written) {
			t.Fatalf("payload %q: the written job was edited: %v", payload, next)
		}
		got := fb.published
		if len(got) != 1 {
			t.Fatalf("payload %q: %d events, want 1", payload, len(got))
		}
		if want, _ := wire.JobEventSubject("acme", "j1"); got[0].subject != want {
			t.Fatalf("subject %q, want %q", got[0].subject, want)
		}
		jobs := got[0].packet.GetJobAnswer().GetJobs()
		if len(jobs) != 1 {
			t.Fatalf("payload %q: event of %d jobs", payload, len(jobs))
		}
		want := proto.CloneOf(written)
		want.Request.Payload = nil
		if !proto.Equal(jobs[0], want) {
			t.Fatalf("payload %q: event job %v, want %v", payload, jobs[0], want)
		}
		if p := got[0].packet; p.GetSenderId() != "sched-1" || p.GetTraceId() != "t1" || !p.GetJobAnswer().GetOk() {
			t.Fatalf("payload %q: packet %v", payload, p)
		}
	}
}

// eventBus keeps what is published, encoded and decoded again as the bus
// would: the packet and the subject's bytes are reused once Publish returns.
type eventBus struct {
	Bus       // only Publish is called
	published []eventPublished
}

type eventPublished struct {
	subject string
	packet  *pb.BusPacket
}

func (b *eventBus) Publish(subject string, p *pb.BusPacket) error {
	data, err := proto.Marshal(p)
	if err != nil {
		return err
	}
	var got pb.BusPacket
	if err := proto.Unmarshal(data, &got); err != nil {
		return err
	}
	b.published = append(b.published, eventPublished{subject: strings.Clone(subject), packet: &got})
	return nil
}
