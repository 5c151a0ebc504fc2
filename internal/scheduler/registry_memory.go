package scheduler

import (
	"github.com/cortex-os/core/internal/placement"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// DefaultHeartbeatInterval is assumed for heartbeats that do not say when the
// next one comes (interval_ms), as the design document's workers do not.
const DefaultHeartbeatInterval = placement.DefaultInterval

// MemoryRegistry is the design document's WorkerRegistry: the last heartbeat
// of each worker, in memory. It is a placement.Registry without pools (one
// registry implementation, not two): a worker that misses its heartbeats
// (three intervals without one) is no longer live, and Snapshot forgets it.
type MemoryRegistry struct {
	*placement.Registry
}

// NewMemoryRegistry returns an empty registry that expires a worker after
// three missed heartbeats.
func NewMemoryRegistry() *MemoryRegistry {
	return &MemoryRegistry{placement.NewRegistry(placement.RegistryOptions{
		DefaultInterval: DefaultHeartbeatInterval, Misses: placement.DefaultMisses,
	})}
}

// Snapshot returns the live workers, forgetting those whose heartbeats
// stopped; the heartbeats in it are shared and must not be modified.
func (r *MemoryRegistry) Snapshot() map[string]*pb.Heartbeat {
	r.Registry.Expire()
	return r.Registry.Snapshot()
}

var (
	_ WorkerRegistry = (*MemoryRegistry)(nil)
	_ WorkerRegistry = (*placement.Registry)(nil)
)
