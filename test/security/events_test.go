package security

import (
	"context"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/cortex-os/core/internal/echo"
	"github.com/cortex-os/core/internal/infrastructure/bus"
	"github.com/cortex-os/core/internal/infrastructure/config"
	"github.com/cortex-os/core/internal/lifecycle"
	"github.com/cortex-os/core/internal/systest"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// Under the shipped configuration a tenant's client reads the events of its
// own tenant's jobs and may not subscribe to another tenant's; the
// administrator reads them all. Both may announce that they follow a job.
func TestTenantEventsIsolated(t *testing.T) {
	t.Parallel()
	url := startServer(t).ClientURL()
	log := captureLogs(t).logger()
	runScheduler(t, url, config.StoreJetStream, config.Safety{}, log)
	runWorker(t, url, "echo-1", echo.WorkTime{}, log)
	ctx, cancel := context.WithTimeout(context.Background(), 2*waitFor)
	defer cancel()

	type seen struct {
		mu   sync.Mutex
		jobs map[string]pb.JobState
	}
	listen := func(rc *rawConn, subject string) *seen {
		s := &seen{jobs: map[string]pb.JobState{}}
		if _, err := rc.Subscribe(subject, func(m *nats.Msg) {
			p, err := bus.Decode(m.Data, 0)
			if err != nil || len(p.GetJobAnswer().GetJobs()) != 1 {
				t.Errorf("event on %s: %v, %v", m.Subject, p, err)
				return
			}
			j := p.GetJobAnswer().GetJobs()[0]
			s.mu.Lock()
			s.jobs[j.GetJobId()] = j.GetState()
			s.mu.Unlock()
		}); err != nil {
			t.Fatal(err)
		}
		if err := rc.Flush(); err != nil {
			t.Fatal(err)
		}
		return s
	}
	state := func(s *seen, id string) pb.JobState {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.jobs[id]
	}
	aConn := raw(t, url, "tenant-a")
	if _, err := aConn.Subscribe("sys.job.event.b.>", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	aConn.refused(t, "subscription", "sys.job.event.b.>")
	if _, err := aConn.Subscribe("sys.job.event.>", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	aConn.refused(t, "subscription", "sys.job.event.>")
	aSeen := listen(aConn, "sys.job.event.a.>")
	adminConn := raw(t, url, "client")
	adminSeen := listen(adminConn, "sys.job.event.>")
	// Events are published while someone follows the job: each client may
	// announce it follows a job. The administrator follows b-job only, so
	// that it hears a-job's events through tenant-a's announcement alone.
	for _, f := range []struct {
		rc    *rawConn
		jobID string
	}{{aConn, "a-job"}, {adminConn, "b-job"}} {
		data, err := proto.Marshal(wire.FollowPacket("test", f.jobID))
		if err != nil {
			t.Fatal(err)
		}
		if err := f.rc.Publish(wire.SubjectJobFollow, data); err != nil {
			t.Fatal(err)
		}
		if err := f.rc.Flush(); err != nil {
			t.Fatal(err)
		}
	}

	submit(t, ctx, newClient(t, url, "tenant-b", log), &pb.JobRequest{JobId: "b-job", Topic: "job.echo"})
	submit(t, ctx, newClient(t, url, "tenant-a", log), &pb.JobRequest{JobId: "a-job", Topic: "job.echo"})
	systest.Eventually(t, waitFor, "both jobs' COMPLETED events at the administrator", func() bool {
		return state(adminSeen, "a-job") == lifecycle.Completed && state(adminSeen, "b-job") == lifecycle.Completed
	})
	systest.Eventually(t, waitFor, "tenant-a's job's COMPLETED event at tenant-a", func() bool { return state(aSeen, "a-job") == lifecycle.Completed })
	if s := state(aSeen, "b-job"); s != 0 {
		t.Errorf("tenant-a saw an event of tenant-b's job (%v)", s)
	}
}
