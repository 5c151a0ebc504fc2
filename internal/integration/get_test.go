package integration_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cortex-os/core/internal/lifecycle"
	"github.com/cortex-os/core/internal/natstest"
	"github.com/cortex-os/core/internal/safety"
	"github.com/cortex-os/core/internal/scheduler"
	"github.com/cortex-os/core/internal/systest"
	"github.com/cortex-os/core/pkg/client"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// heldSafety admits every job, but holds the check of job "held" until
// released: the moment a submission has been received and is not yet
// recorded.
type heldSafety struct {
	holding chan struct{} // closed when the held check starts
	release chan struct{}
	once    sync.Once
}

func (h *heldSafety) Check(ctx context.Context, req *pb.JobRequest) (safety.Verdict, error) {
	if req.GetJobId() == "held" {
		h.once.Do(func() { close(h.holding) })
		<-h.release
	}
	return scheduler.NewSafetyStub().Check(ctx, req)
}

// The glitch of cortex job get answering "job not found" for a job that
// exists: a get that reaches the scheduler between the moment its
// submission was received and the moment the job is recorded (a backlog of
// submissions, a slow check) used to be answered "not found", and a
// client gave up. It is answered "not recorded yet", retryable, and the
// get after the job is recorded finds it. Made deterministic by holding
// the job's safety check: both intakes, core NATS and durable.
func TestGetOfAJobBeingRecordedIsNotNotFound(t *testing.T) {
	skipShort(t)
	t.Parallel()
	for _, mode := range storeModes {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			url := natstest.URL(t)
			held := &heldSafety{holding: make(chan struct{}), release: make(chan struct{})}
			s := startScheduler(t, url, "s-held", mode, func(c *scheduler.Config) { c.Safety = held })
			sub := systest.Connect(t, url, "submitter")
			c := systest.Client(t, systest.Connect(t, url, "getter"), client.Options{SenderID: "getter"})
			ctx := ctxFor(t)

			if err := systest.PublishSubmit(sub, "submitter", "", &pb.JobRequest{JobId: "held", Topic: "job.none"}); err != nil {
				t.Fatal(err)
			}
			select {
			case <-held.holding:
			case <-ctx.Done():
				t.Fatal("the held submission never reached the safety check")
			}
			_, err := c.Get(ctx, "held")
			var re *client.RefusedError
			if !errors.As(err, &re) || !re.Retryable || !strings.Contains(re.Reason, scheduler.NotRecordedYet) {
				t.Fatalf("get while the job is being recorded: %v; want a retryable %q", err, scheduler.NotRecordedYet)
			}
			// pkg/client asks again for a second before it gives the
			// retryable answer back: the scheduler counted each.
			if n := s.engine.Stats().NotYetRecorded; n < 1 {
				t.Errorf("NotYetRecorded = %d, want at least 1", n)
			}
			// While anything is being recorded, the scheduler cannot tell a
			// job nobody submitted from one on its way: retryable too.
			if _, err := c.Get(ctx, "never-submitted"); !errors.As(err, &re) || !re.Retryable {
				t.Errorf("get of a job nobody submitted, while one is being recorded: %v; want a retryable answer too", err)
			}
			close(held.release)
			systest.Eventually(t, waitFor, "the held job to be found once recorded", func() bool {
				j, err := c.Get(ctx, "held")
				return err == nil && j.GetState() == lifecycle.Pending
			})
			systest.Eventually(t, waitFor, "a job nobody submitted to be not found once nothing is being recorded", func() bool {
				_, err := c.Get(ctx, "never-submitted")
				return errors.As(err, &re) && errors.Is(err, client.ErrNotFound) && !re.Retryable && strings.Contains(re.Reason, "not found")
			})
		})
	}
}

// Gets during churn: many clients submit (each waiting for its answer) while
// others read the jobs already answered, concurrently, on both stores. No
// read of a job whose submission was answered is ever answered other than
// with the job.
func TestGetDuringChurnFindsEveryAnsweredJob(t *testing.T) {
	skipShort(t)
	t.Parallel()
	for _, mode := range storeModes {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			url := natstest.URL(t)
			s := startScheduler(t, url, "s-churn", mode)
			w := startWorker(t, url, 100*time.Millisecond, nil)
			waitRegistered(t, s, w.w.ID())
			var (
				mu       sync.Mutex
				answered []string
				stop     atomic.Bool
				reads    atomic.Int64
				subs, rd sync.WaitGroup
			)
			errs := make(chan error, 16)
			for g := range 3 {
				subs.Go(func() {
					c := systest.Client(t, systest.Connect(t, url, "sub"), client.Options{SenderID: "sub"})
					for k := range 150 {
						j, err := c.Submit(ctxFor(t), &pb.JobRequest{JobId: fmt.Sprintf("churn-%d-%d", g, k), Topic: "job.echo"})
						if err != nil {
							errs <- err
							return
						}
						mu.Lock()
						answered = append(answered, j.GetJobId())
						mu.Unlock()
					}
				})
			}
			for r := range 3 {
				rd.Go(func() {
					c := systest.Client(t, systest.Connect(t, url, "get"), client.Options{SenderID: "get"})
					for k := 0; !stop.Load(); k++ {
						mu.Lock()
						n := len(answered)
						var id string
						if n > 0 {
							id = answered[n-1-(k*7+r)%min(n, 10)] // the newest, mostly
						}
						mu.Unlock()
						if id == "" {
							continue
						}
						if _, err := c.Get(ctxFor(t), id); err != nil {
							errs <- fmt.Errorf("get %s during churn: %w", id, err)
							return
						}
						reads.Add(1)
					}
				})
			}
			subs.Wait()
			stop.Store(true)
			rd.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			if reads.Load() == 0 {
				t.Error("no reads during the churn")
			}
		})
	}
}
