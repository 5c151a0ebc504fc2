package storetest

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/cortex-os/core/internal/jobstore"
	"github.com/cortex-os/core/internal/lifecycle"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// pagingTests are the ListPage cases of Run.
var pagingTests = []struct {
	name string
	fn   func(t *testing.T, s jobstore.Store)
}{
	{"ListPageEveryJobOnce", testListPageEveryJobOnce},
	{"ListPageFilters", testListPageFilters},
	{"ListPageBoundedScan", testListPageBoundedScan},
	{"ListPageWritesDuringPaging", testListPageWritesDuringPaging},
	{"ListPageFirstPageDuringUpdates", testListPageFirstPageDuringUpdates},
	{"ListPageBadToken", testListPageBadToken},
	{"ListPageEmpty", testListPageEmpty},
}

// pageAll reads every page of q, checking each: at most size records,
// revisions strictly decreasing across pages, every record matching the
// filter. It returns the records in the order read and the number of pages.
func pageAll(t *testing.T, s jobstore.Store, q jobstore.PageQuery) ([]jobstore.Record, int) {
	t.Helper()
	size, _ := q.Limits()
	var all []jobstore.Record
	pages := 0
	for {
		page, err := s.ListPage(t.Context(), q)
		if err != nil {
			t.Fatalf("ListPage(%+v): %v", q, err)
		}
		pages++
		if len(page.Records) > size {
			t.Fatalf("page %d: %d records, more than the size %d", pages, len(page.Records), size)
		}
		for _, r := range page.Records {
			if n := len(all); n > 0 && r.Revision >= all[n-1].Revision {
				t.Fatalf("page %d: revision %d after %d: want newest first", pages, r.Revision, all[n-1].Revision)
			}
			if !q.Filter.Match(r.Job) {
				t.Fatalf("page %d: %v does not match %+v", pages, r.Job, q.Filter)
			}
			all = append(all, r)
		}
		if page.Next == "" {
			return all, pages
		}
		if pages > 100_000 {
			t.Fatal("ListPage never ends")
		}
		q.Token = page.Next
	}
}

// jobWith returns NewJob with the request's topic and tenant set.
func jobWith(id, topic, tenant string, state pb.JobState) *pb.JobInfo {
	j := NewJob(id, state)
	j.Request.Topic, j.Request.Tenant = topic, tenant
	return j
}

// paged fills s with n jobs in varied states, topics and tenants (every
// third written more than once), and returns the latest record of each.
func paged(t *testing.T, s jobstore.Store, n int) map[string]jobstore.Record {
	t.Helper()
	topics := []string{"job.a", "job.b"}
	tenants := []string{"acme", "globex", ""}
	want := make(map[string]jobstore.Record, n)
	for i := range n {
		id := fmt.Sprintf("pg-%03d", i)
		rec := mustCreate(t, s, jobWith(id, topics[i%2], tenants[i%3], lifecycle.Pending))
		switch i % 4 {
		case 1:
			rec = mustUpdate(t, s, rec, With(rec, lifecycle.Dispatched))
		case 2:
			rec = mustUpdate(t, s, rec, With(rec, lifecycle.Dispatched))
			rec = mustUpdate(t, s, rec, With(rec, lifecycle.Running))
			rec = mustUpdate(t, s, rec, With(rec, lifecycle.Completed))
		case 3:
			rec = mustUpdate(t, s, rec, With(rec, lifecycle.Failed, func(j *pb.JobInfo) { j.DeadLetter = i%8 == 3 }))
		}
		want[id] = rec
	}
	return want
}

// sameJobs fails unless got holds exactly the records of want that match f,
// each once, as stored.
func sameJobs(t *testing.T, what string, got []jobstore.Record, want map[string]jobstore.Record, f jobstore.Filter) {
	t.Helper()
	seen := map[string]bool{}
	for _, r := range got {
		id := r.Job.GetJobId()
		if seen[id] {
			t.Fatalf("%s: %s returned twice", what, id)
		}
		seen[id] = true
		w, ok := want[id]
		if !ok || r.Revision != w.Revision || !proto.Equal(r.Job, w.Job) {
			t.Fatalf("%s: returned %v@%d, want %v@%d", what, r.Job, r.Revision, w.Job, w.Revision)
		}
	}
	var missing []string
	for id, w := range want {
		if f.Match(w.Job) && !seen[id] {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		t.Fatalf("%s: %d jobs missing: %v", what, len(missing), missing)
	}
}

// Paging through a store returns every job once, newest first, in pages of
// at most the size asked, whatever the size.
func testListPageEveryJobOnce(t *testing.T, s jobstore.Store) {
	want := paged(t, s, 120)
	for _, size := range []int{1, 7, 100, 1000} {
		got, pages := pageAll(t, s, jobstore.PageQuery{Size: size})
		sameJobs(t, fmt.Sprintf("size %d", size), got, want, jobstore.Filter{})
		if size == 1 && pages < len(want) {
			t.Fatalf("size 1: %d jobs in %d pages", len(got), pages)
		}
	}
	// The first page of one job is the job written last.
	page, err := s.ListPage(t.Context(), jobstore.PageQuery{Size: 1})
	if err != nil || len(page.Records) != 1 || page.Next == "" {
		t.Fatalf("first page of one: %v, %v", page, err)
	}
	var newest jobstore.Record
	for _, r := range want {
		if r.Revision > newest.Revision {
			newest = r
		}
	}
	if page.Records[0].Revision != newest.Revision {
		t.Fatalf("first page of one: %s@%d, want the newest, %s@%d", page.Records[0].Job.GetJobId(), page.Records[0].Revision, newest.Job.GetJobId(), newest.Revision)
	}
}

// Filters by state, topic, tenant and dead letter, alone and together, page
// through exactly the jobs that match.
func testListPageFilters(t *testing.T, s jobstore.Store) {
	want := paged(t, s, 96)
	for _, f := range []jobstore.Filter{
		{State: lifecycle.Pending},
		{State: lifecycle.Completed},
		{State: lifecycle.Failed, DeadLetter: true},
		{DeadLetter: true},
		{Topic: "job.b"},
		{Tenant: "acme"},
		{Tenant: "nobody"},
		{State: lifecycle.Dispatched, Topic: "job.b", Tenant: "globex"},
		{State: lifecycle.Cancelled},
	} {
		got, _ := pageAll(t, s, jobstore.PageQuery{Filter: f, Size: 5})
		sameJobs(t, fmt.Sprintf("filter %+v", f), got, want, f)
	}
}

// A page examines at most Scan revisions: with a filter that matches
// nothing, walking the store takes at least one page per Scan jobs, each
// empty but for the last, each but the last with a token. Size bounds the
// records of a page whatever Scan allows.
func testListPageBoundedScan(t *testing.T, s jobstore.Store) {
	want := paged(t, s, 100)
	const scan = 10
	nothing := jobstore.Filter{Tenant: "nobody"}
	got, pages := pageAll(t, s, jobstore.PageQuery{Filter: nothing, Size: 1000, Scan: scan})
	if len(got) != 0 || pages < len(want)/scan {
		t.Fatalf("a filter matching nothing, scan %d: %d records in %d pages; want none, in at least %d pages (each page examines at most %d revisions)",
			scan, len(got), pages, len(want)/scan, scan)
	}
	page, err := s.ListPage(t.Context(), jobstore.PageQuery{Size: 3, Scan: 1000})
	if err != nil || len(page.Records) != 3 || page.Next == "" {
		t.Fatalf("size 3: %d records, next %q, %v", len(page.Records), page.Next, err)
	}
	all, _ := pageAll(t, s, jobstore.PageQuery{Scan: 1})
	sameJobs(t, "scan 1", all, want, jobstore.Filter{})
}

// Jobs written while the pages are read: a job created or written after the
// first page was read is not shown by the pages after it (its revision is
// above the tokens), and no job is shown twice; every job not written
// meanwhile is shown once.
func testListPageWritesDuringPaging(t *testing.T, s jobstore.Store) {
	want := paged(t, s, 40)
	q := jobstore.PageQuery{Size: 10}
	page, err := s.ListPage(t.Context(), q)
	if err != nil {
		t.Fatal(err)
	}
	got := append([]jobstore.Record(nil), page.Records...)
	seen := map[string]bool{}
	for _, r := range got {
		seen[r.Job.GetJobId()] = true
	}
	// A new job, and a job not seen yet moved on: both now above the token.
	mustCreate(t, s, jobWith("pg-new", "job.a", "acme", lifecycle.Pending))
	var moved string
	for id, r := range want {
		if !seen[id] && r.Job.GetState() == lifecycle.Pending {
			moved = id
			want[id] = mustUpdate(t, s, r, With(r, lifecycle.Cancelled))
			break
		}
	}
	if moved == "" {
		t.Fatal("no PENDING job left below the first page")
	}
	q.Token = page.Next
	rest, _ := pageAll(t, s, q)
	got = append(got, rest...)
	delete(want, moved)
	for _, r := range got {
		if id := r.Job.GetJobId(); id == "pg-new" || id == moved {
			t.Fatalf("%s, written after the first page, shown by a later page", id)
		}
	}
	sameJobs(t, "pages around writes", got, want, jobstore.Filter{})
}

// A first page loses no job to updates made while it is read: jobs that
// exist before the listing starts, and go on matching, are all on a first
// page large enough to hold them, once each, newest first, however often
// they are rewritten meanwhile (as a running job's lease is, or as a
// scheduler moves jobs along). A store that took its position first and
// read down from it would miss a job rewritten from below its read cursor
// to above its starting position.
func testListPageFirstPageDuringUpdates(t *testing.T, s jobstore.Store) {
	const (
		jobs     = 24
		writers  = 3
		listings = 150
	)
	ids := make([]string, jobs)
	for i := range jobs {
		ids[i] = fmt.Sprintf("upd-%02d", i)
		rec := mustCreate(t, s, jobWith(ids[i], "job.a", "acme", lifecycle.Pending))
		rec = mustUpdate(t, s, rec, With(rec, lifecycle.Dispatched))
		mustUpdate(t, s, rec, With(rec, lifecycle.Running))
	}
	var (
		done    atomic.Bool
		updates atomic.Int64
		wg      sync.WaitGroup
	)
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			for k := w; !done.Load(); k += writers {
				id := ids[k%jobs]
				rec, err := s.Get(t.Context(), id)
				if err != nil {
					errs <- fmt.Errorf("Get(%s): %w", id, err)
					return
				}
				// RUNNING to RUNNING: a lease renewed, the job stays a match.
				_, err = s.Update(t.Context(), rec, With(rec, lifecycle.Running, func(j *pb.JobInfo) { j.UpdatedMs++ }))
				if err != nil && !errors.Is(err, jobstore.ErrRevision) {
					errs <- fmt.Errorf("Update(%s): %w", id, err)
					return
				}
				updates.Add(1)
			}
		})
	}
	Eventually(t, "the writers to start", func() bool { return updates.Load() > 0 })
	// At least listings listings, and at least a rewrite of every job
	// while they run.
	start := updates.Load()
	var failed error // the first listing that failed
	filters := []jobstore.Filter{{}, {State: lifecycle.Running}, {Tenant: "acme"}}
listings:
	for n := 0; n < listings || updates.Load()-start < jobs; n++ {
		f := filters[n%len(filters)]
		page, err := s.ListPage(t.Context(), jobstore.PageQuery{Filter: f, Size: jobs})
		if err != nil {
			failed = fmt.Errorf("listing %d: %w", n, err)
			break
		}
		seen := map[string]bool{}
		for i, r := range page.Records {
			id := r.Job.GetJobId()
			if seen[id] {
				failed = fmt.Errorf("listing %d (%+v): %s twice", n, f, id)
				break listings
			}
			seen[id] = true
			if i > 0 && r.Revision >= page.Records[i-1].Revision {
				failed = fmt.Errorf("listing %d (%+v): revision %d after %d: want newest first", n, f, r.Revision, page.Records[i-1].Revision)
				break listings
			}
		}
		var missing []string
		for _, id := range ids {
			if !seen[id] {
				missing = append(missing, id)
			}
		}
		if len(missing) > 0 {
			failed = fmt.Errorf("listing %d (%+v): %d of %d jobs, missing %v (rewritten while the page was read)", n, f, len(page.Records), jobs, missing)
			break
		}
	}
	done.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if failed != nil {
		t.Error(failed)
	}
	if updates.Load()-start < jobs {
		t.Errorf("%d updates during the listings; want at least %d", updates.Load()-start, jobs)
	}
}

// A token no store made is refused with ErrBadPageToken; it never panics.
func testListPageBadToken(t *testing.T, s jobstore.Store) {
	paged(t, s, 3)
	for _, tok := range []string{"x", "AQ", "AA", "////", "AQE", strings.Repeat("A", 64), "AQ==", "AYCAgICAgICAgIAC", "\x00\xff"} {
		_, err := s.ListPage(t.Context(), jobstore.PageQuery{Token: tok})
		if !errors.Is(err, jobstore.ErrBadPageToken) {
			t.Errorf("token %q: %v; want ErrBadPageToken", tok, err)
		}
	}
	// A token for a position below everything (from another store, say)
	// is a page like any other: empty or not, it ends.
	if _, err := s.ListPage(t.Context(), jobstore.PageQuery{Token: jobstore.PageTokenBefore(2)}); err != nil {
		t.Errorf("a token for revision 2: %v", err)
	}
	if _, err := s.ListPage(t.Context(), jobstore.PageQuery{Token: jobstore.PageTokenBefore(1 << 62)}); err != nil {
		t.Errorf("a token above everything: %v", err)
	}
}

func testListPageEmpty(t *testing.T, s jobstore.Store) {
	page, err := s.ListPage(t.Context(), jobstore.PageQuery{})
	if err != nil || len(page.Records) != 0 || page.Next != "" {
		t.Fatalf("ListPage of an empty store = %+v, %v; want nothing and no token", page, err)
	}
}
