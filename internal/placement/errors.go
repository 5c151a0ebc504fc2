package placement

import (
	"errors"
	"fmt"
	"strconv"
)

// Sentinels for errors.Is. Every error of this package wraps exactly one of
// ErrWait, ErrUnplaceable or ErrQueueFull, and one of the finer ones.
var (
	// ErrWait: the job can run, but not now: capacity must free first (a
	// full pool, a tenant at its concurrency limit). Keep it queued.
	ErrWait = errors.New("wait for capacity")
	// ErrUnplaceable: no live worker can run the job now (none serves its
	// topic, none has a capability or label it needs): only a worker joining
	// or changing can help. Keep it queued, parked, with the reason.
	ErrUnplaceable = errors.New("no worker can run the job now")
	// ErrQueueFull: a submission refused at a pending bound. Retryable: the
	// same submission may succeed once the queue drains.
	ErrQueueFull = errors.New("pending limit reached")

	// ErrPoolFull: every worker that could run the job is busy (wraps ErrWait).
	ErrPoolFull = errors.New("pool full")
	// ErrNoWorker: no live worker qualifies (wraps ErrUnplaceable).
	ErrNoWorker = errors.New("no live worker")
	// ErrTenantLimit: the tenant runs as many jobs as it may (wraps ErrWait).
	ErrTenantLimit = errors.New("tenant at its concurrency limit")
)

// PoolFullError: the workers that could run the job are all busy. Its
// message is the reason, "pool gpu full: 4 of 4 slots busy".
type PoolFullError struct {
	Pool string
	// Busy and Slots count the job slots of the live workers that could run
	// the job: all busy.
	Busy, Slots int
	// Topic is set when only the workers serving the job's topic are full:
	// others in the pool have room.
	Topic string
	// Requirement is set when only the workers that meet the job's own
	// requirements are full ("capability gpu and label region=eu").
	Requirement string
	// PoolWide: every worker of the pool is full, so no queued job of the
	// pool can be placed before capacity frees: stop draining the pool.
	PoolWide bool
	// Worker is set when the slots counted are one worker's: "worker w1
	// full: 1 of 1 slots busy".
	Worker string
}

func (e *PoolFullError) Error() string {
	msg := "pool " + e.Pool + " full"
	if e.Worker != "" {
		msg = "worker " + e.Worker + " full"
	}
	if e.Topic != "" {
		msg += " for " + e.Topic
	}
	msg += ": " + strconv.Itoa(e.Busy) + " of " + strconv.Itoa(e.Slots) + " slots busy"
	if e.Requirement != "" {
		msg += " on workers with " + e.Requirement
	}
	return msg
}

// Unwrap makes errors.Is match ErrWait and ErrPoolFull.
func (e *PoolFullError) Unwrap() []error { return []error{ErrWait, ErrPoolFull} }

// NoWorkerError: no live worker can run the job now. Its message is the
// reason: "no live worker with capability gpu", "no live worker with label
// region=eu", "no live worker serves job.x".
type NoWorkerError struct {
	Pool, Topic string
	// Capability or Label ("region=eu") is the one requirement no live
	// worker meets, when there is one; else Requirement names the
	// requirements no live worker meets together.
	Capability, Label, Requirement string
	// Draining: workers serve the topic, but every one of them is draining.
	Draining bool
	// OtherPools: workers serve the topic, but belong to other pools.
	OtherPools bool
	// PoolWide: no live worker serves any topic of the pool, so no queued job
	// of the pool can be placed before a worker joins: stop draining the pool.
	PoolWide bool
}

func (e *NoWorkerError) Error() string {
	switch {
	case e.Capability != "":
		return "no live worker with capability " + e.Capability
	case e.Label != "":
		return "no live worker with label " + e.Label
	case e.Requirement != "":
		return "no live worker with " + e.Requirement
	case e.Draining:
		return "every live worker serving " + e.Topic + " is draining"
	case e.OtherPools:
		return "no live worker of pool " + e.Pool + " serves " + e.Topic
	}
	return "no live worker serves " + e.Topic
}

// Unwrap makes errors.Is match ErrUnplaceable and ErrNoWorker.
func (e *NoWorkerError) Unwrap() []error { return []error{ErrUnplaceable, ErrNoWorker} }

// TenantLimitError: the tenant has MaxConcurrent jobs placed and not
// finished. "tenant acme at its limit of 10".
type TenantLimitError struct {
	Tenant string
	Limit  int
}

func (e *TenantLimitError) Error() string {
	return "tenant " + e.Tenant + " at its limit of " + strconv.Itoa(e.Limit)
}

// Unwrap makes errors.Is match ErrWait and ErrTenantLimit.
func (e *TenantLimitError) Unwrap() []error { return []error{ErrWait, ErrTenantLimit} }

// Where a QueueFullError's bound is.
const (
	BoundPool       = "pool"        // the pool's MaxPending
	BoundTenant     = "tenant"      // the tenant's MaxPending, over all pools
	BoundTenantPool = "tenant-pool" // the pool's TenantMaxPending
	BoundTotal      = "total"       // MaxPendingTotal
)

// QueueFullError refuses a submission at a pending bound; it is retryable.
// "pool echo full: 10000 jobs pending", "tenant acme at its pending limit
// of 1000".
type QueueFullError struct {
	Bound        string // BoundPool, BoundTenant, BoundTenantPool or BoundTotal
	Pool, Tenant string
	Limit        int
}

func (e *QueueFullError) Error() string {
	switch e.Bound {
	case BoundTenant:
		return fmt.Sprintf("tenant %s at its pending limit of %d", e.Tenant, e.Limit)
	case BoundTenantPool:
		return fmt.Sprintf("tenant %s at its pending limit of %d in pool %s", e.Tenant, e.Limit, e.Pool)
	case BoundTotal:
		return fmt.Sprintf("scheduler full: %d jobs pending", e.Limit)
	}
	return fmt.Sprintf("pool %s full: %d jobs pending", e.Pool, e.Limit)
}

// Unwrap makes errors.Is match ErrQueueFull.
func (e *QueueFullError) Unwrap() error { return ErrQueueFull }

// Retryable reports that the same submission may succeed later.
func (e *QueueFullError) Retryable() bool { return true }

// PoolWide reports whether err says that no queued job of the pool can be
// placed now (every worker of the pool is full, or none is live), so the
// engine should stop draining the pool until the registry changes, rather
// than try the pool's other jobs one by one.
func PoolWide(err error) bool {
	var full *PoolFullError
	if errors.As(err, &full) {
		return full.PoolWide
	}
	var none *NoWorkerError
	if errors.As(err, &none) {
		return none.PoolWide
	}
	return false
}
