package client_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/cortex-os/core/internal/natstest"
	"github.com/cortex-os/core/pkg/client"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// fakeScheduler records the subjects of the requests it saw, each with where
// the answer was asked for.
type fakeScheduler struct {
	mu   sync.Mutex
	seen []string // subject reply=<reply or Cortex-Reply-To>
}

func (f *fakeScheduler) record(s string) {
	f.mu.Lock()
	f.seen = append(f.seen, s)
	f.mu.Unlock()
}

func (f *fakeScheduler) all() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.seen...)
}

// answer sends reply an ok JobAnswer about job "j", COMPLETED.
func answer(t *testing.T, nc *nats.Conn, reply string) {
	p := wire.NewPacket("", "fake-scheduler")
	p.Payload = &pb.BusPacket_JobAnswer{JobAnswer: &pb.JobAnswer{Ok: true, Jobs: []*pb.JobInfo{
		{JobId: "j", State: pb.JobState_JOB_STATE_COMPLETED, Attempt: 1},
	}}}
	data, err := proto.Marshal(p)
	if err != nil {
		t.Error(err)
		return
	}
	_ = nc.Publish(reply, data)
}

// A client with an Identity submits, queries (gets, lists, dead letters,
// re-drives, workers) and cancels on the subjects that name it and reads its
// answers under _INBOX.<identity>.; without one it uses the bare subjects.
func TestIdentityInSubjects(t *testing.T) {
	t.Parallel()
	url := natstest.URL(t)
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var f fakeScheduler
	_, err = nc.Subscribe("sys.job.>", func(m *nats.Msg) {
		reply := m.Reply
		if r := m.Header.Get(wire.HeaderReplyTo); r != "" {
			reply = r
		}
		f.record(m.Subject + " reply=" + reply)
		answer(t, nc, reply)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	for _, identity := range []string{"alice", ""} {
		c, err := client.Connect(url, client.Options{Identity: identity, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Submit(ctx, &pb.JobRequest{Topic: "job.x"}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Get(ctx, "j"); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Cancel(ctx, "j", ""); err != nil {
			t.Fatal(err)
		}
		if _, err := c.List(ctx, client.ListOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.DeadLetters(ctx, client.ListOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.RetryDeadLetter(ctx, "j"); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Workers(ctx); err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	seen := f.all()
	var wants []string
	for _, id := range []string{".alice", ""} {
		inbox := "_INBOX" + id + "."
		for _, verb := range []string{"submit", "query", "cancel", "query", "query", "query", "query"} {
			wants = append(wants, "sys.job."+verb+id+" reply="+inbox)
		}
	}
	if len(seen) != len(wants) {
		t.Fatalf("the fake scheduler saw %q, want %d requests", seen, len(wants))
	}
	for i, want := range wants {
		if !strings.HasPrefix(seen[i], want) || (!strings.Contains(want, "alice") && strings.Contains(seen[i], "alice")) {
			t.Errorf("request %d: %q, want %q...", i, seen[i], want)
		}
	}

	// A connection given to New must read answers where the identity does.
	if _, err := client.New(nc, client.Options{Identity: "alice"}); !errors.Is(err, client.ErrInvalid) || !strings.Contains(err.Error(), "CustomInboxPrefix") {
		t.Errorf("New with an identity on a connection with another inbox: %v", err)
	}
	own, err := nats.Connect(url, nats.CustomInboxPrefix(client.InboxPrefix("alice")))
	if err != nil {
		t.Fatal(err)
	}
	defer own.Close()
	if _, err := client.New(own, client.Options{Identity: "alice"}); err != nil {
		t.Errorf("New with the identity's inbox: %v", err)
	}
	// Dial's connection reads answers under the identity's inbox too.
	dialed, err := client.Dial(url, client.Options{Identity: "bob", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer dialed.Close()
	if inbox := dialed.NewInbox(); !strings.HasPrefix(inbox, "_INBOX.bob.") {
		t.Errorf("Dial with identity bob: inbox %s", inbox)
	}
}

// A scheduler that takes a query and never answers it (it died holding it)
// must not stall a watch: each query has its own bound, and the next one is
// answered.
func TestWatchOutlivesAnUnansweredQuery(t *testing.T) {
	t.Parallel()
	url := natstest.URL(t)
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var (
		mu      sync.Mutex
		queries int
	)
	_, err = nc.Subscribe(wire.SubjectQuery, func(m *nats.Msg) {
		mu.Lock()
		queries++
		n := queries
		mu.Unlock()
		if n == 1 {
			return // swallowed
		}
		answer(t, nc, m.Reply)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(nc, client.Options{RequestTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	// The watch's own context has no deadline to rescue it; the test's
	// bound only keeps a broken Watch from hanging the run.
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	job, err := c.Wait(ctx, "j")
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if job.GetState() != pb.JobState_JOB_STATE_COMPLETED {
		t.Fatalf("Wait: %v", job)
	}
	mu.Lock()
	defer mu.Unlock()
	if queries < 2 {
		t.Fatalf("%d queries, want the swallowed one and another", queries)
	}
}

// A watch whose context ends while a query is in flight yields the job as
// it last saw it, with an error wrapping the context's cause; Wait returns
// the same.
func TestWatchCancelledKeepsLastState(t *testing.T) {
	t.Parallel()
	url := natstest.URL(t)
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var (
		mu      sync.Mutex
		queries int
	)
	inFlight := make(chan struct{}, 16)
	_, err = nc.Subscribe(wire.SubjectQuery, func(m *nats.Msg) {
		mu.Lock()
		queries++
		n := queries
		mu.Unlock()
		if n%2 == 0 {
			inFlight <- struct{}{}
			return // the second query of each watch is never answered
		}
		p := wire.NewPacket("", "fake-scheduler")
		p.Payload = &pb.BusPacket_JobAnswer{JobAnswer: &pb.JobAnswer{Ok: true, Jobs: []*pb.JobInfo{
			{JobId: "j", State: pb.JobState_JOB_STATE_PENDING, PendingReason: "no worker"},
		}}}
		data, err := proto.Marshal(p)
		if err != nil {
			t.Error(err)
			return
		}
		_ = m.Respond(data)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(nc, client.Options{RequestTimeout: waitFor})
	if err != nil {
		t.Fatal(err)
	}
	pending := func(j *pb.JobInfo) bool {
		return j.GetState() == pb.JobState_JOB_STATE_PENDING && j.GetPendingReason() == "no worker"
	}
	cancelInFlight := func() (context.Context, func()) {
		ctx, cancel := context.WithCancelCause(testCtx(t))
		go func() {
			select {
			case <-inFlight:
				cancel(errGaveUp)
			case <-ctx.Done():
			}
		}()
		return ctx, func() { cancel(nil) }
	}

	ctx, stop := cancelInFlight()
	defer stop()
	type step struct {
		job *pb.JobInfo
		err error
	}
	var steps []step
	for job, err := range c.Watch(ctx, "j") {
		steps = append(steps, step{job, err})
	}
	if len(steps) != 2 || steps[0].err != nil || !pending(steps[0].job) {
		t.Fatalf("Watch yielded %v; want the PENDING job, then it again with the cancellation", steps)
	}
	if !pending(steps[1].job) || !errors.Is(steps[1].err, errGaveUp) {
		t.Fatalf("after the cancellation Watch yielded %v, %v; want the PENDING job it saw and the cause", steps[1].job, steps[1].err)
	}

	ctx, stop = cancelInFlight()
	defer stop()
	job, err := c.Wait(ctx, "j")
	if !pending(job) || !errors.Is(err, errGaveUp) {
		t.Fatalf("Wait = %v, %v; want the PENDING job it saw and the cause", job, err)
	}
}

var errGaveUp = errors.New("gave up")
