package scheduler

import (
	"sync"
	"time"

	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// DefaultHeartbeatInterval is assumed for heartbeats that do not say when the
// next one comes (interval_ms), as the design document's workers do not.
const DefaultHeartbeatInterval = 5 * time.Second

// MemoryRegistry keeps the last heartbeat of each worker in memory. A worker
// that misses its heartbeats (Misses intervals without one) is no longer live:
// Snapshot leaves it out, and forgets it.
type MemoryRegistry struct {
	mu      sync.RWMutex
	workers map[string]registered
	// Misses is how many heartbeat intervals a worker may miss. Default 3.
	misses int
}

type registered struct {
	hb      *pb.Heartbeat
	seen    time.Time
	expires time.Time
}

// NewMemoryRegistry returns an empty registry that expires a worker after
// three missed heartbeats.
func NewMemoryRegistry() *MemoryRegistry {
	return &MemoryRegistry{workers: make(map[string]registered), misses: 3}
}

// UpdateHeartbeat records hb as its worker's latest. Heartbeats without a
// worker id are ignored.
func (r *MemoryRegistry) UpdateHeartbeat(hb *pb.Heartbeat) {
	if hb.GetWorkerId() == "" {
		return
	}
	interval := time.Duration(hb.GetIntervalMs()) * time.Millisecond
	if interval <= 0 {
		interval = DefaultHeartbeatInterval
	}
	now := time.Now()
	expires := now.Add(time.Duration(r.misses) * interval)
	r.mu.Lock()
	r.workers[hb.WorkerId] = registered{hb: hb, seen: now, expires: expires}
	r.mu.Unlock()
}

// Snapshot returns the live workers; the heartbeats in it are shared and must
// not be modified.
func (r *MemoryRegistry) Snapshot() map[string]*pb.Heartbeat {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]*pb.Heartbeat, len(r.workers))
	for id, w := range r.workers {
		if now.After(w.expires) {
			delete(r.workers, id)
			continue
		}
		out[id] = w.hb
	}
	return out
}

// Workers lists the live workers with when each last heartbeated.
func (r *MemoryRegistry) Workers() []*pb.WorkerInfo {
	now := time.Now()
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]*pb.WorkerInfo, 0, len(r.workers))
	for _, w := range r.workers {
		if !now.After(w.expires) {
			out = append(out, &pb.WorkerInfo{Heartbeat: w.hb, LastSeenMs: w.seen.UnixMilli()})
		}
	}
	return out
}

// Len is the number of live workers.
func (r *MemoryRegistry) Len() int { return len(r.Snapshot()) }
