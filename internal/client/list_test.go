package client_test

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"

	"github.com/cortex-os/core/internal/client"
	"github.com/cortex-os/core/internal/natstest"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// fakeLister answers list queries from 25 jobs, newest first, in pages of
// at most the limit asked and 10, with an empty page in the middle (a scheduler's
// page examines bounded work and may find nothing), and records the queries.
func fakeLister(t *testing.T, url string) (queries func() []*pb.JobQuery) {
	t.Helper()
	b := connect(t, url)
	var mu sync.Mutex
	var seen []*pb.JobQuery
	drain, err := b.Serve(wire.SubjectQuery, "", func(p *pb.BusPacket) *pb.BusPacket {
		q := p.GetJobQuery()
		mu.Lock()
		seen = append(seen, q)
		mu.Unlock()
		from := 25
		if q.GetPageToken() != "" {
			from, _ = strconv.Atoi(q.GetPageToken())
		}
		a := &pb.JobAnswer{Ok: true}
		if q.GetPageToken() == "15" { // an empty page, then on
			a.NextPageToken = "14"
		} else {
			n := 0
			for i := from; i > 0 && n < min(int(q.GetLimit()), 10); i-- {
				a.Jobs = append(a.Jobs, &pb.JobInfo{JobId: fmt.Sprintf("j%02d", i)})
				n++
				from = i - 1
			}
			if from > 0 {
				a.NextPageToken = strconv.Itoa(from)
			}
		}
		out := wire.NewPacket("", "fake-scheduler")
		out.Payload = &pb.BusPacket_JobAnswer{JobAnswer: a}
		return out
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = drain() })
	flush(t, b)
	return func() []*pb.JobQuery {
		mu.Lock()
		defer mu.Unlock()
		return append([]*pb.JobQuery(nil), seen...)
	}
}

// ListUpTo reads pages until it has the jobs asked for, across an empty
// page, and returns the token that continues after them; ListPage is one
// page with its filters on the wire; List reads to the end.
func TestListPaging(t *testing.T) {
	t.Parallel()
	url := natstest.URL(t)
	queries := fakeLister(t, url)
	c := client.New(connect(t, url), "lister")
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()

	jobs, next, err := c.ListUpTo(ctx, client.ListOptions{Limit: 12})
	if err != nil || len(jobs) != 12 || jobs[0].GetJobId() != "j25" || jobs[9].GetJobId() != "j16" || jobs[11].GetJobId() != "j13" || next != "12" {
		t.Fatalf("ListUpTo(12) = %d jobs, next %q, %v; want j25..j16, then j14 and j13 after the empty page, next 12", len(jobs), next, err)
	}
	if n := len(queries()); n != 3 {
		t.Fatalf("ListUpTo(12) asked %d times; want 3 (a page of 10, an empty one, a page of 2)", n)
	}
	rest, next, err := c.ListUpTo(ctx, client.ListOptions{Limit: 100, PageToken: next})
	if err != nil || len(rest) != 12 || rest[0].GetJobId() != "j12" || next != "" {
		t.Fatalf("ListUpTo from 12 = %d jobs, next %q, %v; want the 12 left and no token", len(rest), next, err)
	}
	page, next, err := c.ListPage(ctx, client.ListOptions{State: pb.JobState_JOB_STATE_PENDING, Topic: "job.a", Tenant: "acme", Limit: 5000})
	if err != nil || len(page) != 10 || next != "15" {
		t.Fatalf("ListPage = %d jobs, next %q, %v", len(page), next, err)
	}
	q := queries()[len(queries())-1]
	if q.GetState() != pb.JobState_JOB_STATE_PENDING || q.GetTopic() != "job.a" || q.GetTenant() != "acme" || q.GetLimit() != 1000 {
		t.Fatalf("the query on the wire: %v; want the filters and the limit capped at 1000", q)
	}
	all, err := c.List(ctx, pb.JobState_JOB_STATE_UNSPECIFIED, 1000)
	if err != nil || len(all) != 24 {
		t.Fatalf("List(1000) = %d jobs, %v; want all 24 the fake has (it skips j15)", len(all), err)
	}
}
