package client_test

import (
	"context"
	"sync"
	"testing"

	"github.com/cortex-os/core/internal/client"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// recorder is a Requester that notes the subjects it is asked to use and
// answers every request and submission with an accepted job.
type recorder struct {
	mu       sync.Mutex
	subjects []string
	inbox    func(*pb.BusPacket)
}

func (r *recorder) note(s string) {
	r.mu.Lock()
	r.subjects = append(r.subjects, s)
	r.mu.Unlock()
}

func accepted() *pb.BusPacket {
	p := wire.NewPacket("t", "sched")
	p.Payload = &pb.BusPacket_JobAnswer{JobAnswer: &pb.JobAnswer{Ok: true, Jobs: []*pb.JobInfo{{JobId: "j"}}}}
	return p
}

func (r *recorder) Request(_ context.Context, subject string, _ *pb.BusPacket) (*pb.BusPacket, error) {
	r.note(subject)
	return accepted(), nil
}

func (r *recorder) PublishReplyTo(subject string, _ *pb.BusPacket, _ string) error {
	r.note(subject)
	r.inbox(accepted())
	return nil
}

func (r *recorder) Subscribe(_, _ string, h func(*pb.BusPacket)) (func() error, error) {
	r.inbox = h
	return func() error { return nil }, nil
}

func (r *recorder) Flush(context.Context) error { return nil }
func (r *recorder) NewInbox() string            { return "_INBOX.tenant-a.x" }

// A client with an identity names it in every subject it sends on; one
// without uses the bare subjects.
func TestIdentityInSubjects(t *testing.T) {
	t.Parallel()
	for identity, want := range map[string][]string{
		"tenant-a": {"sys.job.submit.tenant-a", "sys.job.query.tenant-a", "sys.job.query.tenant-a", "sys.job.cancel.tenant-a",
			"sys.job.query.tenant-a", "sys.job.query.tenant-a", "sys.job.query.tenant-a"},
		"": {"sys.job.submit", "sys.job.query", "sys.job.query", "sys.job.cancel", "sys.job.query", "sys.job.query", "sys.job.query"},
	} {
		r := &recorder{}
		c := client.New(r, "test", client.WithIdentity(identity))
		if c.Identity() != identity {
			t.Errorf("Identity() = %q", c.Identity())
		}
		ctx := context.Background()
		if _, err := c.Submit(ctx, &pb.JobRequest{Topic: "job.echo"}, ""); err != nil {
			t.Fatal(err)
		}
		_, _ = c.Get(ctx, "j")
		_, _ = c.List(ctx, 0, 10)
		_, _ = c.Cancel(ctx, "j", "")
		_, _ = c.DeadLetters(ctx, 10)
		_, _ = c.Redrive(ctx, "j")
		_, _ = c.Workers(ctx)
		if len(r.subjects) != len(want) {
			t.Fatalf("%q: subjects %v", identity, r.subjects)
		}
		for i := range want {
			if r.subjects[i] != want[i] {
				t.Errorf("%q: subject %d = %s, want %s", identity, i, r.subjects[i], want[i])
			}
		}
	}
}
