package client

import (
	"strings"

	"github.com/cortex-os/core/internal/lifecycle"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// IsTerminal reports whether a job in state s has ended: COMPLETED, FAILED,
// DENIED, TIMEOUT or CANCELLED. Nothing changes a job in a terminal state
// (docs/state_machine.md).
func IsTerminal(s pb.JobState) bool { return lifecycle.Terminal(s) }

// IsActive reports whether a job in state s is live: PENDING, DISPATCHED or
// RUNNING.
func IsActive(s pb.JobState) bool { return lifecycle.Active(s) }

// StateName is the short name of a state, as the cortex command prints it:
// PENDING, RUNNING, COMPLETED, ...
func StateName(s pb.JobState) string { return lifecycle.Name(s) }

// ParseState reads a state's short or full name in any case: "running",
// "COMPLETED", "JOB_STATE_FAILED".
func ParseState(name string) (pb.JobState, error) { return lifecycle.Parse(strings.ToUpper(name)) }
