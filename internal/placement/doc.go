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
package placement
