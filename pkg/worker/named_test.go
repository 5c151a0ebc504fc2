package worker_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cortex-os/core/internal/natstest"
	"github.com/cortex-os/core/internal/systest"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
	"github.com/cortex-os/core/pkg/worker"
)

// With NamedSubjects a worker names itself in every subject it publishes on,
// so that the server's permissions can hold it to its identity; without, it
// uses the design document's subjects.
func TestNamedSubjects(t *testing.T) {
	t.Parallel()
	for _, named := range []bool{false, true} {
		url := natstest.URL(t)
		observer := systest.Connect(t, url, "")
		var (
			mu       sync.Mutex
			subjects = map[string]bool{}
		)
		drain, err := observer.SubscribeWithSubject("sys.>", "", func(subject string, _ *pb.BusPacket) {
			mu.Lock()
			subjects[subject] = true
			mu.Unlock()
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = drain() })
		flush(t, observer)

		w, err := worker.New(systest.Connect(t, url, "").Conn(), worker.Config{
			Kind: "named", ID: "w-1", NamedSubjects: named, Logger: discard,
			Handler: worker.HandlerFunc(func(context.Context, *worker.Job) (worker.Result, error) { return worker.Result{Ptr: "ok"}, nil }),
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- w.Run(ctx) }()
		t.Cleanup(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(waitFor):
				t.Error("worker did not stop")
			}
		})

		hbSubject, resultSubject := "sys.heartbeat.named", "sys.job.result"
		if named {
			hbSubject, resultSubject = "sys.heartbeat.named.w-1", "sys.job.result.w-1"
		}
		seen := func(s string) func() bool {
			return func() bool { mu.Lock(); defer mu.Unlock(); return subjects[s] }
		}
		systest.Eventually(t, waitFor, fmt.Sprintf("a heartbeat on %s", hbSubject), seen(hbSubject))
		// Subscribed once it heartbeats: a job now reaches it.
		if err := observer.Publish("job.named", wire.JobRequestPacket("t", "test", &pb.JobRequest{JobId: "j", Topic: "job.named"})); err != nil {
			t.Fatal(err)
		}
		systest.Eventually(t, waitFor, fmt.Sprintf("a result on %s", resultSubject), seen(resultSubject))
		mu.Lock()
		for s := range subjects {
			if s != hbSubject && s != resultSubject {
				t.Errorf("named %v: published on %s", named, s)
			}
		}
		mu.Unlock()
	}
}
