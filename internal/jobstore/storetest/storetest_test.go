package storetest

import (
	"fmt"
	"testing"

	"github.com/cortex-os/core/internal/jobstore"
	"github.com/cortex-os/core/internal/lifecycle"
)

// fatalRecorder is a testing.TB whose Fatalf records and stops the goroutine.
type fatalRecorder struct {
	testing.TB
	failed bool
	msg    string
}

func (f *fatalRecorder) Helper() {}

func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.failed = true
	f.msg = fmt.Sprintf(format, args...)
	panic(f)
}

func requireWatchedFails(t *testing.T, got, want []jobstore.Record) (failed bool, msg string) {
	t.Helper()
	rec := &fatalRecorder{TB: t}
	func() {
		defer func() {
			if r := recover(); r != nil && r != rec {
				panic(r)
			}
		}()
		RequireWatched(rec, got, want)
	}()
	return rec.failed, rec.msg
}

func TestRequireWatched(t *testing.T) {
	t.Parallel()
	r := func(id string, rev uint64) jobstore.Record {
		return jobstore.Record{Job: NewJob(id, lifecycle.Pending), Revision: rev}
	}
	a1, b2, a3, c4, a5 := r("a", 1), r("b", 2), r("a", 3), r("c", 4), r("a", 5)
	want := []jobstore.Record{a1, b2, a3, c4, a5}
	for _, tc := range []struct {
		name string
		got  []jobstore.Record
		ok   bool
	}{
		{"everything", want, true},
		{"superseded skipped", []jobstore.Record{b2, c4, a5}, true},
		{"some superseded skipped", []jobstore.Record{a1, b2, c4, a5}, true},
		{"latest of a skipped", []jobstore.Record{a1, b2, a3, c4}, false},
		{"latest of b skipped", []jobstore.Record{a1, a3, c4, a5}, false},
		{"out of order", []jobstore.Record{b2, a1, a3, c4, a5}, false},
		{"twice", []jobstore.Record{a1, b2, b2, a3, c4, a5}, false},
		{"invented", []jobstore.Record{a1, b2, r("x", 9), a3, c4, a5}, false},
		{"wrong content", []jobstore.Record{a1, b2, a3, r("c", 5), a5}, false},
		{"nothing", nil, false},
	} {
		failed, msg := requireWatchedFails(t, tc.got, want)
		if failed == tc.ok {
			t.Errorf("%s: RequireWatched failed = %v (%s), want %v", tc.name, failed, msg, !tc.ok)
		}
	}
}
