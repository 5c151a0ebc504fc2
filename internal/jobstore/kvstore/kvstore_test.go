package kvstore

import (
	"context"
	"errors"
	"fmt"
	"github.com/cortex-os/core/internal/logging"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/cortex-os/core/internal/jobstore"
	"github.com/cortex-os/core/internal/jobstore/storetest"
	"github.com/cortex-os/core/internal/lifecycle"
	"github.com/cortex-os/core/internal/natstest"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// openJetStream opens a client to srv (natstest.Conn) and its JetStream context.
func openJetStream(t *testing.T, srv *server.Server) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc := natstest.Conn(t, srv.ClientURL())
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	return nc, js
}

// names hands out bucket and stream names unique within the test binary.
var names atomic.Int64

func uniqueName(prefix string) string {
	return fmt.Sprintf("%s_%d", prefix, names.Add(1))
}

// syncBuffer collects a logger's output while the test reads it.
type syncBuffer = logging.Buffer

func quietLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

func newStore(t *testing.T, js jetstream.JetStream, cfg Config) *Store {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	s, err := New(t.Context(), js, cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

// One server for the suite; every subtest gets its own bucket and client.
func TestConformance(t *testing.T) {
	t.Parallel()
	srv := natstest.RunServer(t)
	storetest.Run(t, func(t *testing.T) jobstore.Store {
		_, js := openJetStream(t, srv)
		return newStore(t, js, Config{Bucket: uniqueName("JOBS")})
	})
	storetest.RunWire(t, func(t *testing.T) jobstore.Store {
		_, js := openJetStream(t, srv)
		return newStore(t, js, Config{Bucket: uniqueName("JOBS")})
	})
}

// The suite again on a memory-storage bucket with history, on one client
// shared by all subtests.
func TestConformanceMemoryStorage(t *testing.T) {
	t.Parallel()
	srv := natstest.RunServer(t)
	_, js := openJetStream(t, srv)
	storetest.Run(t, func(t *testing.T) jobstore.Store {
		return newStore(t, js, Config{Bucket: uniqueName("MJOBS"), Storage: jetstream.MemoryStorage, History: 5})
	})
}

func TestDeadLettersConformance(t *testing.T) {
	t.Parallel()
	srv := natstest.RunServer(t)
	storetest.RunDeadLetters(t, func(t *testing.T) jobstore.DeadLetters {
		_, js := openJetStream(t, srv)
		name := uniqueName("DLQ")
		d, err := NewDeadLetters(t.Context(), js, DLConfig{Stream: name, SubjectPrefix: "test.dlq." + name, Logger: quietLogger()})
		if err != nil {
			t.Fatalf("NewDeadLetters: %v", err)
		}
		return d
	})
}

func TestDefaults(t *testing.T) {
	t.Parallel()
	srv := natstest.RunServer(t)
	_, js := openJetStream(t, srv)
	ctx := t.Context()
	s := newStore(t, js, Config{})
	st, err := s.kv.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.Config()
	if cfg.Bucket != DefaultBucket || cfg.History != 1 || cfg.TTL != 0 || cfg.Storage != jetstream.FileStorage || cfg.Replicas != 1 {
		t.Fatalf("default bucket config = %+v", cfg)
	}
	d, err := NewDeadLetters(ctx, js, DLConfig{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	info, err := d.stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sc := info.Config
	if sc.Name != DefaultDLStream || len(sc.Subjects) != 1 || sc.Subjects[0] != "sys.job.dlq.>" ||
		sc.Storage != jetstream.FileStorage || sc.Retention != jetstream.LimitsPolicy || sc.MaxMsgsPerSubject != 1 || sc.MaxAge != 0 {
		t.Fatalf("default dead-letter stream config = %+v", sc)
	}
	// Binding again (a restarted process) reuses both.
	if _, err := New(ctx, js, Config{Logger: quietLogger()}); err != nil {
		t.Fatalf("New again: %v", err)
	}
	if _, err := NewDeadLetters(ctx, js, DLConfig{Logger: quietLogger()}); err != nil {
		t.Fatalf("NewDeadLetters again: %v", err)
	}
}

// Values are the Protobuf encoding of pb.JobInfo, nothing else.
func TestValuesAreProtobuf(t *testing.T) {
	t.Parallel()
	srv := natstest.RunServer(t)
	_, js := openJetStream(t, srv)
	ctx := t.Context()
	s := newStore(t, js, Config{})
	job := storetest.NewJob("wire", lifecycle.Pending)
	rec, err := s.Create(ctx, job)
	if err != nil {
		t.Fatal(err)
	}
	e, err := s.kv.Get(ctx, "wire")
	if err != nil {
		t.Fatal(err)
	}
	want, _ := proto.Marshal(job)
	got := new(pb.JobInfo)
	if err := proto.Unmarshal(e.Value(), got); err != nil || !proto.Equal(got, job) || e.Revision() != rec.Revision {
		t.Fatalf("stored value %x (rev %d) is not the encoding %x of the job (rev %d): %v", e.Value(), e.Revision(), want, rec.Revision, err)
	}

	d, err := NewDeadLetters(ctx, js, DLConfig{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Put(ctx, job); err != nil {
		t.Fatal(err)
	}
	m, err := d.stream.GetLastMsgForSubject(ctx, "sys.job.dlq.wire")
	if err != nil {
		t.Fatal(err)
	}
	got.Reset()
	if err := proto.Unmarshal(m.Data, got); err != nil || !proto.Equal(got, job) {
		t.Fatalf("dead letter %x is not the encoding of the job: %v", m.Data, err)
	}
}

// Records and dead letters survive a restart of the server on the same data.
func TestSurvivesServerRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	srv := natstest.RunServerWithDir(t, dir)
	nc, js := openJetStream(t, srv)
	ctx := t.Context()

	s := newStore(t, js, Config{})
	a, err := s.Create(ctx, storetest.NewJob("a", lifecycle.Pending))
	if err != nil {
		t.Fatal(err)
	}
	a, err = s.Update(ctx, a, storetest.With(a, lifecycle.Dispatched, func(j *pb.JobInfo) { j.WorkerId = "w1" }))
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Create(ctx, storetest.NewJob("b.1", lifecycle.Denied))
	if err != nil {
		t.Fatal(err)
	}
	d, err := NewDeadLetters(ctx, js, DLConfig{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	dead := []*pb.JobInfo{storetest.NewJob("x", lifecycle.Failed), storetest.NewJob("y", lifecycle.Failed), storetest.NewJob("z", lifecycle.Failed)}
	for _, j := range dead {
		if err := d.Put(ctx, j); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := d.Take(ctx, "y"); err != nil {
		t.Fatal(err)
	}
	dead = []*pb.JobInfo{dead[0], dead[2]}

	nc.Close()
	srv.Shutdown()
	srv.WaitForShutdown()

	srv2 := natstest.RunServerWithDir(t, dir)
	_, js2 := openJetStream(t, srv2)
	s2 := newStore(t, js2, Config{})
	for _, want := range []jobstore.Record{a, b} {
		got, err := s2.Get(ctx, want.Job.GetJobId())
		if err != nil {
			t.Fatalf("after restart Get(%s): %v", want.Job.GetJobId(), err)
		}
		if got.Revision != want.Revision || !proto.Equal(got.Job, want.Job) {
			t.Fatalf("after restart %v@%d, want %v@%d", got.Job, got.Revision, want.Job, want.Revision)
		}
	}
	// Compare-and-set carries on from the revisions read before the restart.
	a2, err := s2.Update(ctx, a, storetest.With(a, lifecycle.Running))
	if err != nil {
		t.Fatalf("after restart Update from the pre-restart revision: %v", err)
	}
	if _, err := s2.Update(ctx, a, storetest.With(a, lifecycle.Running)); !errors.Is(err, jobstore.ErrRevision) {
		t.Fatalf("after restart stale Update: err = %v, want ErrRevision", err)
	}
	if a2.Revision <= b.Revision {
		t.Fatalf("revision %d after restart is not past %d", a2.Revision, b.Revision)
	}

	d2, err := NewDeadLetters(ctx, js2, DLConfig{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	got, err := d2.List(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(dead) || !proto.Equal(got[0], dead[0]) || !proto.Equal(got[1], dead[1]) {
		t.Fatalf("after restart dead letters = %v, want %v", got, dead)
	}
	if _, err := d2.Take(ctx, "y"); !errors.Is(err, jobstore.ErrNotFound) {
		t.Fatalf("after restart a taken dead letter came back: err = %v", err)
	}
}

// A value that does not decode is an error naming its key for Get, and is
// logged and skipped by List and Watch; it never panics.
func TestUndecodableRecords(t *testing.T) {
	t.Parallel()
	srv := natstest.RunServer(t)
	_, js := openJetStream(t, srv)
	ctx := t.Context()
	var logs syncBuffer
	s := newStore(t, js, Config{Logger: slog.New(slog.NewTextHandler(&logs, nil))})

	good, err := s.Create(ctx, storetest.NewJob("good", lifecycle.Pending))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.kv.Put(ctx, "garbage", []byte{0xff, 0xff, 0xff}); err != nil {
		t.Fatal(err)
	}
	other, _ := proto.Marshal(storetest.NewJob("someone-else", lifecycle.Pending))
	if _, err := s.kv.Put(ctx, "misfiled", other); err != nil {
		t.Fatal(err)
	}

	for _, key := range []string{"garbage", "misfiled"} {
		_, err := s.Get(ctx, key)
		if err == nil || errors.Is(err, jobstore.ErrNotFound) || !strings.Contains(err.Error(), fmt.Sprintf("%q", key)) {
			t.Fatalf("Get(%s) = %v, want an error naming the key", key, err)
		}
	}
	// Create of an id whose record is garbage: ErrExists, and why it could
	// not be read.
	if _, err := s.Create(ctx, storetest.NewJob("garbage", lifecycle.Pending)); !errors.Is(err, jobstore.ErrExists) || !strings.Contains(err.Error(), `"garbage"`) {
		t.Fatalf("Create over garbage = %v, want ErrExists naming the key", err)
	}

	recs, err := s.List(ctx, jobstore.Filter{})
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if len(recs) != 1 || !proto.Equal(recs[0].Job, good.Job) {
		t.Fatalf("List = %d records, want only the good record", len(recs))
	}

	var mu sync.Mutex
	var seen []string
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- s.Watch(wctx, func(r jobstore.Record) {
			mu.Lock()
			seen = append(seen, r.Job.GetJobId())
			mu.Unlock()
		})
	}()
	storetest.Eventually(t, "the initial good record", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen) == 1
	})
	if _, err := s.kv.Put(ctx, "garbage", []byte{0xff}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Update(ctx, good, storetest.With(good, lifecycle.Cancelled)); err != nil {
		t.Fatal(err)
	}
	storetest.Eventually(t, "the good record twice", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen) >= 2 && seen[len(seen)-1] == "good"
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Watch = %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 2 || seen[0] != "good" || seen[1] != "good" {
		t.Fatalf("Watch saw %v, want only good twice", seen)
	}
	if !strings.Contains(logs.String(), "garbage") || !strings.Contains(logs.String(), "misfiled") {
		t.Fatalf("skipped records not logged: %s", logs.String())
	}
}

// Deletes and purges (an operator's, with the nats CLI) are not changes a
// watcher sees; the deleted job is gone for Get and List.
func TestWatchSkipsDeletes(t *testing.T) {
	t.Parallel()
	srv := natstest.RunServer(t)
	_, js := openJetStream(t, srv)
	ctx := t.Context()
	s := newStore(t, js, Config{})
	a, err := s.Create(ctx, storetest.NewJob("a", lifecycle.Pending))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(ctx, storetest.NewJob("gone", lifecycle.Pending)); err != nil {
		t.Fatal(err)
	}
	if err := s.kv.Delete(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(ctx, storetest.NewJob("purged", lifecycle.Pending)); err != nil {
		t.Fatal(err)
	}
	if err := s.kv.Purge(ctx, "purged"); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var seen []jobstore.Record
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- s.Watch(wctx, func(r jobstore.Record) {
			mu.Lock()
			seen = append(seen, r)
			mu.Unlock()
		})
	}()
	storetest.Eventually(t, "the initial record", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen) == 1
	})
	if _, err := s.Create(ctx, storetest.NewJob("gone2", lifecycle.Pending)); err != nil {
		t.Fatal(err)
	}
	// The delete replaces the create in the bucket (History 1): a watch
	// that has not read the create yet never sees it. Deleted only once seen.
	storetest.Eventually(t, "gone2's create", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen) == 2
	})
	if err := s.kv.Delete(ctx, "gone2"); err != nil {
		t.Fatal(err)
	}
	a2, err := s.Update(ctx, a, storetest.With(a, lifecycle.Dispatched))
	if err != nil {
		t.Fatal(err)
	}
	storetest.Eventually(t, "the update", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen) > 0 && seen[len(seen)-1].Revision == a2.Revision
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Watch = %v", err)
	}
	mu.Lock()
	ids := make([]string, len(seen))
	for i, r := range seen {
		ids[i] = r.Job.GetJobId()
	}
	mu.Unlock()
	if strings.Join(ids, ",") != "a,gone2,a" {
		t.Fatalf("Watch saw %v, want a, gone2 (its create), a", ids)
	}
	for _, id := range []string{"gone", "purged", "gone2"} {
		if _, err := s.Get(ctx, id); !errors.Is(err, jobstore.ErrNotFound) {
			t.Fatalf("Get(deleted %s): err = %v, want ErrNotFound", id, err)
		}
	}
	recs, err := s.List(ctx, jobstore.Filter{})
	if err != nil || len(recs) != 1 || recs[0].Revision != a2.Revision {
		t.Fatalf("List after deletes = %d records, %v; want only a", len(recs), err)
	}
	// A deleted id can be created again.
	if _, err := s.Create(ctx, storetest.NewJob("gone", lifecycle.Pending)); err != nil {
		t.Fatalf("Create of a deleted id: %v", err)
	}
}

// Update of a job deleted behind the store's back is ErrNotFound, not
// ErrRevision.
func TestUpdateDeletedJob(t *testing.T) {
	t.Parallel()
	srv := natstest.RunServer(t)
	_, js := openJetStream(t, srv)
	ctx := t.Context()
	s := newStore(t, js, Config{})
	rec, err := s.Create(ctx, storetest.NewJob("doomed", lifecycle.Pending))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.kv.Delete(ctx, "doomed"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Update(ctx, rec, storetest.With(rec, lifecycle.Dispatched)); !errors.Is(err, jobstore.ErrNotFound) {
		t.Fatalf("Update of a deleted job: err = %v, want ErrNotFound", err)
	}
}

// The watch ends with an error, not a hang, when its connection closes.
func TestWatchConnectionClosed(t *testing.T) {
	t.Parallel()
	srv := natstest.RunServer(t)
	nc, js := openJetStream(t, srv)
	s := newStore(t, js, Config{})
	if _, err := s.Create(t.Context(), storetest.NewJob("a", lifecycle.Pending)); err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{}, 1)
	done := make(chan error, 1)
	go func() {
		done <- s.Watch(t.Context(), func(jobstore.Record) {
			select {
			case started <- struct{}{}:
			default:
			}
		})
	}()
	<-started
	nc.Close()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Watch = nil after its connection closed, want an error")
		}
	case <-time.After(storetest.Timeout):
		t.Fatal("Watch did not return after its connection closed")
	}
}

// Dead letters that do not decode are skipped by List, and Take of one is
// an error that leaves it in place.
func TestUndecodableDeadLetters(t *testing.T) {
	t.Parallel()
	srv := natstest.RunServer(t)
	_, js := openJetStream(t, srv)
	ctx := t.Context()
	var logs syncBuffer
	d, err := NewDeadLetters(ctx, js, DLConfig{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	good := storetest.NewJob("good", lifecycle.Failed)
	if err := d.Put(ctx, good); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "sys.job.dlq.garbage", []byte{0xff, 0xff}); err != nil {
		t.Fatal(err)
	}
	got, err := d.List(ctx, 0)
	if err != nil || len(got) != 1 || !proto.Equal(got[0], good) {
		t.Fatalf("List = %v, %v; want only the good job", got, err)
	}
	if !strings.Contains(logs.String(), "garbage") {
		t.Fatalf("skipped dead letter not logged: %s", logs.String())
	}
	if _, err := d.Take(ctx, "garbage"); err == nil || errors.Is(err, jobstore.ErrNotFound) || !strings.Contains(err.Error(), "garbage") {
		t.Fatalf("Take(garbage) = %v, want an error naming it", err)
	}
	if _, err := d.stream.GetLastMsgForSubject(ctx, "sys.job.dlq.garbage"); err != nil {
		t.Fatalf("Take of an undecodable dead letter removed it: %v", err)
	}
}

// Binding an existing bucket changes what Config sets and keeps the rest:
// an operator's limit, and per-message TTLs a later version may have
// turned on (the server cannot turn them off, so a store that tried to
// could not bind the bucket again). A bucket on other storage than asked
// is an error, not silently the other.
func TestNewKeepsWhatItDoesNotSet(t *testing.T) {
	t.Parallel()
	srv := natstest.RunServer(t)
	_, js := openJetStream(t, srv)
	ctx := t.Context()
	bucket := uniqueName("KEEP")
	s := newStore(t, js, Config{Bucket: bucket})
	job := &pb.JobInfo{JobId: "kept", State: pb.JobState_JOB_STATE_PENDING, Request: &pb.JobRequest{JobId: "kept", Topic: "job.echo"}}
	if _, err := s.Create(ctx, job); err != nil {
		t.Fatal(err)
	}
	info, err := s.stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	later := info.Config
	later.AllowMsgTTL = true
	later.MaxBytes = 1 << 30
	if _, err := js.UpdateStream(ctx, later); err != nil {
		t.Fatal(err)
	}

	again := newStore(t, js, Config{Bucket: bucket, History: 2})
	info, err = again.stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if c := info.Config; !c.AllowMsgTTL || c.MaxBytes != 1<<30 || c.MaxMsgsPerSubject != 2 {
		t.Fatalf("after binding again: per-message TTLs %v, max bytes %d, history %d; want true, %d, 2", c.AllowMsgTTL, c.MaxBytes, c.MaxMsgsPerSubject, 1<<30)
	}
	if rec, err := again.Get(ctx, "kept"); err != nil || rec.Job.GetJobId() != "kept" {
		t.Fatalf("Get after binding again: %v, %v", rec.Job, err)
	}

	if _, err := New(ctx, js, Config{Bucket: bucket, Storage: jetstream.MemoryStorage, Logger: quietLogger()}); err == nil || !strings.Contains(err.Error(), "storage") {
		t.Fatalf("New on memory storage for a bucket on file storage: %v; want an error naming the storage", err)
	}
}

// Processes that bind a new bucket at the same moment, with different
// settings, all bind it: the one that finds it made meanwhile updates it.
func TestNewBindsABucketMadeMeanwhile(t *testing.T) {
	t.Parallel()
	srv := natstest.RunServer(t)
	_, js := openJetStream(t, srv)
	for round := range 5 {
		bucket := uniqueName("RACE")
		errs := make(chan error, 8)
		var wg sync.WaitGroup
		for i := range 8 {
			wg.Go(func() {
				_, err := New(t.Context(), js, Config{Bucket: bucket, History: uint8(1 + i%2), Logger: quietLogger()})
				errs <- err
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatalf("round %d: New: %v", round, err)
			}
		}
	}
}
