package kvstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cortex-os/core/internal/jobstore/storetest"
	"github.com/cortex-os/core/internal/lifecycle"
	"github.com/cortex-os/core/internal/natstest"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// swallowWrites points s's writes at a subscription that takes them and
// answers none, and returns it.
func swallowWrites(t *testing.T, nc *nats.Conn, s *Store) *nats.Subscription {
	t.Helper()
	sub, err := nc.SubscribeSync("swallow.>")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	s.putPrefix = "swallow."
	return sub
}

func testJob(id string) *pb.JobInfo {
	return &pb.JobInfo{JobId: id, State: lifecycle.Pending, Request: &pb.JobRequest{JobId: id, Topic: "t"}}
}

// Close fails a write waiting for its acknowledgement at once (not after
// writeTimeout), and every write after it; reads go on.
func TestCloseFailsWaitingAndLaterWrites(t *testing.T) {
	srv := natstest.RunServer(t)
	nc, js := openJetStream(t, srv)
	s := newStore(t, js, Config{Bucket: uniqueName("CLOSE")})
	if _, err := s.Create(t.Context(), testJob("before")); err != nil {
		t.Fatal(err)
	}
	prefix := s.putPrefix
	sub := swallowWrites(t, nc, s)
	old := writeTimeout
	writeTimeout = time.Hour
	t.Cleanup(func() { writeTimeout = old })

	done := make(chan error, 1)
	go func() {
		_, err := s.Create(context.Background(), testJob("waiting"))
		done <- err
	}()
	if _, err := sub.NextMsg(storetest.Timeout); err != nil { // the write is out
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, errAcksClosed) {
			t.Fatalf("waiting write: err = %v, want %v", err, errAcksClosed)
		}
	case <-time.After(storetest.Timeout):
		t.Fatal("a waiting write still waits after Close")
	}
	s.putPrefix = prefix
	if _, err := s.Create(t.Context(), testJob("after")); !errors.Is(err, errAcksClosed) {
		t.Fatalf("write after Close: err = %v, want %v", err, errAcksClosed)
	}
	if _, err := s.Get(t.Context(), "before"); err != nil {
		t.Fatalf("read after Close: %v", err)
	}
}

// A write given up (its context ended) leaves nothing behind: the answer
// that comes late is dropped, and the next writes get their own answers.
func TestGivenUpWriteLeavesNoAnswerBehind(t *testing.T) {
	srv := natstest.RunServer(t)
	nc, js := openJetStream(t, srv)
	s := newStore(t, js, Config{Bucket: uniqueName("GIVENUP")})
	prefix := s.putPrefix
	sub := swallowWrites(t, nc, s)

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := s.Create(ctx, testJob("late"))
		done <- err
	}()
	req, err := sub.NextMsg(storetest.Timeout)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("given-up write: err = %v, want context.Canceled", err)
	}
	// The late answer, a success with a revision no write of the store got.
	if err := req.Respond([]byte(`{"stream":"` + s.streamName + `","seq":999999}`)); err != nil {
		t.Fatal(err)
	}
	s.putPrefix = prefix
	for i, id := range []string{"a", "b", "c"} {
		rec, err := s.Create(t.Context(), testJob(id))
		if err != nil {
			t.Fatal(err)
		}
		if rec.Revision != uint64(i+1) {
			t.Fatalf("write %d: revision %d, want %d (another write's answer?)", i+1, rec.Revision, i+1)
		}
	}
}

// Writes in flight together each get their own acknowledgement, whichever
// of them receives it from the subscription and in whatever order they
// come: here answered in the reverse order of the writes.
func TestWritesInFlightGetTheirOwnAnswers(t *testing.T) {
	srv := natstest.RunServer(t)
	nc, js := openJetStream(t, srv)
	s := newStore(t, js, Config{Bucket: uniqueName("ROUTED")})
	sub := swallowWrites(t, nc, s)

	const n = 8
	type result struct {
		id  string
		rev uint64
		err error
	}
	results := make(chan result, n)
	for i := range n {
		id := fmt.Sprintf("job-%d", i)
		go func() {
			rec, err := s.Create(t.Context(), testJob(id))
			var rev uint64
			if err == nil {
				rev = rec.Revision
			}
			results <- result{id, rev, err}
		}()
	}
	reqs := make([]*nats.Msg, 0, n)
	for range n {
		req, err := sub.NextMsg(storetest.Timeout)
		if err != nil {
			t.Fatal(err)
		}
		reqs = append(reqs, req)
	}
	want := make(map[string]uint64, n)
	for i := len(reqs) - 1; i >= 0; i-- {
		seq := uint64(1000 + i)
		want[strings.TrimPrefix(reqs[i].Subject, "swallow.")] = seq
		if err := reqs[i].Respond([]byte(fmt.Sprintf(`{"stream":%q,"seq":%d}`, s.streamName, seq))); err != nil {
			t.Fatal(err)
		}
	}
	for range n {
		r := <-results
		if r.err != nil {
			t.Fatalf("%s: %v", r.id, r.err)
		}
		if seq, ok := want[r.id]; !ok || r.rev != seq {
			t.Fatalf("%s: revision %d, want the answer to its own write (%v)", r.id, r.rev, want)
		}
	}
}
