package kvstore

import (
	"fmt"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cortex-os/core/internal/jobstore"
	"github.com/cortex-os/core/internal/jobstore/storetest"
	"github.com/cortex-os/core/internal/lifecycle"
	"github.com/cortex-os/core/internal/natstest"
)

// Jobs written after a first page took the stream's last sequence, and
// before it read them: the oldest job moved on (its old message is gone, or
// no longer the latest, below the page's read cursor) and a job created.
// The first page shows both in front, as the newest, whatever its size;
// the records they push past the size are on the next pages, and paging on
// shows every job exactly once, newest first. Read down only, the first
// page missed the moved job and no page showed it. Not parallel: it sets
// the package's hook.
func TestListPageFirstPageCatchesUp(t *testing.T) {
	srv := natstest.RunServer(t)
	_, js := openJetStream(t, srv)
	for _, history := range []uint8{1, 5} {
		for _, size := range []int{1, 2, 4, 11, 100} {
			t.Run(fmt.Sprintf("history %d size %d", history, size), func(t *testing.T) {
				s := newStore(t, js, Config{Bucket: uniqueName("CATCHUP"), History: history, Storage: jetstream.MemoryStorage})
				ctx := t.Context()
				recs := make([]jobstore.Record, 10)
				for i := range recs {
					recs[i] = mustCreateKV(t, s, fmt.Sprintf("j%02d", i))
				}
				var moved, late jobstore.Record
				hook := func(hs *Store) {
					if hs != s || moved.Revision != 0 {
						return
					}
					var err error
					if moved, err = s.Update(ctx, recs[0], storetest.With(recs[0], lifecycle.Dispatched)); err != nil {
						t.Errorf("Update: %v", err)
					}
					late = mustCreateKV(t, s, "late")
				}
				afterInfo.Store(&hook)
				defer afterInfo.Store(nil)

				page, err := s.ListPage(ctx, jobstore.PageQuery{Size: size})
				if err != nil {
					t.Fatal(err)
				}
				afterInfo.Store(nil)
				if moved.Revision == 0 {
					t.Fatal("the hook did not run")
				}
				// Newest first: late, the moved job, then j09 down to j01.
				want := []jobstore.Record{late, moved}
				for i := 9; i >= 1; i-- {
					want = append(want, recs[i])
				}
				first := want[:min(size, len(want))]
				if got := revisions(page.Records); fmt.Sprint(got) != fmt.Sprint(revisions(first)) {
					t.Fatalf("first page = %v (%s); want %v", got, ids(page.Records), revisions(first))
				}
				if (page.Next == "") != (size >= len(want)) {
					t.Fatalf("first page of %d: next %q", size, page.Next)
				}
				all := append([]jobstore.Record(nil), page.Records...)
				for q := (jobstore.PageQuery{Size: size, Token: page.Next}); q.Token != ""; {
					p, err := s.ListPage(ctx, q)
					if err != nil {
						t.Fatal(err)
					}
					if len(p.Records) > size {
						t.Fatalf("a page of %d records; size %d", len(p.Records), size)
					}
					all = append(all, p.Records...)
					q.Token = p.Next
				}
				if got := revisions(all); fmt.Sprint(got) != fmt.Sprint(revisions(want)) {
					t.Fatalf("all pages = %v (%s); want %v", got, ids(all), revisions(want))
				}
			})
		}
	}
}

func mustCreateKV(t *testing.T, s *Store, id string) jobstore.Record {
	t.Helper()
	rec, err := s.Create(t.Context(), storetest.NewJob(id, lifecycle.Pending))
	if err != nil {
		t.Fatalf("Create(%s): %v", id, err)
	}
	return rec
}

func revisions(recs []jobstore.Record) []uint64 {
	out := make([]uint64, len(recs))
	for i, r := range recs {
		out[i] = r.Revision
	}
	return out
}

func ids(recs []jobstore.Record) string {
	out := ""
	for _, r := range recs {
		out += r.Job.GetJobId() + " "
	}
	return out
}
