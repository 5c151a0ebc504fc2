package client_test

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cortex-os/core/internal/infrastructure/bus"
	"github.com/cortex-os/core/internal/jobstore"
	"github.com/cortex-os/core/internal/jobstore/kvstore"
	"github.com/cortex-os/core/internal/natstest"
	"github.com/cortex-os/core/internal/scheduler"
	"github.com/cortex-os/core/internal/systest"
	"github.com/cortex-os/core/pkg/client"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// failingCreates is a job store whose first Create calls fail, as a store
// that is down for a moment does.
type failingCreates struct {
	jobstore.Store
	left atomic.Int32
}

var errStoreDown = errors.New("store down")

func (s *failingCreates) Create(ctx context.Context, job *pb.JobInfo) (jobstore.Record, error) {
	if s.left.Add(-1) >= 0 {
		return jobstore.Record{}, errStoreDown
	}
	return s.Store.Create(ctx, job)
}

// startDurable runs a scheduler keeping its jobs in JetStream at url, as
// cortex-scheduler does (its intake the stream CORTEX_JOB_SUBMIT); its
// first failCreates job writes fail.
func startDurable(t *testing.T, url string, failCreates int32) *scheduler.Engine {
	t.Helper()
	ctx := testCtx(t)
	b := systest.ConnectWith(t, bus.Config{URL: url, Name: "scheduler"})
	js, err := b.JetStream()
	if err != nil {
		t.Fatal(err)
	}
	kv, err := kvstore.New(ctx, js, kvstore.Config{SkipOwnWrites: true})
	if err != nil {
		t.Fatal(err)
	}
	store := &failingCreates{Store: kv}
	store.left.Store(failCreates)
	b.SetDurable(true)
	e, err := scheduler.New(scheduler.Config{
		Bus: b, Safety: scheduler.NewSafetyStub(), Registry: scheduler.NewMemoryRegistry(),
		Strategy: scheduler.NewNaiveStrategy(), Store: store, DeadLetters: jobstore.NewMemoryDeadLetters(),
		ID: "durable-scheduler", Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Stop(context.Background()) })
	return e
}

// intakeStream returns the intake stream's state: how many submissions it
// holds, and how many of them no scheduler has had acknowledged.
func intakeStream(t *testing.T, url string) (msgs uint64, unhandled int) {
	t.Helper()
	ctx := testCtx(t)
	js, err := jetstream.New(natstest.Conn(t, url))
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, bus.StreamName(wire.SubjectSubmit))
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for name := range st.ConsumerNames(ctx).Name() {
		c, err := st.Consumer(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		ci, err := c.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		unhandled += int(ci.NumPending) + ci.NumAckPending
	}
	return info.State.Msgs, unhandled
}

// With a durable scheduler running, a submission is answered without the
// intake stream storing it: the job's record is its only write.
func TestSubmitSkipsTheIntakeStream(t *testing.T) {
	t.Parallel()
	url := natstest.URL(t)
	e := startDurable(t, url, 0)
	c, ctx := systest.Client(t, systest.Connect(t, url, "client"), client.Options{RequestTimeout: waitFor}), testCtx(t)
	job, err := c.Submit(ctx, &pb.JobRequest{Topic: "job.x"})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := c.Get(ctx, job.GetJobId()); err != nil || got.GetJobId() != job.GetJobId() {
		t.Fatalf("Get after Submit: %v, %v", got, err)
	}
	if msgs, _ := intakeStream(t, url); msgs != 0 {
		t.Errorf("the intake stream holds %d submissions; want 0", msgs)
	}
	if s := e.Stats(); s.Accepted != 1 || s.Duplicates != 0 {
		t.Errorf("accepted %d, duplicates %d; want 1, 0", s.Accepted, s.Duplicates)
	}
}

// With no scheduler running, an unanswered submission is published again
// plainly after Submit's patience: the intake stream keeps it, and a
// scheduler started later records it, once, and answers the client still
// waiting. (Not parallel: it shortens Submit's patience.)
func TestSubmitUnansweredIsKeptByTheStream(t *testing.T) {
	defer client.SetSubmitPatience(100 * time.Millisecond)()
	url := natstest.URL(t)
	ctx := testCtx(t)
	if _, err := systest.ConnectWith(t, bus.Config{URL: url}).EnsureStream(ctx, wire.SubjectSubmit, wire.SubjectSubmit+".>"); err != nil {
		t.Fatal(err)
	}
	c := systest.Client(t, systest.Connect(t, url, "client"), client.Options{RequestTimeout: waitFor})
	type submitted struct {
		job *pb.JobInfo
		err error
	}
	done := make(chan submitted, 1)
	req := &pb.JobRequest{JobId: "waiting", Topic: "job.x"}
	go func() {
		job, err := c.Submit(ctx, req)
		done <- submitted{job, err}
	}()
	systest.Eventually(t, waitFor, "the submission kept by the stream", func() bool { msgs, _ := intakeStream(t, url); return msgs == 1 })
	select {
	case s := <-done:
		t.Fatalf("Submit returned before a scheduler ran: %v, %v", s.job, s.err)
	default:
	}
	e := startDurable(t, url, 0)
	s := <-done
	if s.err != nil || s.job.GetJobId() != req.GetJobId() {
		t.Fatalf("Submit once a scheduler runs: %v, %v", s.job, s.err)
	}
	systest.Eventually(t, waitFor, "the submission acknowledged", func() bool { _, n := intakeStream(t, url); return n == 0 })
	if st := e.Stats(); st.Accepted != 1 || st.Duplicates != 0 {
		t.Errorf("accepted %d, duplicates %d; want 1, 0", st.Accepted, st.Duplicates)
	}
}

// A submission unanswered when Submit's context ends is published plainly
// before Submit returns, whatever its patience: the stream keeps it.
// (Not parallel: it lengthens Submit's patience.)
func TestSubmitGivingUpLeavesItToTheStream(t *testing.T) {
	defer client.SetSubmitPatience(time.Hour)()
	url := natstest.URL(t)
	ctx := testCtx(t)
	if _, err := systest.ConnectWith(t, bus.Config{URL: url}).EnsureStream(ctx, wire.SubjectSubmit, wire.SubjectSubmit+".>"); err != nil {
		t.Fatal(err)
	}
	c := systest.Client(t, systest.Connect(t, url, "client"), client.Options{RequestTimeout: 300 * time.Millisecond})
	if _, err := c.Submit(ctx, &pb.JobRequest{Topic: "job.x"}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Submit with no scheduler: %v; want context.DeadlineExceeded", err)
	}
	systest.Eventually(t, waitFor, "the submission kept by the stream", func() bool { msgs, _ := intakeStream(t, url); return msgs == 1 })
}

// When the scheduler's store write fails, the client is answered "publish
// it for the stream", does, and gets the job recorded once. (Not
// parallel: it lengthens Submit's patience, so that only that answer can
// make it publish again.)
func TestSubmitRetriesWhenTheStoreFails(t *testing.T) {
	defer client.SetSubmitPatience(time.Hour)()
	url := natstest.URL(t)
	e := startDurable(t, url, 1)
	c, ctx := systest.Client(t, systest.Connect(t, url, "client"), client.Options{RequestTimeout: waitFor}), testCtx(t)
	job, err := c.Submit(ctx, &pb.JobRequest{Topic: "job.x"})
	if err != nil {
		t.Fatal(err)
	}
	if s := e.Stats(); s.StoreErrors != 1 || s.Accepted != 1 || s.Duplicates != 0 {
		t.Errorf("store errors %d, accepted %d, duplicates %d; want 1, 1, 0", s.StoreErrors, s.Accepted, s.Duplicates)
	}
	if got, err := c.Get(ctx, job.GetJobId()); err != nil || got.GetJobId() != job.GetJobId() {
		t.Fatalf("Get after Submit: %v, %v", got, err)
	}
	if msgs, _ := intakeStream(t, url); msgs != 1 {
		t.Errorf("the intake stream holds %d submissions; want 1 (the plain one)", msgs)
	}
}

// A submission published plainly for want of an answer, whose first copy
// is then answered "the store failed", is not given up for that late
// answer: the plain copy's answer ends Submit, the job recorded once.
// (Not parallel: it shortens Submit's patience, so that the plain copy
// is most often out before the first copy's answer.)
func TestSubmitLateRetryAnswerAfterRepublishing(t *testing.T) {
	defer client.SetSubmitPatience(time.Microsecond)()
	url := natstest.URL(t)
	e := startDurable(t, url, 1)
	c, ctx := systest.Client(t, systest.Connect(t, url, "client"), client.Options{RequestTimeout: waitFor}), testCtx(t)
	job, err := c.Submit(ctx, &pb.JobRequest{Topic: "job.x"})
	if err != nil {
		t.Fatal(err)
	}
	systest.Eventually(t, waitFor, "the plain copy handled", func() bool { _, n := intakeStream(t, url); return n == 0 })
	if s := e.Stats(); s.StoreErrors != 1 || s.Accepted != 1 {
		t.Errorf("store errors %d, accepted %d; want 1, 1", s.StoreErrors, s.Accepted)
	}
	if got, err := c.Get(ctx, job.GetJobId()); err != nil || got.GetJobId() != job.GetJobId() {
		t.Fatalf("Get after Submit: %v, %v", got, err)
	}
}
