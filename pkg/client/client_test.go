package client_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cortex-os/core/internal/natstest"
	"github.com/cortex-os/core/internal/systest"
	"github.com/cortex-os/core/pkg/client"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/worker"
	"github.com/cortex-os/core/pkg/workertest"
)

// waitFor bounds every wait; reaching it is a failure, not a timing.
const waitFor = 20 * time.Second

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	t.Cleanup(cancel)
	return ctx
}

// gatedHandler completes a job with memory://sdk/<id> once its gate is
// opened (jobs named "quick-..." need none), and records what its context
// said when it ended early.
type gatedHandler struct {
	mu      sync.Mutex
	started map[string]bool
	ended   map[string]error
	gates   map[string]chan struct{}
}

func newGatedHandler() *gatedHandler {
	return &gatedHandler{started: map[string]bool{}, ended: map[string]error{}, gates: map[string]chan struct{}{}}
}

func (g *gatedHandler) gate(id string) chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.gates[id] == nil {
		g.gates[id] = make(chan struct{})
	}
	return g.gates[id]
}

func (g *gatedHandler) HandleJob(ctx context.Context, job *worker.Job) (worker.Result, error) {
	g.mu.Lock()
	g.started[job.ID()] = true
	g.mu.Unlock()
	if !strings.HasPrefix(job.ID(), "quick-") {
		select {
		case <-g.gate(job.ID()):
		case <-ctx.Done():
			g.mu.Lock()
			g.ended[job.ID()] = ctx.Err()
			g.mu.Unlock()
			return worker.Result{}, ctx.Err()
		}
	}
	return worker.Result{Ptr: "memory://sdk/" + job.ID()}, nil
}

func (g *gatedHandler) endedWith(id string) (error, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	err, ok := g.ended[id]
	return err, ok
}

// startSDK runs CortexOS and a worker for job.sdk with h.
func startSDK(t *testing.T, h worker.Handler, opts ...workertest.Option) *workertest.Env {
	t.Helper()
	env := workertest.Start(t, opts...)
	if _, err := env.RunWorker(worker.Config{Kind: "sdk", Handler: h}); err != nil {
		t.Fatal(err)
	}
	return env
}

// A job submitted, watched, waited for, got and listed, through a real
// scheduler and a pkg/worker worker.
func TestSubmitWatchWaitGetList(t *testing.T) {
	t.Parallel()
	g := newGatedHandler()
	env := startSDK(t, g)
	c, ctx := env.Client(), testCtx(t)

	job, err := c.Submit(ctx, &pb.JobRequest{JobId: "watched", Topic: "job.sdk"}, client.WithTraceID("trace-watched"))
	if err != nil {
		t.Fatal(err)
	}
	if job.GetJobId() != "watched" || job.GetTraceId() != "trace-watched" || client.IsTerminal(job.GetState()) {
		t.Fatalf("submitted: %v", job)
	}
	var states []string
	for j, err := range c.Watch(ctx, "watched") {
		if err != nil {
			t.Fatal(err)
		}
		states = append(states, client.StateName(j.GetState()))
		if j.GetState() == pb.JobState_JOB_STATE_RUNNING {
			close(g.gate("watched"))
		}
	}
	if len(states) == 0 || states[len(states)-1] != "COMPLETED" || !slices.Contains(states, "RUNNING") {
		t.Fatalf("Watch yielded %v, want RUNNING then COMPLETED last", states)
	}

	// Wait returns the ended job; an empty job id is filled in by Submit.
	req := &pb.JobRequest{Topic: "job.sdk"}
	if _, err := c.Submit(ctx, req); err != nil {
		t.Fatal(err)
	}
	if req.GetJobId() == "" {
		t.Fatal("Submit left the job id empty")
	}
	close(g.gate(req.GetJobId()))
	done, err := c.Wait(ctx, req.GetJobId())
	if err != nil {
		t.Fatal(err)
	}
	if done.GetState() != pb.JobState_JOB_STATE_COMPLETED || done.GetResultPtr() != "memory://sdk/"+req.GetJobId() {
		t.Fatalf("Wait: %v", done)
	}
	if got, err := c.Get(ctx, "watched"); err != nil || got.GetResultPtr() != "memory://sdk/watched" {
		t.Fatalf("Get: %v, %v", got, err)
	}
	list, err := c.List(ctx, client.ListOptions{State: pb.JobState_JOB_STATE_COMPLETED, Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, j := range list.Jobs {
		ids = append(ids, j.GetJobId())
	}
	slices.Sort(ids)
	if want := []string{req.GetJobId(), "watched"}; !slices.Equal(ids, slices.Sorted(slices.Values(want))) {
		t.Fatalf("List COMPLETED: %v, want %v", ids, want)
	}
	ws, err := c.Workers(ctx)
	if err != nil || len(ws) != 1 || !slices.Contains(ws[0].GetHeartbeat().GetTopics(), "job.sdk") {
		t.Fatalf("Workers: %v, %v", ws, err)
	}
}

// Cancelling a running job ends it CANCELLED, and the handler sees its
// context cancelled; cancelling it again is a conflict.
func TestCancelRunningJob(t *testing.T) {
	t.Parallel()
	g := newGatedHandler()
	env := startSDK(t, g)
	c, ctx := env.Client(), testCtx(t)
	if _, err := c.Submit(ctx, &pb.JobRequest{JobId: "victim", Topic: "job.sdk"}); err != nil {
		t.Fatal(err)
	}
	for j, err := range c.Watch(ctx, "victim") {
		if err != nil {
			t.Fatal(err)
		}
		if j.GetState() == pb.JobState_JOB_STATE_RUNNING {
			break
		}
	}
	job, err := c.Cancel(ctx, "victim", "changed my mind")
	if err != nil {
		t.Fatal(err)
	}
	if job.GetState() != pb.JobState_JOB_STATE_CANCELLED || job.GetError() != "changed my mind" {
		t.Fatalf("Cancel: %v", job)
	}
	var ended error
	systest.Eventually(t, waitFor, "the handler's context to end", func() bool {
		var ok bool
		ended, ok = g.endedWith("victim")
		return ok
	})
	if !errors.Is(ended, context.Canceled) {
		t.Fatalf("the handler's context ended with %v, want context.Canceled", ended)
	}
	_, err = c.Cancel(ctx, "victim", "")
	var refused *client.RefusedError
	if !errors.Is(err, client.ErrConflict) || !errors.As(err, &refused) || refused.Job.GetState() != pb.JobState_JOB_STATE_CANCELLED {
		t.Fatalf("cancelling an ended job: %v, want ErrConflict with the job", err)
	}
}

// Every kind of refusal matches ErrRefused and its own sentinel, and only
// that one.
func TestRefusalKinds(t *testing.T) {
	t.Parallel()
	policy := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(policy, []byte(`version: "test-1"
default: allow
rules:
  - id: forbidden-topic
    match: {topics: ["sys.destroy"]}
    decision: deny
    reason: forbidden topic
  - id: one-an-hour
    match: {tenants: ["greedy"]}
    decision: throttle
    reason: one an hour
    throttle: {rate: 1, per: 1h, burst: 1, by: tenant}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	env := startSDK(t, newGatedHandler(), workertest.WithPolicy(policy))
	c, ctx := env.Client(), testCtx(t)
	if _, err := c.Submit(ctx, &pb.JobRequest{JobId: "quick-once", Topic: "job.sdk", Tenant: "greedy"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Wait(ctx, "quick-once"); err != nil {
		t.Fatal(err)
	}
	kinds := []error{client.ErrInvalid, client.ErrDenied, client.ErrThrottled, client.ErrConflict, client.ErrNotFound}
	check := func(what string, err, want error) *client.RefusedError {
		t.Helper()
		var refused *client.RefusedError
		if !errors.Is(err, client.ErrRefused) || !errors.As(err, &refused) {
			t.Fatalf("%s: %v, want a *RefusedError", what, err)
		}
		for _, k := range kinds {
			if errors.Is(err, k) != (k == want) {
				t.Errorf("%s: %v: errors.Is(err, %q) = %v", what, err, k, !(k == want))
			}
		}
		return refused
	}

	_, err := c.Submit(ctx, &pb.JobRequest{Topic: "sys.job.submit"})
	check("an invalid topic", err, client.ErrInvalid)

	_, err = c.Submit(ctx, &pb.JobRequest{JobId: "doomed", Topic: "sys.destroy"})
	r := check("a denied job", err, client.ErrDenied)
	if r.RuleID != "forbidden-topic" || r.Job.GetState() != pb.JobState_JOB_STATE_DENIED || r.Job.GetJobId() != "doomed" {
		t.Errorf("denial: rule %q, job %v", r.RuleID, r.Job)
	}

	_, err = c.Submit(ctx, &pb.JobRequest{Topic: "job.sdk", Tenant: "greedy"})
	r = check("a throttled job", err, client.ErrThrottled)
	if r.RuleID != "one-an-hour" || r.RetryAfter <= 0 || !r.Retryable {
		t.Errorf("throttle: rule %q, retry after %s, retryable %v", r.RuleID, r.RetryAfter, r.Retryable)
	}

	_, err = c.Submit(ctx, &pb.JobRequest{JobId: "quick-once", Topic: "job.sdk.other"})
	check("a job_id taken by other content", err, client.ErrConflict)
	if _, err := c.Submit(ctx, &pb.JobRequest{JobId: "quick-again", Topic: "job.sdk"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Wait(ctx, "quick-again"); err != nil {
		t.Fatal(err)
	}
	if again, err := c.Submit(ctx, &pb.JobRequest{JobId: "quick-again", Topic: "job.sdk"}); err != nil || again.GetState() != pb.JobState_JOB_STATE_COMPLETED {
		t.Errorf("the same job again: %v, %v; want it as it is, COMPLETED", again, err)
	}

	_, err = c.Cancel(ctx, "quick-once", "")
	if r := check("a cancel of an ended job", err, client.ErrConflict); r.Job.GetJobId() != "quick-once" {
		t.Errorf("cancel conflict: job %v", r.Job)
	}
	_, err = c.Get(ctx, "nobody")
	check("an unknown job", err, client.ErrNotFound)
	_, err = c.Cancel(ctx, "nobody", "")
	check("a cancel of an unknown job", err, client.ErrNotFound)
	_, err = c.RetryDeadLetter(ctx, "nobody")
	check("a re-drive of no dead letter", err, client.ErrNotFound)
	_, err = c.Get(ctx, "no spaces")
	check("an impossible job id", err, client.ErrInvalid)

	// What the client refuses itself is ErrInvalid, not a refusal.
	for what, err := range map[string]error{
		"Get of an empty id":    second(c.Get(ctx, "")),
		"Cancel of an empty":    second(c.Cancel(ctx, "", "")),
		"a nil request":         second(c.Submit(ctx, nil)),
		"a negative limit":      second(c.List(ctx, client.ListOptions{Limit: -1})),
		"dead letters by state": second(c.DeadLetters(ctx, client.ListOptions{State: pb.JobState_JOB_STATE_FAILED})),
	} {
		if !errors.Is(err, client.ErrInvalid) || errors.Is(err, client.ErrRefused) {
			t.Errorf("%s: %v, want ErrInvalid before sending", what, err)
		}
	}
}

func second[T any](_ T, err error) error { return err }

// With no scheduler, a query fails at once with ErrNoScheduler; a
// submission (which a durable intake would keep) is not answered in time.
func TestNoScheduler(t *testing.T) {
	t.Parallel()
	c, err := client.Connect(natstest.URL(t), client.Options{RequestTimeout: 200 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := testCtx(t)
	if _, err := c.Get(ctx, "x"); !errors.Is(err, client.ErrNoScheduler) || errors.Is(err, client.ErrRefused) {
		t.Errorf("Get with no scheduler: %v, want ErrNoScheduler", err)
	}
	if _, err := c.Workers(ctx); !errors.Is(err, client.ErrNoScheduler) {
		t.Errorf("Workers with no scheduler: %v, want ErrNoScheduler", err)
	}
	if _, err := c.Submit(ctx, &pb.JobRequest{Topic: "job.x"}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Submit with no scheduler: %v, want context.DeadlineExceeded", err)
	}
	// Watch rides out a missing scheduler until its context ends.
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if job, err := c.Wait(short, "x"); job != nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Wait with no scheduler: %v, %v; want no job and context.DeadlineExceeded", job, err)
	}
}

func TestConnectErrors(t *testing.T) {
	t.Parallel()
	if _, err := client.Connect("nats://127.0.0.1:1", client.Options{}); !errors.Is(err, nats.ErrNoServers) {
		t.Errorf("Connect to nothing: %v, want nats.ErrNoServers", err)
	}
	_, err := client.Connect(natstest.URL(t), client.Options{Credentials: client.Credentials{User: "u", Token: "t"}})
	if err == nil || !strings.Contains(err.Error(), "only one of") {
		t.Errorf("two ways to authenticate: %v", err)
	}
	for _, id := range []string{"a.b", "a b", "*", ">"} {
		if _, err := client.Connect(natstest.URL(t), client.Options{Identity: id}); !errors.Is(err, client.ErrInvalid) {
			t.Errorf("identity %q: %v, want ErrInvalid", id, err)
		}
	}
	if _, err := client.New(nil, client.Options{}); !errors.Is(err, client.ErrInvalid) {
		t.Errorf("New(nil): %v", err)
	}
}

// Printing credentials never shows a secret.
func TestCredentialsHideSecrets(t *testing.T) {
	t.Parallel()
	c := client.Credentials{User: "alice", Password: "hunter2-secret", CA: "ca.pem"}
	tok := client.Credentials{Token: "token-secret"}
	var logs strings.Builder
	slog.New(slog.NewTextHandler(&logs, nil)).Info("x", "creds", c, "token", tok)
	for _, s := range []string{fmt.Sprint(c), fmt.Sprintf("%+v", c), fmt.Sprintf("%#v", c), fmt.Sprint(tok), fmt.Sprintf("%#v", tok), logs.String()} {
		if strings.Contains(s, "secret") {
			t.Errorf("a secret printed: %s", s)
		}
	}
	if got := c.String(); got != "user alice, TLS (ca)" {
		t.Errorf("String() = %q", got)
	}
	if err := (client.Credentials{CA: "/nonexistent/ca.pem"}).Validate(); err == nil || !strings.Contains(err.Error(), "nats.ca") {
		t.Errorf("Validate of a missing CA: %v", err)
	}
}

func TestStates(t *testing.T) {
	t.Parallel()
	terminal := map[pb.JobState]bool{
		pb.JobState_JOB_STATE_COMPLETED: true, pb.JobState_JOB_STATE_FAILED: true, pb.JobState_JOB_STATE_DENIED: true,
		pb.JobState_JOB_STATE_TIMEOUT: true, pb.JobState_JOB_STATE_CANCELLED: true,
	}
	for v := range pb.JobState_name {
		s := pb.JobState(v)
		if client.IsTerminal(s) != terminal[s] {
			t.Errorf("IsTerminal(%s) = %v", s, !terminal[s])
		}
		if want := !terminal[s] && s != pb.JobState_JOB_STATE_UNSPECIFIED; client.IsActive(s) != want {
			t.Errorf("IsActive(%s) = %v", s, !want)
		}
		if s == pb.JobState_JOB_STATE_UNSPECIFIED {
			continue
		}
		for _, name := range []string{client.StateName(s), strings.ToLower(client.StateName(s)), s.String()} {
			if got, err := client.ParseState(name); err != nil || got != s {
				t.Errorf("ParseState(%q) = %v, %v", name, got, err)
			}
		}
	}
	if _, err := client.ParseState("done"); err == nil {
		t.Error("ParseState(done) succeeded")
	}
}
