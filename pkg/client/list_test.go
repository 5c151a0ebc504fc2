package client_test

import (
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/cortex-os/core/internal/natstest"
	"github.com/cortex-os/core/pkg/client"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// fakeLister answers list queries from 25 jobs, j25 (newest) to j01, in
// pages of at most the limit asked and 10, with an empty page in the middle
// (a scheduler's page examines bounded work and may find nothing), and
// records the queries.
func fakeLister(t *testing.T, nc *nats.Conn) (queries func() []*pb.JobQuery) {
	t.Helper()
	var mu sync.Mutex
	var seen []*pb.JobQuery
	_, err := nc.Subscribe(wire.SubjectQuery, func(m *nats.Msg) {
		var in pb.BusPacket
		if err := proto.Unmarshal(m.Data, &in); err != nil {
			t.Error(err)
			return
		}
		q := in.GetJobQuery()
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
			for n := 0; from > 0 && n < min(int(q.GetLimit()), 10); n++ {
				a.Jobs = append(a.Jobs, &pb.JobInfo{JobId: fmt.Sprintf("j%02d", from)})
				from--
			}
			if from > 0 {
				a.NextPageToken = strconv.Itoa(from)
			}
		}
		out := wire.NewPacket("", "fake-scheduler")
		out.Payload = &pb.BusPacket_JobAnswer{JobAnswer: a}
		data, err := proto.Marshal(out)
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
	return func() []*pb.JobQuery {
		mu.Lock()
		defer mu.Unlock()
		return append([]*pb.JobQuery(nil), seen...)
	}
}

func jobIDs(jobs []*pb.JobInfo) []string {
	ids := make([]string, len(jobs))
	for i, j := range jobs {
		ids[i] = j.GetJobId()
	}
	return ids
}

// ListAll reads pages until it has the jobs asked for, across an empty
// page, and returns the token that continues after them; List is one page,
// with its filters on the wire and its size capped at the scheduler's most.
func TestListPaging(t *testing.T) {
	t.Parallel()
	nc, err := nats.Connect(natstest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	queries := fakeLister(t, nc)
	c, err := client.New(nc, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)

	first, err := c.ListAll(ctx, client.ListOptions{Limit: 12})
	if err != nil {
		t.Fatal(err)
	}
	if ids := jobIDs(first.Jobs); len(ids) != 12 || ids[0] != "j25" || ids[9] != "j16" || ids[10] != "j14" || ids[11] != "j13" || first.NextPageToken != "12" {
		t.Fatalf("ListAll(12) = %v, next %q; want j25..j16, then j14 and j13 after the empty page, next 12", ids, first.NextPageToken)
	}
	if n := len(queries()); n != 3 {
		t.Fatalf("ListAll(12) asked %d times; want 3 (a page of 10, an empty one, a page of 2)", n)
	}
	rest, err := c.ListAll(ctx, client.ListOptions{Limit: 100, PageToken: first.NextPageToken})
	if err != nil || len(rest.Jobs) != 12 || rest.Jobs[0].GetJobId() != "j12" || rest.NextPageToken != "" {
		t.Fatalf("ListAll from 12 = %v, %v; want the 12 left and no token", rest, err)
	}
	page, err := c.List(ctx, client.ListOptions{State: pb.JobState_JOB_STATE_PENDING, Topic: "job.a", Tenant: "acme", Limit: 5000})
	if err != nil || len(page.Jobs) != 10 || page.NextPageToken != "15" {
		t.Fatalf("List = %v, %v; want one page of 10, next 15", page, err)
	}
	q := queries()[len(queries())-1]
	if q.GetState() != pb.JobState_JOB_STATE_PENDING || q.GetTopic() != "job.a" || q.GetTenant() != "acme" || q.GetLimit() != 1000 {
		t.Fatalf("the query on the wire: %v; want the filters and the limit capped at 1000", q)
	}
	empty, err := c.List(ctx, client.ListOptions{PageToken: "15"})
	if err != nil || len(empty.Jobs) != 0 || empty.NextPageToken != "14" {
		t.Fatalf("List of the empty page = %v, %v; want no jobs and a next page", empty, err)
	}
	all, err := c.ListAll(ctx, client.ListOptions{Limit: 1000})
	if err != nil || len(all.Jobs) != 24 || all.NextPageToken != "" {
		t.Fatalf("ListAll(1000) = %d jobs, %v; want all 24 the fake has (it skips j15)", len(all.Jobs), err)
	}
	if _, err := c.List(ctx, client.ListOptions{Limit: -1}); !errors.Is(err, client.ErrInvalid) {
		t.Fatalf("List with a negative limit: %v, want ErrInvalid", err)
	}
}
