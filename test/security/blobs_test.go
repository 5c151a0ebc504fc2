package security

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cortex-os/core/internal/infrastructure/config"
	"github.com/cortex-os/core/internal/lifecycle"
	"github.com/cortex-os/core/internal/systest"
	"github.com/cortex-os/core/pkg/blob"
	"github.com/cortex-os/core/pkg/client"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/worker"
)

// The blob store under the shipped configuration: the scheduler creates
// the bucket; a client uploads a large input; a worker of the worker role
// reads it and stores a large result; the client reads it back; and nothing
// is refused along the way (captureLogs). What the blob permissions do not
// allow: listing the bucket's objects (a consumer on every object's
// metadata), purging or deleting the bucket. What they cannot prevent (the
// limit docs/blobs.md states): a consumer on every object's chunks.
func TestBlobsUnderShippedConfig(t *testing.T) {
	t.Parallel()
	url := startServer(t).ClientURL()
	logs := captureLogs(t)
	log := logs.logger()
	runScheduler(t, url, config.StoreJetStream, config.Safety{}, log)

	wnc := connectAs(t, url, "echo-1", log).Conn()
	w, err := worker.New(wnc, worker.Config{Kind: "echo", ID: "echo-1", NamedSubjects: true, Logger: log,
		Handler: worker.HandlerFunc(func(ctx context.Context, job *worker.Job) (worker.Result, error) {
			in, err := job.Input(ctx)
			if err != nil {
				return worker.Result{}, err
			}
			return worker.Result{Data: append(in, in...)}, nil
		})})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*waitFor)
	defer cancel()
	wctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("worker: %v", err)
		}
	})
	select {
	case <-w.Ready():
	case <-ctx.Done():
		t.Fatal("the worker did not start")
	}

	cnc := connectAs(t, url, "client", log).Conn()
	c, err := client.New(cnc, client.Options{Identity: "client"})
	if err != nil {
		t.Fatal(err)
	}
	in := make([]byte, 512<<10)
	_, _ = rand.Read(in)
	req := &pb.JobRequest{Topic: "job.echo"}
	if _, err := c.Submit(ctx, req, client.WithInput(in)); err != nil {
		t.Fatal(err)
	}
	var job *pb.JobInfo
	systest.Eventually(t, waitFor, "the job to complete", func() bool {
		job, err = c.Get(ctx, req.GetJobId())
		return err == nil && lifecycle.Terminal(job.GetState())
	})
	if job.GetState() != lifecycle.Completed {
		t.Fatalf("job %s: %s", lifecycle.Name(job.GetState()), job.GetError())
	}
	got, err := c.Result(ctx, req.GetJobId())
	if err != nil || !bytes.Equal(got, append(in, in...)) {
		t.Fatalf("Result: %d bytes, %v", len(got), err)
	}

	// What a client may not do to the bucket. Each is refused by the server
	// (a permission violation, or no answer within the timeout).
	// (Its own logs: its refusals are the point, not a part of the system's.)
	refused := connectAs(t, url, "tenant-a", slog.New(slog.DiscardHandler)).Conn()
	refused.SetErrorHandler(func(*nats.Conn, *nats.Subscription, error) {})
	js, err := jetstream.New(refused)
	if err != nil {
		t.Fatal(err)
	}
	short, cancelShort := context.WithTimeout(ctx, waitFor/4)
	defer cancelShort()
	stream, err := js.Stream(short, "OBJ_CORTEX_BLOBS")
	if err != nil {
		t.Fatalf("stream info (allowed): %v", err)
	}
	meta, cancelMeta := context.WithTimeout(ctx, waitFor/4)
	defer cancelMeta()
	if _, err := stream.OrderedConsumer(meta, jetstream.OrderedConsumerConfig{FilterSubjects: []string{"$O.CORTEX_BLOBS.M.>"}}); err == nil {
		t.Error("a client listed every object's metadata")
	}
	// The limit docs/blobs.md states: NATS permissions cannot tell a
	// consumer filtered on one object's chunk subject from one filtered on
	// all of them (a literal ">" token matches the "*" the permission
	// grants), so a client can create a consumer on every object's chunks.
	// Should this start failing, the limit is gone: update the docs.
	chunks, cancelChunks := context.WithTimeout(ctx, waitFor/4)
	defer cancelChunks()
	if _, err := stream.OrderedConsumer(chunks, jetstream.OrderedConsumerConfig{FilterSubjects: []string{"$O.CORTEX_BLOBS.C.>"}}); err != nil {
		t.Errorf("the documented limit changed: a consumer on every object's chunks is refused now (%v): update docs/blobs.md", err)
	}
	if err := stream.Purge(short); err == nil {
		t.Error("a client purged the bucket")
	}
	if err := js.DeleteObjectStore(short, blob.DefaultBucket); err == nil || errors.Is(err, jetstream.ErrBucketNotFound) {
		t.Errorf("a client deleted the bucket: %v", err)
	}
}
