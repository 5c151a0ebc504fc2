package jobstore

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/cortex-os/core/internal/lifecycle"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

func TestPageTokenRoundTrip(t *testing.T) {
	t.Parallel()
	for _, rev := range []uint64{2, 3, 127, 128, 1 << 32, 1<<64 - 1} {
		tok := PageTokenBefore(rev)
		got, err := DecodePageToken(tok)
		if err != nil || got != rev {
			t.Errorf("DecodePageToken(PageTokenBefore(%d) = %q) = %d, %v", rev, tok, got, err)
		}
	}
	for _, rev := range []uint64{0, 1} {
		if tok := PageTokenBefore(rev); tok != "" {
			t.Errorf("PageTokenBefore(%d) = %q; want no token: nothing is below", rev, tok)
		}
	}
	if got, err := DecodePageToken(""); got != 0 || err != nil {
		t.Errorf(`DecodePageToken("") = %d, %v; want the first page`, got, err)
	}
	// A padded varint for 2 (0x82 0x00) is not the token of revision 2.
	if _, err := DecodePageToken("AYIA"); !errors.Is(err, ErrBadPageToken) {
		t.Errorf("a non-canonical token: %v", err)
	}
}

// FuzzDecodePageToken: a hostile token never panics; it is refused with
// ErrBadPageToken, or it is the canonical token of the revision it decodes
// to.
func FuzzDecodePageToken(f *testing.F) {
	for _, s := range []string{"", "x", "AQI", "AYIA", PageTokenBefore(1 << 40), PageTokenBefore(1<<64 - 1), "AQ==", "////////////////", "\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		rev, err := DecodePageToken(tok)
		switch {
		case err != nil:
			if !errors.Is(err, ErrBadPageToken) {
				t.Fatalf("DecodePageToken(%q): %v, not ErrBadPageToken", tok, err)
			}
		case tok == "":
			if rev != 0 {
				t.Fatalf("empty token: %d", rev)
			}
		case rev < 2 || PageTokenBefore(rev) != tok:
			t.Fatalf("DecodePageToken(%q) = %d, whose token is %q", tok, rev, PageTokenBefore(rev))
		}
	})
}

// The revision index stays within twice the jobs kept (plus the slack of a
// compaction), however often jobs are written and forgotten, and every
// entry left resolves or is counted stale.
func TestMemoryRevisionIndexBounded(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	m := NewMemoryRetaining(500)
	for i := range 20_000 {
		id := fmt.Sprintf("j%d", i)
		rec, err := m.Create(ctx, &pb.JobInfo{JobId: id, State: lifecycle.Pending})
		if err != nil {
			t.Fatal(err)
		}
		rec, err = m.Update(ctx, rec, &pb.JobInfo{JobId: id, State: lifecycle.Dispatched})
		if err != nil {
			t.Fatal(err)
		}
		if i%3 != 0 { // a third stay active
			if _, err := m.Update(ctx, rec, &pb.JobInfo{JobId: id, State: lifecycle.Completed}); err != nil {
				t.Fatal(err)
			}
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	live := len(m.active) + len(m.activeDup) + len(m.ring)
	if len(m.revs) > 2*live+2*minCompact {
		t.Fatalf("index of %d entries for %d jobs", len(m.revs), live)
	}
	resolved := 0
	for _, re := range m.revs {
		if _, ok := m.resolveLocked(re); ok {
			resolved++
		}
	}
	if resolved != live || len(m.revs)-resolved > m.staleRevs {
		t.Fatalf("%d of %d entries resolve, %d jobs kept, %d counted stale", resolved, len(m.revs), live, m.staleRevs)
	}
}

// Two active jobs whose ids hash alike are both kept, found, listed and
// finished.
func TestMemoryActiveHashCollision(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	m := NewMemory()
	m.testHash = func(string) uint64 { return 7 }
	a, err := m.Create(ctx, &pb.JobInfo{JobId: "a", State: lifecycle.Pending})
	if err != nil {
		t.Fatal(err)
	}
	b, err := m.Create(ctx, &pb.JobInfo{JobId: "b", State: lifecycle.Pending})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"a", "b"} {
		if r, err := m.Get(ctx, id); err != nil || r.Job.GetJobId() != id {
			t.Fatalf("Get(%s) = %v, %v", id, r.Job, err)
		}
	}
	page, err := m.ListPage(ctx, PageQuery{})
	if err != nil || len(page.Records) != 2 {
		t.Fatalf("ListPage = %d records, %v", len(page.Records), err)
	}
	if _, err := m.Update(ctx, a, &pb.JobInfo{JobId: "a", State: lifecycle.Cancelled}); err != nil {
		t.Fatal(err)
	}
	if r, err := m.Get(ctx, "b"); err != nil || r.Revision != b.Revision {
		t.Fatalf("b after a finished: %v, %v", r, err)
	}
	if _, err := m.Update(ctx, b, &pb.JobInfo{JobId: "b", State: lifecycle.Dispatched}); err != nil {
		t.Fatal(err)
	}
	page, err = m.ListPage(ctx, PageQuery{Filter: Filter{State: lifecycle.Dispatched}})
	if err != nil || len(page.Records) != 1 || page.Records[0].Job.GetJobId() != "b" {
		t.Fatalf("ListPage(DISPATCHED) = %v, %v", page.Records, err)
	}
}
