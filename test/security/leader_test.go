package security

import (
	"context"
	"testing"
	"time"

	"github.com/cortex-os/core/internal/echo"
	"github.com/cortex-os/core/internal/infrastructure/config"
	"github.com/cortex-os/core/internal/leader"
	"github.com/cortex-os/core/internal/lifecycle"
	"github.com/cortex-os/core/internal/system"
	"github.com/cortex-os/core/internal/systest"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// Two elected schedulers (scheduler.leader_election) run under the shipped
// permissions: the scheduler user may create, renew, read and give up the
// lease in CORTEX_LEADER; one leads, the job completes, and when the leader
// stops the other takes over and the next job completes. No part is refused
// anything (captureLogs).
func TestElectedSchedulersUnderShippedPermissions(t *testing.T) {
	t.Parallel()
	url := startServer(t).ClientURL()
	logs := captureLogs(t)
	log := logs.logger()
	ctx, cancel := context.WithTimeout(context.Background(), 3*waitFor)
	defer cancel()
	run := func(id string) (stop func()) {
		sctx, scancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			done <- system.RunScheduler(sctx, system.SchedulerOptions{
				NatsURL: url, ID: id, Logger: log, NatsOptions: natsOptions(t, creds("scheduler")),
				Settings: config.Scheduler{Store: config.StoreJetStream, RequireWorkerIdentity: true, LeaderElection: true, LeaderLease: time.Second},
				Clients:  shippedClients,
			})
		}()
		return func() {
			scancel()
			if err := <-done; err != nil {
				t.Errorf("%s: %v", id, err)
			}
		}
	}
	stopA := run("sched-a")
	time.Sleep(200 * time.Millisecond) // a first: the streams are created once
	stopB := run("sched-b")
	defer stopB()
	runWorker(t, url, "echo-1", echo.WorkTime{}, log)
	c := newClient(t, url, "client", log)
	submit(t, ctx, c, &pb.JobRequest{JobId: "elected-1", Topic: "job.echo"})
	if j := watch(t, ctx, c, "elected-1", terminal); j.GetState() != lifecycle.Completed {
		t.Fatalf("first job ended %s", lifecycle.Name(j.GetState()))
	}
	stopA()
	js, err := connectAs(t, url, "scheduler", log).JetStream()
	if err != nil {
		t.Fatal(err)
	}
	el, err := leader.New(ctx, leader.Config{JS: js, ID: "observer", Lease: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	systest.Eventually(t, waitFor, "sched-b holds the lease", func() bool {
		h, _, err := el.Holder(ctx)
		return err == nil && h == "sched-b"
	})
	submit(t, ctx, c, &pb.JobRequest{JobId: "elected-2", Topic: "job.echo"})
	if j := watch(t, ctx, c, "elected-2", terminal); j.GetState() != lifecycle.Completed {
		t.Fatalf("second job ended %s", lifecycle.Name(j.GetState()))
	}
}
