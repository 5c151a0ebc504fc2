// Package lifecycle is the job state machine: which states exist, which
// transitions are legal, and which states are terminal. It is the one table
// every store and the scheduler consult; docs/state_machine.md draws it.
package lifecycle

import (
	"fmt"

	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// The states, by their wire names.
const (
	Pending    = pb.JobState_JOB_STATE_PENDING
	Dispatched = pb.JobState_JOB_STATE_DISPATCHED
	Running    = pb.JobState_JOB_STATE_RUNNING
	Completed  = pb.JobState_JOB_STATE_COMPLETED
	Failed     = pb.JobState_JOB_STATE_FAILED
	Denied     = pb.JobState_JOB_STATE_DENIED
	Timeout    = pb.JobState_JOB_STATE_TIMEOUT
	Cancelled  = pb.JobState_JOB_STATE_CANCELLED
)

// States lists every state a job can be in, in lifecycle order.
var States = []pb.JobState{Pending, Dispatched, Running, Completed, Failed, Denied, Timeout, Cancelled}

// transitions[from] is the set of states a job in from may move to. A state
// may "move" to itself: an update that changes only details (a pending
// reason, a lease holder) is a self-transition. Terminal states have none.
var transitions = map[pb.JobState][]pb.JobState{
	// Created: a new job is PENDING, or DENIED by admission, or DISPATCHED
	// (attempt 1) when admission hands it to a worker subject at once.
	pb.JobState_JOB_STATE_UNSPECIFIED: {Pending, Dispatched, Denied},
	// Pending: waiting for a worker or for its retry backoff.
	Pending: {Pending, Dispatched, Timeout, Cancelled, Failed},
	// Dispatched: attempt n handed to a worker subject, not yet confirmed.
	// A result may arrive before (or instead of) a confirmation from a
	// worker that does not confirm. Back to Pending: no worker took it, the
	// attempt failed, or its dispatch outcome was lost; with attempts left.
	Dispatched: {Dispatched, Running, Pending, Completed, Failed, Timeout, Cancelled},
	// Running: a worker confirmed attempt n and holds its lease.
	Running: {Running, Pending, Completed, Failed, Timeout, Cancelled},
}

// Terminal reports whether s is an end state: nothing changes a job in it.
func Terminal(s pb.JobState) bool {
	switch s {
	case Completed, Failed, Denied, Timeout, Cancelled:
		return true
	}
	return false
}

// Active reports whether s is a live, non-terminal state.
func Active(s pb.JobState) bool {
	return s == Pending || s == Dispatched || s == Running
}

// CanTransition reports whether a job in from may move to to. from is
// JOB_STATE_UNSPECIFIED for a job being created.
func CanTransition(from, to pb.JobState) bool {
	for _, s := range transitions[from] {
		if s == to {
			return true
		}
	}
	return false
}

// IllegalTransitionError is returned for a transition the table forbids.
type IllegalTransitionError struct {
	JobID    string
	From, To pb.JobState
}

func (e *IllegalTransitionError) Error() string {
	return fmt.Sprintf("job %s: illegal transition %s -> %s", e.JobID, Name(e.From), Name(e.To))
}

// Check returns an *IllegalTransitionError if from -> to is not legal.
func Check(jobID string, from, to pb.JobState) error {
	if CanTransition(from, to) {
		return nil
	}
	return &IllegalTransitionError{JobID: jobID, From: from, To: to}
}

// Name is the short state name users see: PENDING, RUNNING, ...
func Name(s pb.JobState) string {
	if s == pb.JobState_JOB_STATE_UNSPECIFIED {
		return "NEW"
	}
	n := s.String()
	const prefix = "JOB_STATE_"
	if len(n) > len(prefix) && n[:len(prefix)] == prefix {
		return n[len(prefix):]
	}
	return n
}

// Parse turns a short or full state name into a state.
func Parse(name string) (pb.JobState, error) {
	for _, s := range States {
		if name == Name(s) || name == s.String() {
			return s, nil
		}
	}
	return 0, fmt.Errorf("unknown state %q: want one of PENDING, DISPATCHED, RUNNING, COMPLETED, FAILED, DENIED, TIMEOUT, CANCELLED", name)
}
