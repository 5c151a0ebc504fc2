package scheduler_test

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/cortex-os/core/internal/lifecycle"
	"github.com/cortex-os/core/internal/scheduler"
	"github.com/cortex-os/core/internal/systest"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

func ids(jobs []*pb.JobInfo) []string {
	out := make([]string, len(jobs))
	for i, j := range jobs {
		out[i] = j.GetJobId()
	}
	sort.Strings(out)
	return out
}

func TestQueryByIDAndListByState(t *testing.T) {
	t.Parallel()
	r := newRig(t, withConfig(func(c *scheduler.Config) { c.NoWorkerRetry = time.Hour }))
	r.bus.fallback("job.run", ackBy("w-1"))
	r.bus.fallback("job.none", noResponders())
	r.submit(request("run-1", "job.run"), "t", "")
	r.submit(request("done-1", "job.run"), "t", "")
	r.submit(request("pend-1", "job.none"), "t", "")
	r.submit(request("deny-1", scheduler.ForbiddenTopic), "t", "")
	r.waitState("run-1", lifecycle.Running, 1)
	r.waitState("done-1", lifecycle.Running, 1)
	r.result(completed("done-1", 1, "w-1"))
	r.waitJob("pend-1", "pending", func(j *pb.JobInfo) bool {
		return j.GetState() == lifecycle.Pending && j.GetAttempt() == 0 && j.GetPendingReason() != "waiting to be dispatched"
	})

	a := r.query(&pb.JobQuery{JobId: "run-1"})
	if !a.GetOk() || len(a.GetJobs()) != 1 || a.GetJobs()[0].GetWorkerId() != "w-1" || a.GetJobs()[0].GetState() != lifecycle.Running {
		t.Errorf("query run-1 = %v", a)
	}
	if a := r.query(&pb.JobQuery{JobId: "nope"}); a.GetOk() || a.GetRetryable() || !strings.Contains(a.GetError(), "not found") {
		t.Errorf("query of an unknown job = %v", a)
	}
	if a := r.query(&pb.JobQuery{JobId: "bad id"}); a.GetOk() || a.GetRetryable() {
		t.Errorf("query of an impossible id = %v; retrying it cannot succeed", a)
	}

	for _, tc := range []struct {
		state pb.JobState
		want  []string
	}{
		{lifecycle.Running, []string{"run-1"}},
		{lifecycle.Completed, []string{"done-1"}},
		{lifecycle.Pending, []string{"pend-1"}},
		{lifecycle.Denied, []string{"deny-1"}},
		{lifecycle.Failed, []string{}},
		{pb.JobState_JOB_STATE_UNSPECIFIED, []string{"deny-1", "done-1", "pend-1", "run-1"}},
	} {
		a := r.query(&pb.JobQuery{State: tc.state})
		if got := ids(a.GetJobs()); !a.GetOk() || strings.Join(got, ",") != strings.Join(tc.want, ",") {
			t.Errorf("list %s = %v (%v), want %v", lifecycle.Name(tc.state), got, a.GetError(), tc.want)
		}
	}
	if a := r.query(&pb.JobQuery{Limit: 2}); !a.GetOk() || len(a.GetJobs()) != 2 {
		t.Errorf("list with limit 2 = %d jobs", len(a.GetJobs()))
	}

	p := wire.NewPacket("t", "c")
	p.Payload = &pb.BusPacket_JobCancel{JobCancel: &pb.JobCancel{JobId: "run-1"}}
	if a := r.bus.ask(t, wire.SubjectQuery, p).GetJobAnswer(); a.GetOk() || !strings.Contains(a.GetError(), "job_query") {
		t.Errorf("a cancel on the query subject answered %v", a)
	}
}

func TestDeadLettersListAndRedrive(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.bus.fallback("", ackBy("w-1"))
	req := &pb.JobRequest{JobId: "poison", Topic: "job.echo", MaxAttempts: 1, EnvVars: map[string]string{"K": "V"}}
	r.submit(req, "trace-poison", "")
	r.waitState("poison", lifecycle.Running, 1)
	r.result(failedResult("poison", 1, "w-1", pb.JobStatus_JOB_STATUS_FAILED, "crash"))
	if j := r.job("poison"); j.GetState() != lifecycle.Failed || !j.GetDeadLetter() {
		t.Fatalf("poison = %s", describe(j))
	}
	if a := r.query(&pb.JobQuery{DeadLetter: true}); !a.GetOk() || strings.Join(ids(a.GetJobs()), ",") != "poison" {
		t.Fatalf("dead letters = %v", a)
	}

	a := r.query(&pb.JobQuery{JobId: "poison", DeadLetter: true, Redrive: true})
	if !a.GetOk() || len(a.GetJobs()) != 1 {
		t.Fatalf("redrive = %v", a)
	}
	nj := a.GetJobs()[0]
	wantReq := proto.Clone(req).(*pb.JobRequest)
	wantReq.JobId = "poison-redrive-1"
	if nj.GetJobId() != "poison-redrive-1" || nj.GetState() != lifecycle.Dispatched || nj.GetTraceId() != "trace-poison" ||
		nj.GetAttempt() != 1 || nj.GetFailedAttempts() != 0 || !proto.Equal(nj.GetRequest(), wantReq) {
		t.Errorf("re-driven job = %v", nj)
	}
	if a := r.query(&pb.JobQuery{DeadLetter: true}); !a.GetOk() || len(a.GetJobs()) != 0 {
		t.Errorf("dead letters after the redrive = %v", a)
	}
	// The failed job itself stays FAILED; the new one runs.
	if j := r.job("poison"); j.GetState() != lifecycle.Failed {
		t.Errorf("poison after the redrive = %s", describe(j))
	}
	r.waitState("poison-redrive-1", lifecycle.Running, 1)

	// Not in the queue any more: nothing to re-drive.
	if a := r.query(&pb.JobQuery{JobId: "poison", DeadLetter: true, Redrive: true}); a.GetOk() || !strings.Contains(a.GetError(), "not found") {
		t.Errorf("second redrive = %v", a)
	}
	// Back in the queue (a second failure, say): the next id is taken.
	if err := r.dead.Put(context.Background(), r.job("poison")); err != nil {
		t.Fatal(err)
	}
	if a := r.query(&pb.JobQuery{JobId: "poison", DeadLetter: true, Redrive: true}); !a.GetOk() || a.GetJobs()[0].GetJobId() != "poison-redrive-2" {
		t.Errorf("redrive with -1 taken = %v", a)
	}
}

func TestStaleResultOfAPendingJobIsFenced(t *testing.T) {
	t.Parallel()
	r := newRig(t, withConfig(func(c *scheduler.Config) { c.NoWorkerRetry = time.Hour }))
	r.bus.fallback("", noResponders())
	r.submit(request("p", "job.echo"), "t", "")
	r.waitJob("p", "pending", func(j *pb.JobInfo) bool {
		return j.GetState() == lifecycle.Pending && j.GetPendingReason() != "waiting to be dispatched"
	})
	rev := r.revision("p")
	// Nobody holds it: neither a numbered nor an unnumbered result can be current.
	r.result(completed("p", 1, "ghost"))
	r.result(completed("p", 0, "ghost"))
	if s := r.e.Stats(); s.StaleResults != 2 || r.revision("p") != rev {
		t.Errorf("stats %+v, job %s", s, describe(r.job("p")))
	}
}

// A result the store cannot be asked about is handed back to the bus for
// redelivery (where results are durable), not dropped.
func TestResultStoreFailureAsksForRedelivery(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.bus.fallback("", ackBy("w-1"))
	r.submit(request("j", "job.echo"), "t", "")
	r.waitState("j", lifecycle.Running, 1)
	r.stop() // a new replica, whose cache is cold, takes the result
	r2 := newRig(t, func(x *rig) { x.store = r.store })
	boom := errors.New("store down")
	r2.store.failGet(boom)
	if err := r2.bus.result(t, wire.JobResultPacket("t", "w-1", completed("j", 1, "w-1"))); !errors.Is(err, boom) {
		t.Fatalf("result handler = %v, want the store error", err)
	}
	if s := r2.e.Stats(); s.StoreErrors != 1 || s.Completed != 0 {
		t.Errorf("stats = %+v", s)
	}
	r2.store.failGet(nil)
	r2.result(completed("j", 1, "w-1"))
	if j := r2.job("j"); j.GetState() != lifecycle.Completed {
		t.Errorf("after redelivery: %s", describe(j))
	}
}

// An engine stopped and started again works as before.
func TestRestartAfterStop(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.bus.fallback("", ackBy("w-1"))
	if err := r.e.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := r.e.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	r.submit(request("again", "job.echo"), "t", "")
	r.waitState("again", lifecycle.Running, 1)
	r.result(completed("again", 1, "w-1"))
	if j := r.job("again"); j.GetState() != lifecycle.Completed {
		t.Errorf("job = %s", describe(j))
	}
}

// A limited list holds the most recently updated jobs, newest first, and a
// token for the older ones.
func TestListWithALimitGivesTheLatestJobs(t *testing.T) {
	t.Parallel()
	r := newRig(t, withConfig(func(c *scheduler.Config) { c.NoWorkerRetry = time.Hour }))
	r.bus.fallback("job.none", noResponders())
	for _, id := range []string{"j1", "j2", "j3", "j4"} {
		r.submit(request(id, "job.none"), "t", "")
		j := r.waitJob(id, "recorded", func(j *pb.JobInfo) bool {
			return j.GetAttempt() == 0 && j.GetPendingReason() != "waiting to be dispatched"
		})
		// The next job's updated_ms must differ (milliseconds): the order under test.
		systest.Eventually(t, waitLimit, "the clock to move on", func() bool { return time.Now().UnixMilli() > j.GetUpdatedMs() })
	}
	a := r.query(&pb.JobQuery{Limit: 2})
	var got []string
	for _, j := range a.GetJobs() {
		got = append(got, j.GetJobId())
	}
	if strings.Join(got, " ") != "j4 j3" || a.GetNextPageToken() == "" {
		t.Errorf("list --limit 2 = %v (next %q), want the latest two, j4 j3, and a next page", got, a.GetNextPageToken())
	}
	b := r.query(&pb.JobQuery{Limit: 2, PageToken: a.GetNextPageToken()})
	if got := ids(b.GetJobs()); strings.Join(got, " ") != "j1 j2" {
		t.Errorf("the next page = %v, want j1 and j2", got)
	}
	// A full page may have a next page with nothing in it; the listing ends.
	if tok := b.GetNextPageToken(); tok != "" {
		if c := r.query(&pb.JobQuery{Limit: 2, PageToken: tok}); len(c.GetJobs()) != 0 || c.GetNextPageToken() != "" {
			t.Errorf("the page after j1 and j2 = %v", c)
		}
	}
}

// A list is one page of the store, with bounded work: never the store's
// full scan (List), whatever the filter. Filters by topic and tenant; a
// page token no scheduler made is refused, and not as retryable.
func TestListPagesWithBoundedWork(t *testing.T) {
	t.Parallel()
	r := newRig(t, withConfig(func(c *scheduler.Config) { c.NoWorkerRetry = time.Hour }))
	r.bus.fallback("", noResponders())
	for i := range 30 {
		req := request(fmt.Sprintf("p%02d", i), []string{"job.a", "job.b", "job.c"}[i%3])
		req.Tenant = []string{"acme", "globex"}[i%2]
		r.submit(req, "t", "")
	}
	// Every job settled back to PENDING (its dispatch met no responders):
	// a job rewritten while the pages are read moves above the cursor
	// (docs/guarantees.md), which is not what this test is about.
	systest.Eventually(t, waitLimit, "30 jobs recorded, PENDING again", func() bool {
		return len(r.query(&pb.JobQuery{Limit: 100, State: lifecycle.Pending}).GetJobs()) == 30
	})
	lists := r.store.lists.Load()

	var all []string
	token := ""
	for pages := 0; ; pages++ {
		a := r.query(&pb.JobQuery{Limit: 4, Topic: "job.b", Tenant: "acme", PageToken: token})
		if !a.GetOk() || len(a.GetJobs()) > 4 || pages > 30 {
			t.Fatalf("page %d: %v", pages, a)
		}
		for _, j := range a.GetJobs() {
			if j.GetRequest().GetTopic() != "job.b" || j.GetRequest().GetTenant() != "acme" {
				t.Fatalf("page %d: %s of %s/%s", pages, j.GetJobId(), j.GetRequest().GetTopic(), j.GetRequest().GetTenant())
			}
			all = append(all, j.GetJobId())
		}
		if token = a.GetNextPageToken(); token == "" {
			break
		}
	}
	// i%3 == 1 and i%2 == 0: i = 4, 10, 16, 22, 28.
	if strings.Join(ids(pbJobs(all)), ",") != "p04,p10,p16,p22,p28" {
		t.Errorf("job.b of acme, paged: %v", all)
	}
	if n := r.store.lists.Load() - lists; n != 0 {
		t.Errorf("list queries scanned the whole store %d times", n)
	}
	a := r.query(&pb.JobQuery{PageToken: "not-a-token"})
	if a.GetOk() || a.GetRetryable() || !strings.Contains(a.GetError(), "page_token") {
		t.Errorf("a made-up page token: %v; want a refusal naming page_token, not retryable", a)
	}
}

func pbJobs(ids []string) []*pb.JobInfo {
	out := make([]*pb.JobInfo, len(ids))
	for i, id := range ids {
		out[i] = &pb.JobInfo{JobId: id}
	}
	return out
}
