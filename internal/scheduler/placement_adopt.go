package scheduler

import pb "github.com/cortex-os/core/pkg/pb/v1"

// adoptPlacement counts a job another scheduler placed (DISPATCHED or
// RUNNING, not placed here) as if this one had: running for its tenant
// until it leaves its attempt, and against its worker's capacity when the
// worker is known (otherwise the worker's heartbeats report it). With
// Config.AdoptPlacements: a newly elected scheduler thus starts with the
// counts its predecessor had, and a tenant's max_concurrent holds across
// the handover.
func (pl *placer) adoptPlacement(job *pb.JobInfo) {
	pj := pl.newJob(job)
	pl.queues.Readmit(pj)
	pl.queues.Start(pj)
	if w := job.GetWorkerId(); w != "" {
		pl.preg.Assign(w, job.GetJobId())
	}
}
