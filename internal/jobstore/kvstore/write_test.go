package kvstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/cortex-os/core/internal/jobstore"
	"github.com/cortex-os/core/internal/lifecycle"
	"github.com/cortex-os/core/internal/natstest"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

func TestParsePubAck(t *testing.T) {
	for _, c := range []struct {
		in  string
		seq uint64
		ok  bool
	}{
		{`{"stream":"KV_A","seq":12}`, 12, true},
		{`{"stream":"KV_A","seq":7,"duplicate":true}`, 7, true},
		{`{"stream":"KV_A","domain":"hub","seq":9}`, 9, true},
		{`{"stream":"KV_AB","seq":12}`, 0, false},
		{`{"stream":"KV_B","seq":12}`, 0, false},
		{`{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 3"},"stream":"KV_A","seq":0}`, 0, false},
		{`{"stream":"KV_A","seq":0}`, 0, false},
		{`{"stream":"KV_A","seq":}`, 0, false},
		{`{"stream":"KV_A","seq":12`, 0, false},
		{`{"stream":"KV_A"}`, 0, false},
		{``, 0, false},
	} {
		seq, ok := parsePubAck([]byte(c.in), "KV_A")
		if seq != c.seq || ok != c.ok {
			t.Errorf("parsePubAck(%s) = %d, %v; want %d, %v", c.in, seq, ok, c.seq, c.ok)
		}
	}
}

// The lean writer maps a lost compare-and-set and a taken id as the
// library's way does, and writes over a key an operator deleted.
func TestPutCompareAndSet(t *testing.T) {
	t.Parallel()
	srv := natstest.RunServer(t)
	_, js := openJetStream(t, srv)
	s := newStore(t, js, Config{Bucket: uniqueName("PUT")})
	if s.putPrefix == "" {
		t.Fatal("lean writer off on a plain server")
	}
	ctx := t.Context()
	job := &pb.JobInfo{JobId: "j1", State: lifecycle.Pending, Request: &pb.JobRequest{JobId: "j1", Topic: "t"}}
	rec, err := s.Create(ctx, job)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(ctx, job); !errors.Is(err, jobstore.ErrExists) {
		t.Fatalf("second create: %v, want ErrExists", err)
	}
	next := &pb.JobInfo{JobId: "j1", State: lifecycle.Dispatched, Attempt: 1, Request: job.Request}
	if _, err := s.Update(ctx, jobstore.Record{Job: rec.Job, Revision: rec.Revision + 100}, next); !errors.Is(err, jobstore.ErrRevision) {
		t.Fatalf("update at a wrong revision: %v, want ErrRevision", err)
	}
	up, err := s.Update(ctx, rec, next)
	if err != nil || up.Revision <= rec.Revision {
		t.Fatalf("update: %v, revision %d after %d", err, up.Revision, rec.Revision)
	}
	if _, err := s.Update(ctx, rec, next); !errors.Is(err, jobstore.ErrRevision) {
		t.Fatalf("update from a superseded revision: %v, want ErrRevision", err)
	}
	if err := s.kv.Delete(ctx, "j1"); err != nil {
		t.Fatal(err)
	}
	again, err := s.Create(ctx, job)
	if err != nil || again.Revision <= up.Revision {
		t.Fatalf("create over a deleted key: %v, revision %d", err, again.Revision)
	}
}

// With SkipOwnWrites a watch hands back only what another Store wrote.
func TestWatchSkipsOwnWrites(t *testing.T) {
	t.Parallel()
	srv := natstest.RunServer(t)
	_, js := openJetStream(t, srv)
	bucket := uniqueName("SKIP")
	own := newStore(t, js, Config{Bucket: bucket, SkipOwnWrites: true})
	_, js2 := openJetStream(t, srv)
	other := newStore(t, js2, Config{Bucket: bucket})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	mk := func(id string) *pb.JobInfo {
		return &pb.JobInfo{JobId: id, State: lifecycle.Pending, Request: &pb.JobRequest{JobId: id, Topic: "t"}}
	}
	got := make(chan jobstore.Record, 16)
	// next is the next record the watch hands back, which must be want's.
	next := func(want string) {
		t.Helper()
		select {
		case r := <-got:
			if r.Job.GetJobId() != want {
				t.Fatalf("watch handed back %s; want %s", r.Job.GetJobId(), want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no record %s from the other store", want)
		}
	}
	if _, err := other.Create(ctx, mk("before")); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- own.Watch(ctx, func(r jobstore.Record) { got <- r }) }()
	next("before") // the watch runs
	if _, err := own.Create(ctx, mk("mine")); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Create(ctx, mk("theirs")); err != nil {
		t.Fatal(err)
	}
	next("theirs") // not mine, written before it
	// A record written after both comes next: nothing else came between.
	if _, err := other.Create(ctx, mk("barrier")); err != nil {
		t.Fatal(err)
	}
	next("barrier")
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// A write whose answer never comes (NATS killed after taking the request)
// fails after writeTimeout when the caller's context has no deadline (the
// scheduler's has none): it never waits forever, holding up whatever waits
// for it.
func TestPutWithoutDeadlineTimesOut(t *testing.T) {
	srv := natstest.RunServer(t)
	nc, js := openJetStream(t, srv)
	s := newStore(t, js, Config{Bucket: uniqueName("LOST")})
	if s.putPrefix == "" {
		t.Fatal("lean writer off on a plain server")
	}
	swallowWrites(t, nc, s) // a responder that takes every write and answers none
	old := writeTimeout
	writeTimeout = 300 * time.Millisecond
	t.Cleanup(func() { writeTimeout = old })

	job := &pb.JobInfo{JobId: "j1", State: lifecycle.Pending, Request: &pb.JobRequest{JobId: "j1", Topic: "t"}}
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		_, err := s.Create(context.Background(), job)
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("a write nobody answered succeeded")
		}
		if d := time.Since(start); d < writeTimeout {
			t.Errorf("failed after %v, before the timeout", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a write nobody answered still waits after 10s")
	}
}

// With SkipOwnWrites the watch reads only the sequences its own writes did
// not get (watchGaps): under concurrent writes of both stores it delivers
// the latest record of every job the other store wrote, and nothing of its
// own.
func TestWatchFollowsOthersWritesAmongOwn(t *testing.T) {
	t.Parallel()
	srv := natstest.RunServer(t)
	_, js := openJetStream(t, srv)
	bucket := uniqueName("GAPS")
	own := newStore(t, js, Config{Bucket: bucket, SkipOwnWrites: true})
	_, js2 := openJetStream(t, srv)
	other := newStore(t, js2, Config{Bucket: bucket})
	// One job of the other's before the watch: the first pass has it.
	mk := func(id string) *pb.JobInfo {
		return &pb.JobInfo{JobId: id, State: lifecycle.Pending, Request: &pb.JobRequest{JobId: id, Topic: "t"}}
	}
	if _, err := other.Create(t.Context(), mk("theirs-before")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var mu sync.Mutex
	seen := make(map[string]jobstore.Record)
	done := make(chan error, 1)
	go func() {
		done <- own.Watch(ctx, func(r jobstore.Record) {
			mu.Lock()
			seen[r.Job.GetJobId()] = r
			mu.Unlock()
		})
	}()
	// The watch runs once its first pass has the job written before it.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		mu.Lock()
		_, ok := seen["theirs-before"]
		mu.Unlock()
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the watch's first pass did not hand back the job written before it")
		}
	}
	write := func(s *Store, prefix string, n int) error {
		for i := range n {
			id := fmt.Sprintf("%s-%d", prefix, i)
			rec, err := s.Create(ctx, mk(id))
			if err != nil {
				return err
			}
			next := proto.Clone(rec.Job).(*pb.JobInfo)
			next.State = lifecycle.Dispatched
			next.Attempt = 1
			if _, err := s.Update(ctx, rec, next); err != nil {
				return err
			}
		}
		return nil
	}
	var wg sync.WaitGroup
	errs := make(chan error, 9)
	for g := range 8 {
		wg.Go(func() { errs <- write(own, fmt.Sprintf("mine-%d", g), 100) })
	}
	wg.Go(func() { errs <- write(other, "theirs", 200) })
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n, missing := 0, ""
		for i := range 200 {
			id := fmt.Sprintf("theirs-%d", i)
			if r, ok := seen[id]; ok && r.Job.GetState() == lifecycle.Dispatched {
				n++
			} else if missing == "" {
				missing = id
			}
		}
		_, before := seen["theirs-before"]
		var mine []string
		for id := range seen {
			if strings.HasPrefix(id, "mine-") {
				mine = append(mine, id)
			}
		}
		mu.Unlock()
		if len(mine) > 0 {
			t.Fatalf("the watch handed back %d of the store's own writes, e.g. %s", len(mine), mine[0])
		}
		if n == 200 && before {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of 200 of the other store's jobs seen in their last state (missing e.g. %s); the one before the watch: %v", n, missing, before)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
