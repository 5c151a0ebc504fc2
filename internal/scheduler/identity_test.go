package scheduler_test

import (
	"strings"
	"testing"

	"github.com/cortex-os/core/internal/lifecycle"
	"github.com/cortex-os/core/internal/scheduler"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// runningOn submits a job and has worker w confirm it: the job is RUNNING on w.
func runningOn(r *rig, id, w string) {
	r.t.Helper()
	r.bus.fallback("", ackBy(w))
	r.submit(request(id, "job.echo"), "trace-"+id, "")
	r.waitState(id, lifecycle.Running, 1)
}

// A worker names itself in its subjects; a result or heartbeat whose worker_id
// is not the worker its subject names is refused, counted and logged, and
// changes nothing.
func TestPacketNamingAnotherWorkerIsRefused(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	runningOn(r, "j1", "w2")

	// w1 publishes on its own subject a result claiming to be w2's.
	forged := wire.JobResultPacket("t", "w1", completed("j1", 1, "w2"))
	if err := r.bus.resultOn(t, wire.ResultSubject("w1"), forged); err != nil {
		t.Fatalf("a refused result asked for redelivery: %v", err)
	}
	// A heartbeat as w2 on w1's subject.
	hb := &pb.Heartbeat{WorkerId: "w2", Held: []*pb.HeldJob{{JobId: "j1", Attempt: 1}}}
	r.bus.heartbeatOn(t, wire.WorkerHeartbeatSubject("echo", "w1"), wire.HeartbeatPacket("hb", "w1", hb))
	// A result smuggled on a heartbeat subject is held to the same rule.
	r.bus.heartbeatOn(t, wire.WorkerHeartbeatSubject("echo", "w1"), forged)

	st := r.e.Stats()
	if st.IdentityRejected != 3 || st.Results != 0 || st.Heartbeats != 0 {
		t.Errorf("stats %+v: want 3 refused, no result or heartbeat applied", st)
	}
	if _, ok := r.reg.Snapshot()["w2"]; ok {
		t.Error("a heartbeat on another worker's subject reached the registry")
	}
	if j := r.job("j1"); j.GetState() != lifecycle.Running {
		t.Errorf("job %s after forged packets, want RUNNING", describe(j))
	}
	if logs := r.logs.String(); !strings.Contains(logs, "subject names another worker") || !strings.Contains(logs, "level=WARN") {
		t.Errorf("no warning logged:\n%s", logs)
	}

	// The real w2, on its own subject, is heard.
	r.result(completed("j1", 1, "w2"))
	r.waitState("j1", lifecycle.Completed, 1)
}

// Without require_worker_identity, the design document's bare subjects still
// work; with it, they are refused.
func TestBareSubjects(t *testing.T) {
	t.Parallel()
	for _, require := range []bool{false, true} {
		r := newRig(t, withConfig(func(c *scheduler.Config) { c.RequireWorkerIdentity = require }))
		runningOn(r, "j1", "w1")
		hb := &pb.Heartbeat{WorkerId: "w1"}
		r.bus.heartbeatOn(t, wire.HeartbeatSubject("echo"), wire.HeartbeatPacket("hb", "w1", hb))
		if err := r.bus.resultOn(t, wire.SubjectResult, wire.JobResultPacket("t", "w1", completed("j1", 1, "w1"))); err != nil {
			t.Fatal(err)
		}
		// A submission on a heartbeat subject: a worker's user may publish
		// there, but submitting is not a worker's.
		r.bus.heartbeatOn(t, wire.WorkerHeartbeatSubject("echo", "w1"), submitPacket("t", request("j2", "job.echo")))
		st := r.e.Stats()
		if !require {
			if st.IdentityRejected != 0 || st.Heartbeats != 1 {
				t.Errorf("bare subjects, identity not required: stats %+v", st)
			}
			r.waitState("j1", lifecycle.Completed, 1)
			continue
		}
		if st.IdentityRejected != 3 || st.Heartbeats != 0 || st.Results != 0 || st.Submitted != 1 {
			t.Errorf("bare subjects, identity required: stats %+v, want 3 refused", st)
		}
		if j := r.job("j1"); j.GetState() != lifecycle.Running {
			t.Errorf("job %s after a result on the bare subject, want RUNNING", describe(j))
		}
		if r.job("j2") != nil {
			t.Error("a submission on a heartbeat subject created a job")
		}
		r.result(completed("j1", 1, "w1")) // on sys.job.result.w1
		r.waitState("j1", lifecycle.Completed, 1)
	}
}
