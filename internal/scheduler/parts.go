package scheduler

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// part is a piece of the engine that starts and stops on its own: a bus
// subscription whose handler is one of the engine's parts (admission's
// intake, the dispatcher's replies, results, heartbeats, queries, cancels),
// or a loop (the timers', the job cache's store watch, the placer's
// drainer). Engine.Start starts its parts in order;
// Engine.Stop stops the loops first, then the subscriptions in reverse.
type part interface {
	// Name says what the part does, for errors.
	Name() string
	// Start begins its work. ctx bounds starting only: the part runs until
	// Stop.
	Start(ctx context.Context) error
	// Stop ends its work and waits for the handlers or goroutine it runs.
	// Stop of a part that is not running does nothing.
	Stop() error
}

// subscriptionPart is a bus subscription: Start subscribes, Stop drains it
// (delivery stops, the handlers in progress end).
type subscriptionPart struct {
	name      string
	subscribe func() (drain func() error, err error)

	mu    sync.Mutex
	drain func() error
}

func newSubscription(name string, subscribe func() (func() error, error)) *subscriptionPart {
	return &subscriptionPart{name: name, subscribe: subscribe}
}

func (s *subscriptionPart) Name() string { return s.name }

func (s *subscriptionPart) Start(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.drain != nil {
		return nil
	}
	drain, err := s.subscribe()
	if err != nil {
		return fmt.Errorf("%s: %w", s.name, err)
	}
	s.drain = drain
	return nil
}

func (s *subscriptionPart) Stop() error {
	s.mu.Lock()
	drain := s.drain
	s.drain = nil
	s.mu.Unlock()
	if drain == nil {
		return nil
	}
	if err := drain(); err != nil {
		return fmt.Errorf("%s: %w", s.name, err)
	}
	return nil
}

// loopPart runs a function on its own goroutine until Stop cancels its
// context; Stop waits for it to return.
type loopPart struct {
	name string
	run  func(ctx context.Context)

	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan struct{}
}

func newLoop(name string, run func(ctx context.Context)) *loopPart {
	return &loopPart{name: name, run: run}
}

func (l *loopPart) Name() string { return l.name }

// Start runs the loop under a context that ctx's end does not cancel: it
// runs until Stop.
func (l *loopPart) Start(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.done != nil {
		return nil
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	l.cancel, l.done = cancel, done
	go func() {
		defer close(done)
		l.run(runCtx)
	}()
	return nil
}

func (l *loopPart) Stop() error {
	l.mu.Lock()
	cancel, done := l.cancel, l.done
	l.cancel, l.done = nil, nil
	l.mu.Unlock()
	if done == nil {
		return nil
	}
	cancel()
	<-done
	return nil
}

// parts is the engine's assembly: loops and subscriptions, in start order.
type parts struct {
	loops []part
	subs  []part
}

// start starts every part in order; on an error it stops the ones it
// started.
func (ps *parts) start(ctx context.Context) error {
	started := &parts{}
	for _, p := range ps.loops {
		if err := p.Start(ctx); err != nil {
			return errors.Join(err, started.stop())
		}
		started.loops = append(started.loops, p)
	}
	for _, p := range ps.subs {
		if err := p.Start(ctx); err != nil {
			return errors.Join(err, started.stop())
		}
		started.subs = append(started.subs, p)
	}
	return nil
}

// stop stops the loops first (a timer's dispatch sent once the replies are
// drained would leave its job DISPATCHED with nobody to hear the answer),
// then the subscriptions in reverse: the intake, subscribed last, first.
func (ps *parts) stop() error {
	var errs []error
	for i := len(ps.loops) - 1; i >= 0; i-- {
		errs = append(errs, ps.loops[i].Stop())
	}
	for i := len(ps.subs) - 1; i >= 0; i-- {
		errs = append(errs, ps.subs[i].Stop())
	}
	return errors.Join(errs...)
}

// runState starts and stops the engine's parts, one Start or Stop at a
// time. Its lock is not the job cache's: stopping drains handlers that take
// that one. It calls no other part; the engine passes what it does on
// either side.
type runState struct {
	mu      sync.Mutex // held from a Stop until its parts have drained
	parts   parts      // what start starts and stop stops
	running bool
}

// start starts the parts unless they run; starting is called first and
// started after, both with the lock held.
func (r *runState) start(ctx context.Context, starting func(), started func(ctx context.Context)) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.running {
		return errors.New("scheduler: already started")
	}
	starting()
	if err := r.parts.start(ctx); err != nil {
		return fmt.Errorf("scheduler: %w", err)
	}
	r.running = true
	started(ctx)
	return nil
}

// stop stops the parts if they run, then calls stopped. If ctx ends first,
// it returns an error wrapping ErrStopTimeout and ctx.Err(); the draining
// goes on to its end in the background, holding the lock, so that a start
// meanwhile waits for it.
func (r *runState) stop(ctx context.Context, stopped func()) error {
	r.mu.Lock()
	if !r.running {
		r.mu.Unlock()
		return nil
	}
	r.running = false
	done := make(chan error, 1)
	go func() {
		defer r.mu.Unlock() // held until drained: a Start or Stop meanwhile waits
		err := r.parts.stop()
		stopped()
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", ErrStopTimeout, ctx.Err())
	}
}
