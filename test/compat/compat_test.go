// Package compat checks the promise of the append-only wire contract: clients
// and workers built from the design document's original cortex.v1 files (kept
// in api/proto/baseline) still work with today's scheduler.
package compat

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/bufbuild/protocompile"
	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/cortex-os/core/internal/infrastructure/bus"
	"github.com/cortex-os/core/internal/lifecycle"
	"github.com/cortex-os/core/internal/logging"
	"github.com/cortex-os/core/internal/natstest"
	"github.com/cortex-os/core/internal/system"
	"github.com/cortex-os/core/internal/systest"
	"github.com/cortex-os/core/pkg/client"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// baselinePacket compiles the original v1 files and returns their BusPacket.
func baselinePacket(t *testing.T) protoreflect.MessageDescriptor {
	t.Helper()
	root := systest.RepoRoot(t)
	c := protocompile.Compiler{Resolver: protocompile.WithStandardImports(&protocompile.SourceResolver{
		ImportPaths: []string{filepath.Join(root, "api", "proto", "baseline")},
	})}
	files, err := c.Compile(context.Background(), "api/proto/v1/packet.proto")
	if err != nil {
		t.Fatalf("compiling the baseline: %v", err)
	}
	md := files[0].Messages().ByName("BusPacket")
	if md == nil {
		t.Fatal("baseline has no BusPacket")
	}
	return md
}

// field sets a field of m by name.
func set(m protoreflect.Message, name string, v protoreflect.Value) {
	m.Set(m.Descriptor().Fields().ByName(protoreflect.Name(name)), v)
}

func get(m protoreflect.Message, name string) protoreflect.Value {
	return m.Get(m.Descriptor().Fields().ByName(protoreflect.Name(name)))
}

// startSystem runs a scheduler (store auto: JetStream) and, if echo, an echo
// worker, against url, until the test ends.
func startSystem(t *testing.T, url string, echo bool) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	log := logging.Discard()
	started := make(chan struct{})
	go func() {
		defer func() { done <- struct{}{} }()
		if err := system.RunScheduler(ctx, system.SchedulerOptions{NatsURL: url, Logger: log, Started: func() { close(started) }}); err != nil {
			t.Errorf("scheduler: %v", err)
		}
	}()
	n := 1
	if echo {
		n = 2
		go func() {
			defer func() { done <- struct{}{} }()
			if err := system.RunEchoWorker(ctx, system.EchoWorkerOptions{NatsURL: url, Logger: log}); err != nil {
				t.Errorf("echo worker: %v", err)
			}
		}()
	}
	t.Cleanup(func() {
		cancel()
		for range n {
			<-done
		}
	})
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("scheduler did not start")
	}
}

// A client built from the original files submits a job with a plain core
// NATS publish, as the design document's sender does, and reads its result,
// whose new fields it does not know.
func TestOriginalClientSubmitsAndReadsResults(t *testing.T) {
	t.Parallel()
	md := baselinePacket(t)
	url := natstest.URL(t)
	startSystem(t, url, true)

	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	results := make(chan *nats.Msg, 16)
	sub, err := nc.ChanSubscribe("sys.job.result", results)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	pkt := dynamicpb.NewMessage(md)
	set(pkt, "trace_id", protoreflect.ValueOfString("trace-original"))
	set(pkt, "sender_id", protoreflect.ValueOfString("original-client"))
	set(pkt, "protocol_version", protoreflect.ValueOfUint32(1))
	reqField := md.Fields().ByName("job_request")
	req := pkt.NewField(reqField).Message()
	set(req, "job_id", protoreflect.ValueOfString("original-1"))
	set(req, "topic", protoreflect.ValueOfString("job.echo"))
	set(req, "priority", protoreflect.ValueOfEnum(2))
	set(req, "context_ptr", protoreflect.ValueOfString("memory://ctx"))
	pkt.Set(reqField, protoreflect.ValueOfMessage(req))
	data, err := proto.Marshal(pkt)
	if err != nil {
		t.Fatal(err)
	}

	// The worker may not be subscribed yet: the job waits PENDING and is
	// offered again, so one publish is enough.
	if err := nc.Publish("sys.job.submit", data); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(30 * time.Second)
	for {
		select {
		case m := <-results:
			got := dynamicpb.NewMessage(md)
			if err := proto.Unmarshal(m.Data, got); err != nil {
				t.Fatalf("the original BusPacket cannot decode a result: %v", err)
			}
			res := get(got, "job_result").Message()
			if get(res, "job_id").String() != "original-1" {
				continue
			}
			if status := get(res, "status").Enum(); status != 1 { // JOB_STATUS_COMPLETED
				t.Fatalf("status = %d, want 1 (COMPLETED)", status)
			}
			if get(got, "trace_id").String() != "trace-original" {
				t.Errorf("trace_id = %q", get(got, "trace_id").String())
			}
			if get(res, "worker_id").String() == "" || get(res, "result_ptr").String() == "" {
				t.Errorf("result without worker_id or result_ptr: %v", res)
			}
			return
		case <-deadline:
			t.Fatal("no result for the job an original client submitted")
		}
	}
}

// A worker built from the original files, as in the design document (it
// subscribes to its subject in a queue group, publishes results and
// heartbeats on sys.heartbeat.echo every 5 s: no confirmation, no attempt,
// no topics or capacity in its heartbeats), gets jobs and its results count.
// Placement (the default) cannot tell which topics such a worker serves: it
// gives the jobs of a topic no newer worker serves to the topic's queue group
// while one is live.
func TestOriginalWorkerResultsCount(t *testing.T) {
	t.Parallel()
	md := baselinePacket(t)
	url := natstest.URL(t)
	startSystem(t, url, false)

	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	resField := md.Fields().ByName("job_result")
	_, err = nc.QueueSubscribe("job.original", "workers-original", func(m *nats.Msg) {
		in := dynamicpb.NewMessage(md)
		if err := proto.Unmarshal(m.Data, in); err != nil {
			t.Errorf("the original worker cannot decode a dispatch: %v", err)
			return
		}
		jobID := get(get(in, "job_request").Message(), "job_id").String()
		out := dynamicpb.NewMessage(md)
		set(out, "trace_id", get(in, "trace_id"))
		set(out, "sender_id", protoreflect.ValueOfString("worker-original-1"))
		res := out.NewField(resField).Message()
		set(res, "job_id", protoreflect.ValueOfString(jobID))
		set(res, "status", protoreflect.ValueOfEnum(1))
		set(res, "result_ptr", protoreflect.ValueOfString("memory://original/"+jobID))
		set(res, "worker_id", protoreflect.ValueOfString("worker-original-1"))
		out.Set(resField, protoreflect.ValueOfMessage(res))
		data, _ := proto.Marshal(out)
		_ = nc.Publish("sys.job.result", data)
	})
	if err != nil {
		t.Fatal(err)
	}
	hbField := md.Fields().ByName("heartbeat")
	beat := func() {
		out := dynamicpb.NewMessage(md)
		set(out, "trace_id", protoreflect.ValueOfString("hb-worker-original-1"))
		set(out, "sender_id", protoreflect.ValueOfString("worker-original-1"))
		hb := out.NewField(hbField).Message()
		set(hb, "worker_id", protoreflect.ValueOfString("worker-original-1"))
		set(hb, "region", protoreflect.ValueOfString("local"))
		set(hb, "type", protoreflect.ValueOfString("cpu"))
		set(hb, "cpu_load", protoreflect.ValueOfFloat32(10))
		out.Set(hbField, protoreflect.ValueOfMessage(hb))
		data, _ := proto.Marshal(out)
		_ = nc.Publish("sys.heartbeat.echo", data)
	}
	beat() // the document's worker waits 5 s for its first; the test need not
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		tick := time.NewTicker(5 * time.Second)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				beat()
			}
		}
	}()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	b, err := bus.Connect(bus.Config{URL: url, Logger: logging.Discard()})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	c := systest.Client(t, b, client.Options{SenderID: "compat-test"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	job, err := c.Submit(ctx, &pb.JobRequest{JobId: "plain-1", Topic: "job.original"})
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	final, err := c.Wait(ctx, job.GetJobId())
	if err != nil {
		t.Fatalf("watch: %v", err)
	}
	if final.GetState() != lifecycle.Completed || final.GetWorkerId() != "worker-original-1" ||
		final.GetResultPtr() != "memory://original/plain-1" {
		t.Fatalf("job ended %s on %q with %q, want COMPLETED on worker-original-1", lifecycle.Name(final.GetState()), final.GetWorkerId(), final.GetResultPtr())
	}
}
