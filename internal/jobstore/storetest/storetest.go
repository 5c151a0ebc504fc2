// Package storetest is the conformance suite of jobstore.Store and
// jobstore.DeadLetters: every implementation runs it, so all of them refuse,
// order and copy the same way.
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) jobstore.Store { return newStore(t) })
//	}
//
// Every subtest calls newStore (or newDL) for a fresh, empty store of its own
// and runs in parallel with the others.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/cortex-os/core/internal/jobstore"
	"github.com/cortex-os/core/internal/lifecycle"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// Timeout bounds every wait of the suite (watch deliveries, Watch returning).
const Timeout = 10 * time.Second

// allStates is every state, UNSPECIFIED included: a transition to it is
// always illegal.
var allStates = append([]pb.JobState{pb.JobState_JOB_STATE_UNSPECIFIED}, lifecycle.States...)

// Run runs the Store conformance suite.
func Run(t *testing.T, newStore func(t *testing.T) jobstore.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s jobstore.Store)
	}{
		{"CreateThenGet", testCreateThenGet},
		{"CreateDuplicate", testCreateDuplicate},
		{"CreateInvalidID", testCreateInvalidID},
		{"CreateValidIDs", testCreateValidIDs},
		{"CreateFirstStates", testCreateFirstStates},
		{"GetUnknown", testGetUnknown},
		{"UpdateCAS", testUpdateCAS},
		{"UpdateCASConcurrent", testUpdateCASConcurrent},
		{"UpdateTransitions", testUpdateTransitions},
		{"TerminalNeverChanges", testTerminalNeverChanges},
		{"UpdateBadArguments", testUpdateBadArguments},
		{"List", testList},
		{"ListEmpty", testListEmpty},
		{"Watch", testWatch},
		{"WatchBurstInOrder", testWatchBurstInOrder},
		{"WatchKeepingUp", testWatchKeepingUp},
		{"WatchEndedContext", testWatchEndedContext},
		{"WatchReentrant", testWatchReentrant},
		{"GetDuringChurn", testGetDuringChurn},
	}
	run(t, newStore, append(tests, pagingTests...))
}

// RunWire runs the checks that hold for a store whose records cross a wire
// (kvstore): it refuses what cannot be encoded, and records are copies, so
// editing one changes nothing stored. Memory shares its records instead
// (see Store): it is not run there.
func RunWire(t *testing.T, newStore func(t *testing.T) jobstore.Store) {
	run(t, newStore, []struct {
		name string
		fn   func(t *testing.T, s jobstore.Store)
	}{
		{"CreateUnencodable", testCreateUnencodable},
		{"UpdateUnencodable", testUpdateUnencodable},
		{"RecordsAreCopies", testRecordsAreCopies},
		{"UpdateEditedPrev", testUpdateEditedPrev},
	})
}

func run(t *testing.T, newStore func(t *testing.T) jobstore.Store, tests []struct {
	name string
	fn   func(t *testing.T, s jobstore.Store)
}) {
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, newStore(t))
		})
	}
}

// NewJob returns a job in state with every kind of field set, so that a
// store that drops or mangles one fails proto.Equal.
func NewJob(id string, state pb.JobState) *pb.JobInfo {
	return &pb.JobInfo{
		JobId:       id,
		State:       state,
		MaxAttempts: 3,
		TraceId:     "trace-" + id,
		CreatedMs:   1_700_000_000_000,
		UpdatedMs:   1_700_000_000_000,
		DeadlineMs:  1_700_000_060_000,
		Request: &pb.JobRequest{
			JobId:       id,
			Topic:       "job.echo",
			Priority:    pb.JobPriority_JOB_PRIORITY_INTERACTIVE,
			EnvVars:     map[string]string{"A": "1", "B": "2"},
			MaxAttempts: 3,
			TimeoutMs:   1000,
		},
	}
}

// pathTo lists the states a job moves through, from creation, to reach s.
func pathTo(s pb.JobState) []pb.JobState {
	switch s {
	case lifecycle.Pending:
		return []pb.JobState{lifecycle.Pending}
	case lifecycle.Denied:
		return []pb.JobState{lifecycle.Denied}
	case lifecycle.Dispatched:
		return []pb.JobState{lifecycle.Pending, lifecycle.Dispatched}
	case lifecycle.Running:
		return []pb.JobState{lifecycle.Pending, lifecycle.Dispatched, lifecycle.Running}
	case lifecycle.Completed:
		return []pb.JobState{lifecycle.Pending, lifecycle.Dispatched, lifecycle.Running, lifecycle.Completed}
	default: // Failed, Timeout, Cancelled
		return []pb.JobState{lifecycle.Pending, s}
	}
}

// With returns a copy of rec's job in state, edited by edits.
func With(rec jobstore.Record, state pb.JobState, edits ...func(*pb.JobInfo)) *pb.JobInfo {
	j := proto.Clone(rec.Job).(*pb.JobInfo)
	j.State = state
	for _, e := range edits {
		e(j)
	}
	return j
}

func mustCreate(t *testing.T, s jobstore.Store, job *pb.JobInfo) jobstore.Record {
	t.Helper()
	rec, err := s.Create(t.Context(), job)
	if err != nil {
		t.Fatalf("Create(%s): %v", job.GetJobId(), err)
	}
	if rec.Revision == 0 {
		t.Fatalf("Create(%s): revision 0", job.GetJobId())
	}
	if !proto.Equal(rec.Job, job) {
		t.Fatalf("Create(%s) returned %v, want %v", job.GetJobId(), rec.Job, job)
	}
	return rec
}

func mustUpdate(t *testing.T, s jobstore.Store, prev jobstore.Record, next *pb.JobInfo) jobstore.Record {
	t.Helper()
	rec, err := s.Update(t.Context(), prev, next)
	if err != nil {
		t.Fatalf("Update(%s %s -> %s): %v", prev.Job.GetJobId(), lifecycle.Name(prev.Job.GetState()), lifecycle.Name(next.GetState()), err)
	}
	if rec.Revision <= prev.Revision {
		t.Fatalf("Update(%s): revision %d after %d", prev.Job.GetJobId(), rec.Revision, prev.Revision)
	}
	if !proto.Equal(rec.Job, next) {
		t.Fatalf("Update(%s) returned %v, want %v", prev.Job.GetJobId(), rec.Job, next)
	}
	return rec
}

// createIn creates job id and moves it along pathTo(state).
func createIn(t *testing.T, s jobstore.Store, id string, state pb.JobState) jobstore.Record {
	t.Helper()
	path := pathTo(state)
	rec := mustCreate(t, s, NewJob(id, path[0]))
	for _, st := range path[1:] {
		rec = mustUpdate(t, s, rec, With(rec, st))
	}
	return rec
}

func mustGet(t *testing.T, s jobstore.Store, id string) jobstore.Record {
	t.Helper()
	rec, err := s.Get(t.Context(), id)
	if err != nil {
		t.Fatalf("Get(%s): %v", id, err)
	}
	return rec
}

// requireRecord fails unless the store holds exactly want for its job.
func requireRecord(t *testing.T, s jobstore.Store, want jobstore.Record) {
	t.Helper()
	got := mustGet(t, s, want.Job.GetJobId())
	if got.Revision != want.Revision || !proto.Equal(got.Job, want.Job) {
		t.Fatalf("store holds %v@%d, want %v@%d", got.Job, got.Revision, want.Job, want.Revision)
	}
}

func requireIllegal(t *testing.T, err error, id string, from, to pb.JobState) {
	t.Helper()
	var ite *lifecycle.IllegalTransitionError
	if !errors.As(err, &ite) {
		t.Fatalf("%s %s -> %s: err = %v, want *lifecycle.IllegalTransitionError", id, lifecycle.Name(from), lifecycle.Name(to), err)
	}
	if ite.JobID != id || ite.From != from || ite.To != to {
		t.Fatalf("IllegalTransitionError = %+v, want job %s %s -> %s", ite, id, lifecycle.Name(from), lifecycle.Name(to))
	}
}

// Eventually polls cond every few milliseconds until it holds, failing the
// test after Timeout.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(Timeout)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", Timeout, what)
		}
		<-tick.C
	}
}

func describe(recs []jobstore.Record) string {
	var b strings.Builder
	for _, r := range recs {
		fmt.Fprintf(&b, "%s@%d ", r.Job.GetJobId(), r.Revision)
	}
	return b.String()
}

// RequireWatched checks what a watcher saw of a run of writes, want (every
// record the writes returned, in order), against the Watch contract: got is
// a subsequence of want (revision order, nothing invented, nothing twice),
// and it includes the last record of every job in want (a lagging watcher
// may skip only revisions that a later one of the same job superseded).
func RequireWatched(t testing.TB, got, want []jobstore.Record) {
	t.Helper()
	last := map[string]uint64{}
	for _, r := range want {
		last[r.Job.GetJobId()] = r.Revision
	}
	j := 0
	for i, g := range got {
		for j < len(want) && !sameRecord(g, want[j]) {
			if want[j].Revision == last[want[j].Job.GetJobId()] {
				t.Fatalf("watch skipped %s@%d, the latest revision of its job\n got: %s\nwant: %s",
					want[j].Job.GetJobId(), want[j].Revision, describe(got), describe(want))
			}
			j++
		}
		if j == len(want) {
			t.Fatalf("watched record %d (%s@%d) is not one of the writes, or out of order\n got: %s\nwant: %s",
				i, g.Job.GetJobId(), g.Revision, describe(got), describe(want))
		}
		j++
	}
	for ; j < len(want); j++ {
		if want[j].Revision == last[want[j].Job.GetJobId()] {
			t.Fatalf("watch never saw %s@%d, the latest revision of its job\n got: %s\nwant: %s",
				want[j].Job.GetJobId(), want[j].Revision, describe(got), describe(want))
		}
	}
}

// waitLatest waits until w has seen the last record of every job in want.
func (w *watchLog) waitLatest(t *testing.T, want []jobstore.Record) []jobstore.Record {
	t.Helper()
	last := map[string]jobstore.Record{}
	for _, r := range want {
		last[r.Job.GetJobId()] = r
	}
	Eventually(t, fmt.Sprintf("the latest records of %d jobs", len(last)), func() bool {
		seen := 0
		for _, r := range w.snapshot() {
			if l, ok := last[r.Job.GetJobId()]; ok && sameRecord(r, l) {
				seen++
			}
		}
		return seen == len(last)
	})
	return w.snapshot()
}

func testCreateThenGet(t *testing.T, s jobstore.Store) {
	job := NewJob("job-1", lifecycle.Pending)
	rec := mustCreate(t, s, job)
	requireRecord(t, s, rec)

	denied := NewJob("job-2", lifecycle.Denied)
	denied.Error = "policy says no"
	rec2 := mustCreate(t, s, denied)
	if rec2.Revision == rec.Revision {
		t.Fatalf("two records share revision %d", rec.Revision)
	}
	requireRecord(t, s, rec2)
}

func testCreateDuplicate(t *testing.T, s jobstore.Store) {
	first := mustCreate(t, s, NewJob("dup", lifecycle.Pending))
	again := NewJob("dup", lifecycle.Pending)
	again.TraceId = "another"
	rec, err := s.Create(t.Context(), again)
	if !errors.Is(err, jobstore.ErrExists) {
		t.Fatalf("second Create: err = %v, want ErrExists", err)
	}
	if rec.Revision != first.Revision || !proto.Equal(rec.Job, first.Job) {
		t.Fatalf("second Create returned %v@%d, want the existing %v@%d", rec.Job, rec.Revision, first.Job, first.Revision)
	}
	requireRecord(t, s, first)
}

// InvalidIDs are ids every store refuses.
var InvalidIDs = []string{
	"", ".", ".a", "a.", "a..b", "a b", "a/b", "a*", "a>", "a\tb", "a\x00b",
	"ä", "job:1", "a,b", "$a", strings.Repeat("a", jobstore.MaxIDLength+1),
}

func testCreateInvalidID(t *testing.T, s jobstore.Store) {
	ctx := t.Context()
	for _, id := range InvalidIDs {
		if _, err := s.Create(ctx, NewJob(id, lifecycle.Pending)); !errors.Is(err, jobstore.ErrInvalidID) {
			t.Errorf("Create(%q): err = %v, want ErrInvalidID", id, err)
		}
		if _, err := s.Get(ctx, id); !errors.Is(err, jobstore.ErrInvalidID) {
			t.Errorf("Get(%q): err = %v, want ErrInvalidID", id, err)
		}
	}
	if _, err := s.Create(ctx, nil); !errors.Is(err, jobstore.ErrInvalidID) {
		t.Errorf("Create(nil): err = %v, want ErrInvalidID", err)
	}
	recs, err := s.List(ctx, jobstore.Filter{})
	if err != nil || len(recs) != 0 {
		t.Fatalf("after refused creates List = %d records, %v; want none", len(recs), err)
	}
}

func testCreateValidIDs(t *testing.T, s jobstore.Store) {
	for _, id := range []string{"1", "a.b", "a.b.c", "A-z_0=9", "01HZX3-uuid_like=.x", strings.Repeat("z", jobstore.MaxIDLength)} {
		rec := mustCreate(t, s, NewJob(id, lifecycle.Pending))
		requireRecord(t, s, rec)
	}
}

func testCreateFirstStates(t *testing.T, s jobstore.Store) {
	ctx := t.Context()
	for _, st := range allStates {
		id := "first-" + strings.ToLower(lifecycle.Name(st))
		rec, err := s.Create(ctx, NewJob(id, st))
		if lifecycle.CanTransition(pb.JobState_JOB_STATE_UNSPECIFIED, st) {
			if err != nil {
				t.Errorf("Create in %s: %v", lifecycle.Name(st), err)
				continue
			}
			requireRecord(t, s, rec)
			continue
		}
		requireIllegal(t, err, id, pb.JobState_JOB_STATE_UNSPECIFIED, st)
		if _, err := s.Get(ctx, id); !errors.Is(err, jobstore.ErrNotFound) {
			t.Errorf("refused Create in %s stored something: Get err = %v", lifecycle.Name(st), err)
		}
	}
}

func testCreateUnencodable(t *testing.T, s jobstore.Store) {
	job := NewJob("bad-utf8", lifecycle.Pending)
	job.PendingReason = "\xff\xfe not UTF-8"
	if _, err := s.Create(t.Context(), job); err == nil {
		t.Fatal("Create of a job with invalid UTF-8 in a string field succeeded")
	}
	if _, err := s.Get(t.Context(), "bad-utf8"); !errors.Is(err, jobstore.ErrNotFound) {
		t.Fatalf("Get after refused Create: err = %v, want ErrNotFound", err)
	}
}

func testGetUnknown(t *testing.T, s jobstore.Store) {
	if _, err := s.Get(t.Context(), "nobody"); !errors.Is(err, jobstore.ErrNotFound) {
		t.Fatalf("Get(unknown): err = %v, want ErrNotFound", err)
	}
	mustCreate(t, s, NewJob("somebody", lifecycle.Pending))
	if _, err := s.Get(t.Context(), "nobody"); !errors.Is(err, jobstore.ErrNotFound) {
		t.Fatalf("Get(unknown) in a non-empty store: err = %v, want ErrNotFound", err)
	}
}

func testUpdateCAS(t *testing.T, s jobstore.Store) {
	rec0 := mustCreate(t, s, NewJob("cas", lifecycle.Pending))
	rec1 := mustUpdate(t, s, rec0, With(rec0, lifecycle.Dispatched, func(j *pb.JobInfo) { j.WorkerId = "w1" }))
	_, err := s.Update(t.Context(), rec0, With(rec0, lifecycle.Dispatched, func(j *pb.JobInfo) { j.WorkerId = "w2" }))
	if !errors.Is(err, jobstore.ErrRevision) {
		t.Fatalf("second update from the same prev: err = %v, want ErrRevision", err)
	}
	requireRecord(t, s, rec1)
	// A stale prev loses even when its transition would be legal from the
	// current state too.
	if _, err := s.Update(t.Context(), rec0, With(rec0, lifecycle.Cancelled)); !errors.Is(err, jobstore.ErrRevision) {
		t.Fatalf("update from a stale prev: err = %v, want ErrRevision", err)
	}
	// Re-read and decide again: that works.
	cur := mustGet(t, s, "cas")
	rec2 := mustUpdate(t, s, cur, With(cur, lifecycle.Running))
	requireRecord(t, s, rec2)
	// Self-transitions change details and the revision.
	rec3 := mustUpdate(t, s, rec2, With(rec2, lifecycle.Running, func(j *pb.JobInfo) { j.UpdatedMs++ }))
	requireRecord(t, s, rec3)
}

func testUpdateCASConcurrent(t *testing.T, s jobstore.Store) {
	const n = 8
	rec0 := mustCreate(t, s, NewJob("race", lifecycle.Pending))
	var (
		wg      sync.WaitGroup
		start   = make(chan struct{})
		winners atomic.Int32
		winner  atomic.Value
		errs    = make(chan error, n)
	)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			worker := fmt.Sprintf("worker-%d", i)
			next := With(rec0, lifecycle.Dispatched, func(j *pb.JobInfo) { j.WorkerId = worker })
			<-start
			rec, err := s.Update(context.Background(), rec0, next)
			switch {
			case err == nil:
				winners.Add(1)
				winner.Store(rec)
			case !errors.Is(err, jobstore.ErrRevision):
				errs <- fmt.Errorf("%s: err = %v, want nil or ErrRevision", worker, err)
			}
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := winners.Load(); got != 1 {
		t.Fatalf("%d of %d racing updates succeeded, want exactly 1", got, n)
	}
	requireRecord(t, s, winner.Load().(jobstore.Record))
}

func testUpdateTransitions(t *testing.T, s jobstore.Store) {
	for _, from := range []pb.JobState{lifecycle.Pending, lifecycle.Dispatched, lifecycle.Running} {
		for _, to := range allStates {
			id := fmt.Sprintf("t-%s-%s", strings.ToLower(lifecycle.Name(from)), strings.ToLower(lifecycle.Name(to)))
			rec := createIn(t, s, id, from)
			got, err := s.Update(t.Context(), rec, With(rec, to))
			if lifecycle.CanTransition(from, to) {
				if err != nil {
					t.Errorf("%s -> %s refused: %v", lifecycle.Name(from), lifecycle.Name(to), err)
					continue
				}
				requireRecord(t, s, got)
				continue
			}
			requireIllegal(t, err, id, from, to)
			requireRecord(t, s, rec)
		}
	}
}

func testTerminalNeverChanges(t *testing.T, s jobstore.Store) {
	for _, term := range lifecycle.States {
		if !lifecycle.Terminal(term) {
			continue
		}
		id := "end-" + strings.ToLower(lifecycle.Name(term))
		rec := createIn(t, s, id, term)
		for _, to := range allStates {
			_, err := s.Update(t.Context(), rec, With(rec, to, func(j *pb.JobInfo) { j.Error = "late" }))
			requireIllegal(t, err, id, term, to)
			requireRecord(t, s, rec)
		}
	}
}

func testUpdateBadArguments(t *testing.T, s jobstore.Store) {
	ctx := t.Context()
	rec := mustCreate(t, s, NewJob("args", lifecycle.Pending))

	if _, err := s.Update(ctx, rec, nil); !errors.Is(err, jobstore.ErrInvalidID) {
		t.Errorf("Update(next nil): err = %v, want ErrInvalidID", err)
	}
	if _, err := s.Update(ctx, jobstore.Record{}, With(rec, lifecycle.Dispatched)); !errors.Is(err, jobstore.ErrRevision) {
		t.Errorf("Update(zero prev): err = %v, want ErrRevision", err)
	}
	if _, err := s.Update(ctx, jobstore.Record{Job: rec.Job}, With(rec, lifecycle.Dispatched)); !errors.Is(err, jobstore.ErrRevision) {
		t.Errorf("Update(prev at revision 0): err = %v, want ErrRevision", err)
	}
	other := With(rec, lifecycle.Dispatched, func(j *pb.JobInfo) { j.JobId = "someone-else" })
	if _, err := s.Update(ctx, rec, other); !errors.Is(err, jobstore.ErrInvalidID) {
		t.Errorf("Update(next with another id): err = %v, want ErrInvalidID", err)
	}
	requireRecord(t, s, rec)

	ghost := jobstore.Record{Job: NewJob("ghost", lifecycle.Pending), Revision: rec.Revision}
	if _, err := s.Update(ctx, ghost, With(ghost, lifecycle.Dispatched)); !errors.Is(err, jobstore.ErrNotFound) {
		t.Errorf("Update(unknown job): err = %v, want ErrNotFound", err)
	}
	if _, err := s.Get(ctx, "ghost"); !errors.Is(err, jobstore.ErrNotFound) {
		t.Errorf("Update of an unknown job created it: Get err = %v", err)
	}
	bad := jobstore.Record{Job: NewJob("a..b", lifecycle.Pending), Revision: 1}
	if _, err := s.Update(ctx, bad, With(bad, lifecycle.Dispatched)); !errors.Is(err, jobstore.ErrInvalidID) {
		t.Errorf("Update(invalid id): err = %v, want ErrInvalidID", err)
	}
	requireRecord(t, s, rec)
}

func testUpdateUnencodable(t *testing.T, s jobstore.Store) {
	rec := mustCreate(t, s, NewJob("utf8", lifecycle.Pending))
	unencodable := With(rec, lifecycle.Dispatched, func(j *pb.JobInfo) { j.WorkerId = "\xff" })
	if _, err := s.Update(t.Context(), rec, unencodable); err == nil {
		t.Error("Update with invalid UTF-8 in a string field succeeded")
	}
	requireRecord(t, s, rec)
}

// testUpdateEditedPrev: editing the record that was read in place defeats
// the transition check; it is refused.
func testUpdateEditedPrev(t *testing.T, s jobstore.Store) {
	rec := mustCreate(t, s, NewJob("args", lifecycle.Pending))
	edited := mustGet(t, s, "args")
	edited.Job.State = lifecycle.Dispatched
	if _, err := s.Update(t.Context(), edited, edited.Job); !errors.Is(err, jobstore.ErrAliasedPrev) {
		t.Errorf("Update(prev, prev.Job): err = %v, want ErrAliasedPrev", err)
	}
	requireRecord(t, s, rec)
}

func testRecordsAreCopies(t *testing.T, s jobstore.Store) {
	ctx := t.Context()
	in := NewJob("copy", lifecycle.Pending)
	rec := mustCreate(t, s, in)
	want := proto.Clone(in).(*pb.JobInfo)
	wantRev := rec.Revision

	scribble := func(j *pb.JobInfo) {
		j.State = lifecycle.Completed
		j.WorkerId = "scribbled"
		j.Request.EnvVars["A"] = "scribbled"
		j.Request.Topic = "scribbled"
	}
	check := func(when string) {
		t.Helper()
		got := mustGet(t, s, "copy")
		if got.Revision != wantRev || !proto.Equal(got.Job, want) {
			t.Fatalf("%s changed the store: got %v@%d, want %v@%d", when, got.Job, got.Revision, want, wantRev)
		}
	}

	scribble(in)
	check("editing the job given to Create")
	scribble(rec.Job)
	check("editing the record Create returned")
	scribble(mustGet(t, s, "copy").Job)
	check("editing a record Get returned")
	recs, err := s.List(ctx, jobstore.Filter{})
	if err != nil || len(recs) != 1 {
		t.Fatalf("List = %d records, %v", len(recs), err)
	}
	scribble(recs[0].Job)
	check("editing a record List returned")

	cur := mustGet(t, s, "copy")
	next := With(cur, lifecycle.Dispatched)
	upd := mustUpdate(t, s, cur, next)
	want, wantRev = proto.Clone(next).(*pb.JobInfo), upd.Revision
	scribble(next)
	check("editing the job given to Update")
	scribble(upd.Job)
	check("editing the record Update returned")
}

func testList(t *testing.T, s jobstore.Store) {
	ctx := t.Context()
	all := map[string]jobstore.Record{}
	for _, id := range []string{"p1", "p2", "p3"} {
		all[id] = mustCreate(t, s, NewJob(id, lifecycle.Pending))
	}
	all["d1"] = mustCreate(t, s, NewJob("d1", lifecycle.Denied))
	all["r1"] = createIn(t, s, "r1", lifecycle.Running)
	f := createIn(t, s, "f1", lifecycle.Pending)
	all["f1"] = mustUpdate(t, s, f, With(f, lifecycle.Failed, func(j *pb.JobInfo) { j.DeadLetter = true }))
	f = createIn(t, s, "f2", lifecycle.Pending)
	all["f2"] = mustUpdate(t, s, f, With(f, lifecycle.Failed))

	check := func(filter jobstore.Filter, want ...string) {
		t.Helper()
		recs, err := s.List(ctx, filter)
		if err != nil {
			t.Fatalf("List(%+v): %v", filter, err)
		}
		got := map[string]bool{}
		for _, r := range recs {
			id := r.Job.GetJobId()
			if got[id] {
				t.Fatalf("List(%+v) returned %s twice", filter, id)
			}
			got[id] = true
			w, ok := all[id]
			if !ok || r.Revision != w.Revision || !proto.Equal(r.Job, w.Job) {
				t.Fatalf("List(%+v) returned %v@%d, want %v@%d", filter, r.Job, r.Revision, w.Job, w.Revision)
			}
		}
		if len(got) != len(want) {
			t.Fatalf("List(%+v) = %v, want %v", filter, keys(got), want)
		}
		for _, id := range want {
			if !got[id] {
				t.Fatalf("List(%+v) = %v, want %v", filter, keys(got), want)
			}
		}
	}
	check(jobstore.Filter{}, "p1", "p2", "p3", "d1", "r1", "f1", "f2")
	check(jobstore.Filter{State: lifecycle.Pending}, "p1", "p2", "p3")
	check(jobstore.Filter{State: lifecycle.Running}, "r1")
	check(jobstore.Filter{State: lifecycle.Failed}, "f1", "f2")
	check(jobstore.Filter{DeadLetter: true}, "f1")
	check(jobstore.Filter{State: lifecycle.Failed, DeadLetter: true}, "f1")
	check(jobstore.Filter{State: lifecycle.Pending, DeadLetter: true})
	check(jobstore.Filter{State: lifecycle.Cancelled})
	check(jobstore.Filter{State: lifecycle.Denied, Limit: 5}, "d1")

	limited := func(filter jobstore.Filter, n int, from ...string) {
		t.Helper()
		recs, err := s.List(ctx, filter)
		if err != nil {
			t.Fatalf("List(%+v): %v", filter, err)
		}
		if len(recs) != n {
			t.Fatalf("List(%+v) = %d records, want %d", filter, len(recs), n)
		}
		seen := map[string]bool{}
		for _, r := range recs {
			id := r.Job.GetJobId()
			ok := !seen[id]
			seen[id] = true
			in := false
			for _, f := range from {
				in = in || f == id
			}
			if !ok || !in {
				t.Fatalf("List(%+v) returned %s (duplicate or not among %v)", filter, id, from)
			}
		}
	}
	limited(jobstore.Filter{Limit: 2}, 2, "p1", "p2", "p3", "d1", "r1", "f1", "f2")
	limited(jobstore.Filter{State: lifecycle.Pending, Limit: 1}, 1, "p1", "p2", "p3")
	limited(jobstore.Filter{State: lifecycle.Pending, Limit: 3}, 3, "p1", "p2", "p3")
	limited(jobstore.Filter{Limit: 100}, 7, "p1", "p2", "p3", "d1", "r1", "f1", "f2")

	// An update moves a job between filters.
	p1 := all["p1"]
	all["p1"] = mustUpdate(t, s, p1, With(p1, lifecycle.Cancelled))
	check(jobstore.Filter{State: lifecycle.Pending}, "p2", "p3")
	check(jobstore.Filter{State: lifecycle.Cancelled}, "p1")
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func testListEmpty(t *testing.T, s jobstore.Store) {
	recs, err := s.List(t.Context(), jobstore.Filter{})
	if err != nil || len(recs) != 0 {
		t.Fatalf("List of an empty store = %s, %v; want none", describe(recs), err)
	}
	recs, err = s.List(t.Context(), jobstore.Filter{State: lifecycle.Pending, Limit: 3})
	if err != nil || len(recs) != 0 {
		t.Fatalf("List of an empty store = %s, %v; want none", describe(recs), err)
	}
}

// watchLog records what a watcher was given, and whether fn was ever
// entered while another call of it was running.
type watchLog struct {
	mu         sync.Mutex
	recs       []jobstore.Record
	busy       atomic.Bool
	concurrent atomic.Bool
	done       chan error
	cancel     context.CancelFunc
}

// startWatch runs s.Watch on its own goroutine; extra runs inside fn.
func startWatch(t *testing.T, s jobstore.Store, extra func(jobstore.Record)) *watchLog {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	w := &watchLog{done: make(chan error, 1), cancel: cancel}
	go func() {
		w.done <- s.Watch(ctx, func(r jobstore.Record) {
			if !w.busy.CompareAndSwap(false, true) {
				w.concurrent.Store(true)
			}
			defer w.busy.Store(false)
			if extra != nil {
				extra(r)
			}
			w.mu.Lock()
			w.recs = append(w.recs, r)
			w.mu.Unlock()
		})
	}()
	t.Cleanup(func() { w.stop(t) })
	return w
}

func (w *watchLog) snapshot() []jobstore.Record {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]jobstore.Record(nil), w.recs...)
}

func (w *watchLog) waitFor(t *testing.T, n int) []jobstore.Record {
	t.Helper()
	Eventually(t, fmt.Sprintf("%d watched records", n), func() bool { return len(w.snapshot()) >= n })
	return w.snapshot()
}

// stop cancels the watch and requires Watch to return nil soon after.
func (w *watchLog) stop(t *testing.T) {
	t.Helper()
	w.cancel()
	select {
	case err, ok := <-w.done:
		if ok && err != nil {
			t.Errorf("Watch returned %v after its context ended, want nil", err)
		}
		if ok {
			close(w.done)
		}
	case <-time.After(Timeout):
		t.Fatalf("Watch did not return within %s of its context ending", Timeout)
	}
	if w.concurrent.Load() {
		t.Error("fn was called concurrently for one watcher")
	}
}

func sameRecord(a, b jobstore.Record) bool {
	return a.Revision == b.Revision && proto.Equal(a.Job, b.Job)
}

func testWatch(t *testing.T, s jobstore.Store) {
	a := mustCreate(t, s, NewJob("a", lifecycle.Pending))
	b := createIn(t, s, "b", lifecycle.Dispatched)

	w := startWatch(t, s, nil)
	initial := w.waitFor(t, 2)
	if len(initial) != 2 {
		t.Fatalf("watch began with %d records, want 2", len(initial))
	}
	for _, want := range []jobstore.Record{a, b} {
		found := false
		for _, r := range initial {
			found = found || sameRecord(r, want)
		}
		if !found {
			t.Fatalf("watch began with %s, want %s among them", describe(initial), describe([]jobstore.Record{want}))
		}
	}

	a1 := mustUpdate(t, s, a, With(a, lifecycle.Dispatched))
	c := mustCreate(t, s, NewJob("c", lifecycle.Pending))
	a2 := mustUpdate(t, s, a1, With(a1, lifecycle.Running))
	b1 := mustUpdate(t, s, b, With(b, lifecycle.Completed))
	want := []jobstore.Record{a1, c, a2, b1}

	got := w.waitLatest(t, want)[2:]
	RequireWatched(t, got, want)
	requireRecord(t, s, b1)
	requireRecord(t, s, a2)
	requireRecord(t, s, c)

	w.stop(t)
	// After the watch ended, writes go on and nothing more is delivered.
	n := len(w.snapshot())
	mustUpdate(t, s, a2, With(a2, lifecycle.Completed))
	if m := len(w.snapshot()); m != n {
		t.Fatalf("watch delivered %d records after it returned", m-n)
	}
}

func testWatchBurstInOrder(t *testing.T, s jobstore.Store) {
	w := startWatch(t, s, nil)
	// The store is empty: the watch begins with nothing. Once it has seen
	// the first record (as an initial record or as a change, depending on
	// when it started), it sees the writes that follow in order, perhaps
	// without revisions superseded while it lagged, and always the latest.
	first := mustCreate(t, s, NewJob("burst-start", lifecycle.Pending))
	w.waitFor(t, 1)
	want := []jobstore.Record{first}
	const jobs, updates = 4, 25
	cur := make([]jobstore.Record, jobs)
	for j := range jobs {
		cur[j] = mustCreate(t, s, NewJob(fmt.Sprintf("burst-%d", j), lifecycle.Pending))
		want = append(want, cur[j])
	}
	for u := range updates {
		for j := range jobs {
			cur[j] = mustUpdate(t, s, cur[j], With(cur[j], lifecycle.Pending, func(x *pb.JobInfo) {
				x.PendingReason = fmt.Sprintf("update %d", u)
			}))
			want = append(want, cur[j])
		}
	}
	RequireWatched(t, w.waitLatest(t, want), want)
}

// A watcher that keeps up, here because each write waits until the watcher
// has seen the previous one, sees every revision.
func testWatchKeepingUp(t *testing.T, s jobstore.Store) {
	w := startWatch(t, s, nil)
	rec := mustCreate(t, s, NewJob("step", lifecycle.Pending))
	want := []jobstore.Record{rec}
	w.waitLatest(t, want)
	for _, st := range []pb.JobState{lifecycle.Pending, lifecycle.Dispatched, lifecycle.Pending, lifecycle.Dispatched, lifecycle.Running, lifecycle.Completed} {
		rec = mustUpdate(t, s, rec, With(rec, st, func(j *pb.JobInfo) { j.Attempt++ }))
		want = append(want, rec)
		w.waitLatest(t, want)
	}
	got := w.snapshot()
	if len(got) != len(want) {
		t.Fatalf("watch saw %d records, want all %d\n got: %s\nwant: %s", len(got), len(want), describe(got), describe(want))
	}
	RequireWatched(t, got, want)
}

func testWatchEndedContext(t *testing.T, s jobstore.Store) {
	mustCreate(t, s, NewJob("x", lifecycle.Pending))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	done := make(chan error, 1)
	called := atomic.Bool{}
	go func() { done <- s.Watch(ctx, func(jobstore.Record) { called.Store(true) }) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Watch with an ended context = %v, want nil", err)
		}
	case <-time.After(Timeout):
		t.Fatal("Watch with an ended context did not return")
	}
	if called.Load() {
		t.Fatal("Watch with an ended context called fn")
	}
}

func testWatchReentrant(t *testing.T, s jobstore.Store) {
	rec := mustCreate(t, s, NewJob("re", lifecycle.Pending))
	var errs atomic.Int32
	// fn reads and writes the store: the store must not hold a lock of its
	// own while fn runs.
	w := startWatch(t, s, func(r jobstore.Record) {
		ctx, cancel := context.WithTimeout(context.Background(), Timeout)
		defer cancel()
		cur, err := s.Get(ctx, r.Job.GetJobId())
		if err != nil {
			errs.Add(1)
			return
		}
		if cur.Job.GetState() == lifecycle.Pending {
			if _, err := s.Update(ctx, cur, With(cur, lifecycle.Dispatched)); err != nil && !errors.Is(err, jobstore.ErrRevision) {
				errs.Add(1)
			}
		}
	})
	got := w.waitFor(t, 2)
	if got[0].Job.GetState() != lifecycle.Pending || got[1].Job.GetState() != lifecycle.Dispatched {
		t.Fatalf("watch saw %v then %v, want PENDING then DISPATCHED", got[0].Job, got[1].Job)
	}
	if got[0].Revision != rec.Revision {
		t.Fatalf("first record at revision %d, want %d", got[0].Revision, rec.Revision)
	}
	if errs.Load() != 0 {
		t.Fatal("store calls from inside fn failed")
	}
}
