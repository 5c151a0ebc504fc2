package scheduler

import (
	"maps"
	"sync"

	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// MemoryRegistry keeps the last heartbeat of each worker in memory.
type MemoryRegistry struct {
	mu      sync.RWMutex
	workers map[string]*pb.Heartbeat
}

// NewMemoryRegistry returns an empty registry.
func NewMemoryRegistry() *MemoryRegistry {
	return &MemoryRegistry{workers: make(map[string]*pb.Heartbeat)}
}

// UpdateHeartbeat records hb as its worker's latest. Heartbeats without a
// worker id are ignored.
func (r *MemoryRegistry) UpdateHeartbeat(hb *pb.Heartbeat) {
	if hb.GetWorkerId() == "" {
		return
	}
	r.mu.Lock()
	r.workers[hb.WorkerId] = hb
	r.mu.Unlock()
}

// Snapshot returns a copy of the worker map; the heartbeats in it are shared
// and must not be modified.
func (r *MemoryRegistry) Snapshot() map[string]*pb.Heartbeat {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return maps.Clone(r.workers)
}

// Len is the number of workers known.
func (r *MemoryRegistry) Len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.workers)
}
