// Package placement is the scheduler's pure decision logic: which worker a
// job goes to, which queued job leaves next, and which submissions are
// refused. It imports no NATS and starts no goroutine; the engine feeds it
// heartbeats, submissions and outcomes, and it answers with decisions and
// reasons, so every rule here is tested without a bus (as Nomad's scheduler
// is tested without its servers).
//
// The parts:
//
//   - Config (YAML) names pools, tenants and the default strategy; NewPools
//     validates it and resolves a job's topic to its Pool: the first pool
//     whose topic patterns match, else an implicit pool named after the topic.
//   - Registry keeps the live workers from their heartbeats, counts the jobs
//     placed on each at once (Assign, Release), reconciles those counts with
//     the jobs the heartbeats say are held, expires silent workers, and keeps
//     per-topic and per-pool candidate slices up to date so that a placement
//     decision scans a slice and allocates nothing.
//   - Strategy decides, for one job, over the Candidates the registry hands
//     it: "naive" (subject = topic, the NATS queue group picks) and
//     "least-loaded" (most free capacity, then lowest CPU/GPU load) are
//     built in; RegisterStrategy adds more. Registry.Place runs a strategy
//     and counts its choice against the worker in one step.
//   - Queues holds each pool's pending jobs: bounded (per pool, per tenant,
//     in total), ordered by priority with aging, shared fairly between
//     tenants by weight, held back for tenants at their concurrency limit,
//     and able to say why any job is waiting.
//
// Placement errors and queue refusals are typed, their messages are the
// user-facing reasons, and errors.Is tells "wait for capacity" (ErrWait)
// from "nothing can run this now" (ErrUnplaceable) and refusals that may
// succeed later (ErrQueueFull).
//
// # How the engine drives it
//
// One Pools, one Registry and one Queues per scheduler replica (Example
// shows the loop):
//
//   - heartbeat: Registry.Heartbeat(hb, receivedAt). If Registry.Version
//     changed since the engine last looked, Queues.WakeAll and drain.
//   - submit: job := NewJob(req, pools); Queues.Push(job). A *QueueFullError
//     is a retryable refusal whose message is the reason. Then drain the
//     job's pool.
//   - drain a pool (after a submit, a release, a wake, and on the timer
//     tick, over Queues.Backlogged): q.Next(), Registry.Place(job, nil)
//     (counts the job against the chosen worker at once); on success
//     Queues.Start(job), record Decision.WorkerID and publish on
//     Decision.Subject; on an error for which PoolWide is true,
//     q.Block(err.Error()) and stop; on any other error
//     Queues.Park(job, err.Error()) and go on.
//   - ack: nothing (the job stays counted).
//   - refusal, no responders, unconfirmed, dispatch error: Registry.Release
//     (workerID, jobID), then Queues.Readmit(job) (not bounded: it was
//     admitted) unless the job is over.
//   - result, lease lost, timeout: Registry.Release(workerID, jobID) and
//     Queues.Finish(jobID); Readmit instead of Finish for a retry. A job that
//     reaches a terminal state through another replica (seen in the job
//     store's watch) must be Finished too, or its tenant keeps counting it.
//   - cancel: Registry.Release("", jobID); Queues.Remove(jobID).
//   - timer tick: Registry.Expire() (then WakeAll if anything expired, for
//     the reasons to change), and drain.
//   - `cortex job get` of a PENDING job: Queues.Reason(jobID);
//     `cortex workers`: Registry.Workers().
//   - restart: Queues.Readmit every PENDING job from the store, with its
//     created time as Enqueued.
package placement
