package bench

import (
	"fmt"
	"log/slog"

	"github.com/cortex-os/core/internal/infrastructure/bus"
	"github.com/cortex-os/core/internal/placement"
	"github.com/cortex-os/core/internal/safety"
	"github.com/cortex-os/core/internal/scheduler"
)

// What the system path runs by default is what cortex-scheduler runs with
// no placement section and no policy file: placement by the workers'
// reports (least-loaded, an implicit pool per topic) and the shipped
// policy, decided by the safety kernel, every decision audited on the bus.

// Strategies the --strategy flag names.
const (
	StrategyLeastLoaded = placement.StrategyLeastLoaded
	StrategyNaive       = placement.StrategyNaive
)

// systemPlacement returns the registry and pools of the system's scheduler
// for strategy (Options.Strategy).
func systemPlacement(strategy string) (*placement.Registry, *placement.Pools, error) {
	pools, err := placement.NewPools(placement.Config{DefaultStrategy: strategy})
	if err != nil {
		return nil, nil, fmt.Errorf("bench: placement: %w", err)
	}
	return placement.NewRegistry(placement.RegistryOptions{Pools: pools}), pools, nil
}

// systemSafety returns the system's safety checker: the kernel with the
// shipped policy (or Options.Policy's file) and the bus auditor, as
// cortex-scheduler builds it; or the stub with Options.SafetyStub. The
// function returned stops the auditor.
func systemSafety(o Options, b *bus.NatsBus, id string, log *slog.Logger) (scheduler.SafetyChecker, func(), error) {
	if o.SafetyStub {
		return scheduler.NewSafetyStub(), func() {}, nil
	}
	auditor, err := safety.NewBusAuditor(safety.AuditorConfig{Bus: b, SenderID: id, Logger: log})
	if err != nil {
		return nil, nil, err
	}
	kernel, err := safety.New(safety.Config{PolicyFile: o.Policy, Logger: log, Auditor: auditor, InstanceID: id})
	if err != nil {
		return nil, nil, fmt.Errorf("bench: safety: %w", err)
	}
	auditor.Start()
	return kernel, auditor.Stop, nil
}

// policyDesc says which policy the system ran.
func policyDesc(o Options) string {
	switch {
	case o.SafetyStub:
		return "stub (allow all, no kernel)"
	case o.Policy != "":
		return "kernel, " + o.Policy
	}
	return "kernel, shipped default policy"
}

// workerCapacity is the capacity each system worker reports: twice the
// window spread over the workers (at least the runtime's default, 64). The
// load generator sends the next job when it sees a result, which can be
// before the scheduler has taken that result and freed its slot: with
// capacity equal to the window, some jobs would wait for a slot that is
// already free. The bench measures the placement decision, not a queue.
func workerCapacity(o Options) int {
	w := o.Window
	if w == 0 {
		w = DefaultWindow
	}
	return max(64, (2*w+o.Workers-1)/o.Workers)
}
