package system

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cortex-os/core/internal/infrastructure/bus"
	"github.com/cortex-os/core/internal/leader"
	"github.com/cortex-os/core/internal/logging"
	"github.com/cortex-os/core/internal/metrics"
	"github.com/cortex-os/core/internal/scheduler"
)

// errLeadershipLost ends an engine whose lease lapsed.
var errLeadershipLost = errors.New("scheduler: leader lease lost")

// errEngineStart wraps why an engine did not start (its intake consumers
// not created in time while the cluster elects stream leaders, say).
var errEngineStart = errors.New("scheduler: engine did not start")

// runElected runs the scheduler as one candidate of an election: it stands
// by until it holds the lease in CORTEX_LEADER, then runs an engine whose
// job store and dead letters are fenced by the term, adopting the jobs the
// store holds (as a scheduler started after a crash does). When the lease
// is lost the engine stops and the candidate stands by again; when ctx ends
// it stops the engine and resigns, so that a standby takes over at once.
func runElected(ctx context.Context, b *bus.NatsBus, store scheduler.JobStore, dead scheduler.DeadLetters, mode, id string, replicas int, opts SchedulerOptions) error {
	js, err := b.JetStream()
	if err != nil {
		return fmt.Errorf("leader election needs JetStream: %w", err)
	}
	var el *leader.Elector
	err = retryCreate(ctx, func(ctx context.Context) (err error) {
		el, err = leader.New(ctx, leader.Config{JS: js, ID: id, Lease: opts.Settings.LeaderLease, Replicas: replicas, Logger: opts.Logger})
		return err
	})
	if err != nil {
		return err
	}
	warm, err := startWarmHeartbeats(b.Conn(), opts.Settings.RequireWorkerIdentity)
	if err != nil {
		return err
	}
	defer warm.stop()
	var obs *metrics.Scheduler
	if opts.Metrics != nil {
		obs = metrics.NewScheduler(opts.Metrics) // registered once, attached to each term's engine
	}
	var once sync.Once
	started := opts.Started
	opts.Started = func() {
		if started != nil {
			once.Do(started)
		}
	}
	for {
		opts.Logger.Info("standing by for the leader lease", logging.ComponentKey, logging.ComponentScheduler, "id", id)
		term, err := el.Campaign(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		opts.Logger.Info("active scheduler", logging.ComponentKey, logging.ComponentScheduler, "id", id, "fencing_token", term.Token)
		fs := leader.FencedStore{Store: store, Fence: term, Token: term.Token}
		fd := leader.FencedDeadLetters{DeadLetters: dead, Fence: term, Token: term.Token}
		termDone := make(chan struct{})
		go func() {
			// Shutting down: the lease runs out within a lease however
			// long the engine takes to drain (Resign gives it up sooner
			// once it has).
			select {
			case <-ctx.Done():
				term.StopRenewing()
			case <-termDone:
			}
		}()
		err = runEngine(ctx, b, fs, fd, mode, id, opts, term.Lost(), warm.replay, obs)
		close(termDone)
		term.Resign(context.WithoutCancel(ctx))
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, errEngineStart) {
			// Give the lease up and stand by again, rather than exit: the
			// cluster may be electing stream leaders, and another
			// candidate (or this one, a little later) will start.
			opts.Logger.Warn("engine did not start; gave the lease up", logging.ComponentKey, logging.ComponentScheduler, "id", id, "err", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(time.Second):
			}
			continue
		}
		if !errors.Is(err, errLeadershipLost) {
			return err
		}
	}
}
