package scheduler

import (
	"github.com/cortex-os/core/internal/placement"
)

// DefaultHeartbeatInterval is assumed for heartbeats that do not say when the
// next one comes (interval_ms), as the design document's workers do not.
const DefaultHeartbeatInterval = placement.DefaultInterval

// MemoryRegistry is the design document's WorkerRegistry: the last heartbeat
// of each worker, in memory. It is a placement.Registry (one registry
// implementation, not two) made ListOnly by NewMemoryRegistry: a worker that
// misses its heartbeats (three intervals without one) is no longer live, and
// Snapshot forgets it; the engine places no jobs on it (PlacementRegistry is
// nil), so the design document's naive dispatch stays what it was.
type MemoryRegistry = placement.Registry

// NewMemoryRegistry returns an empty registry that expires a worker after
// three missed heartbeats.
func NewMemoryRegistry() *MemoryRegistry {
	return placement.NewRegistry(placement.RegistryOptions{
		DefaultInterval: DefaultHeartbeatInterval, Misses: placement.DefaultMisses, ListOnly: true,
	})
}

var _ WorkerRegistry = (*MemoryRegistry)(nil)
