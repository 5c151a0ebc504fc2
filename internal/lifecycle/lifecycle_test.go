package lifecycle_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/cortex-os/core/internal/lifecycle"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// The table of docs/state_machine.md, written out again here on purpose:
// the test must not read the table it checks. A row is a "from" state (NEW is
// JOB_STATE_UNSPECIFIED, a job being created); its columns are the states it
// may move to. Rows absent (the terminal states) allow nothing.
//
//	| from \ to  | PENDING | DISPATCHED | RUNNING | COMPLETED | FAILED | DENIED | TIMEOUT | CANCELLED |
//	| (new)      | ✓       | ✓          |         |           |        | ✓      |         |           |
//	| PENDING    | ✓*      | ✓          |         |           | ✓      |        | ✓       | ✓         |
//	| DISPATCHED | ✓       | ✓*         | ✓       | ✓         | ✓      |        | ✓       | ✓         |
//	| RUNNING    | ✓       |            | ✓*      | ✓         | ✓      |        | ✓       | ✓         |
//	| terminal   |         |            |         |           |        |        |         |           |
var docTable = map[string]string{
	"NEW":        "PENDING DISPATCHED DENIED",
	"PENDING":    "PENDING DISPATCHED FAILED TIMEOUT CANCELLED",
	"DISPATCHED": "PENDING DISPATCHED RUNNING COMPLETED FAILED TIMEOUT CANCELLED",
	"RUNNING":    "PENDING RUNNING COMPLETED FAILED TIMEOUT CANCELLED",
	"COMPLETED":  "",
	"FAILED":     "",
	"DENIED":     "",
	"TIMEOUT":    "",
	"CANCELLED":  "",
}

// byName maps the table's names to the wire enum, independently of
// lifecycle.Name and lifecycle.Parse.
var byName = map[string]pb.JobState{
	"NEW":        pb.JobState_JOB_STATE_UNSPECIFIED,
	"PENDING":    pb.JobState_JOB_STATE_PENDING,
	"DISPATCHED": pb.JobState_JOB_STATE_DISPATCHED,
	"RUNNING":    pb.JobState_JOB_STATE_RUNNING,
	"COMPLETED":  pb.JobState_JOB_STATE_COMPLETED,
	"FAILED":     pb.JobState_JOB_STATE_FAILED,
	"DENIED":     pb.JobState_JOB_STATE_DENIED,
	"TIMEOUT":    pb.JobState_JOB_STATE_TIMEOUT,
	"CANCELLED":  pb.JobState_JOB_STATE_CANCELLED,
}

var terminalNames = []string{"COMPLETED", "FAILED", "DENIED", "TIMEOUT", "CANCELLED"}

func allowed(from, to string) bool {
	for _, s := range strings.Fields(docTable[from]) {
		if s == to {
			return true
		}
	}
	return false
}

// Every (from, to) pair over UNSPECIFIED and the eight states: 81 cells.
func TestCanTransitionMatchesTheDocumentedTable(t *testing.T) {
	t.Parallel()
	if len(byName) != 9 || len(docTable) != 9 {
		t.Fatal("the test's own table is incomplete")
	}
	// Every enum value the wire knows is in the table: a state added to the
	// .proto without a row here fails.
	for v := range pb.JobState_name {
		found := false
		for _, s := range byName {
			if int32(s) == v {
				found = true
			}
		}
		if !found {
			t.Errorf("JobState %d (%s) is not in the test's table", v, pb.JobState(v))
		}
	}
	cells := 0
	for fromName, from := range byName {
		for toName, to := range byName {
			cells++
			want := allowed(fromName, toName)
			if got := lifecycle.CanTransition(from, to); got != want {
				t.Errorf("CanTransition(%s, %s) = %v, want %v", fromName, toName, got, want)
			}
			err := lifecycle.Check("j", from, to)
			if (err == nil) != want {
				t.Errorf("Check(%s, %s) = %v, want allowed=%v", fromName, toName, err, want)
			}
		}
	}
	if cells != 81 {
		t.Fatalf("checked %d cells, want 81", cells)
	}
}

func TestNothingMovesToNew(t *testing.T) {
	t.Parallel()
	for name, s := range byName {
		if lifecycle.CanTransition(s, pb.JobState_JOB_STATE_UNSPECIFIED) {
			t.Errorf("%s may move to UNSPECIFIED", name)
		}
	}
}

func TestTerminalStatesHaveNoExits(t *testing.T) {
	t.Parallel()
	for _, name := range terminalNames {
		from := byName[name]
		if !lifecycle.Terminal(from) {
			t.Errorf("Terminal(%s) = false", name)
		}
		if lifecycle.Active(from) {
			t.Errorf("Active(%s) = true", name)
		}
		for toName, to := range byName {
			if lifecycle.CanTransition(from, to) {
				t.Errorf("terminal %s may move to %s", name, toName)
			}
		}
		// Not even to itself: a terminal record is never rewritten.
		if lifecycle.CanTransition(from, from) {
			t.Errorf("terminal %s may be rewritten", name)
		}
	}
}

func TestTerminalAndActive(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name             string
		terminal, active bool
	}{
		{"NEW", false, false},
		{"PENDING", false, true},
		{"DISPATCHED", false, true},
		{"RUNNING", false, true},
		{"COMPLETED", true, false},
		{"FAILED", true, false},
		{"DENIED", true, false},
		{"TIMEOUT", true, false},
		{"CANCELLED", true, false},
	} {
		s := byName[tc.name]
		if got := lifecycle.Terminal(s); got != tc.terminal {
			t.Errorf("Terminal(%s) = %v, want %v", tc.name, got, tc.terminal)
		}
		if got := lifecycle.Active(s); got != tc.active {
			t.Errorf("Active(%s) = %v, want %v", tc.name, got, tc.active)
		}
	}
	// A value from a newer protocol is neither, and goes nowhere.
	future := pb.JobState(99)
	if lifecycle.Terminal(future) || lifecycle.Active(future) {
		t.Error("an unknown state is terminal or active")
	}
	for name, s := range byName {
		if lifecycle.CanTransition(future, s) || lifecycle.CanTransition(s, future) {
			t.Errorf("a transition between %s and the unknown state 99 is allowed", name)
		}
	}
}

func TestStatesListsTheEightStatesInOrder(t *testing.T) {
	t.Parallel()
	want := []string{"PENDING", "DISPATCHED", "RUNNING", "COMPLETED", "FAILED", "DENIED", "TIMEOUT", "CANCELLED"}
	if len(lifecycle.States) != len(want) {
		t.Fatalf("States = %v, want %v", lifecycle.States, want)
	}
	for i, name := range want {
		if lifecycle.States[i] != byName[name] {
			t.Errorf("States[%d] = %v, want %s", i, lifecycle.States[i], name)
		}
	}
}

func TestNameAndParse(t *testing.T) {
	t.Parallel()
	for name, s := range byName {
		if got := lifecycle.Name(s); got != name {
			t.Errorf("Name(%v) = %q, want %q", s, got, name)
		}
		if s == pb.JobState_JOB_STATE_UNSPECIFIED {
			continue
		}
		for _, in := range []string{name, "JOB_STATE_" + name} {
			got, err := lifecycle.Parse(in)
			if err != nil || got != s {
				t.Errorf("Parse(%q) = %v, %v; want %v", in, got, err, s)
			}
		}
	}
	if got := lifecycle.Name(pb.JobState(99)); got != "99" {
		t.Errorf("Name(99) = %q", got)
	}
	// NEW is what a job is before it exists: not a state to ask for. Nor is
	// anything else that is not one of the eight names.
	for _, in := range []string{"", "NEW", "UNSPECIFIED", "JOB_STATE_UNSPECIFIED", "DONE", "JOB_STATE_", "PENDINGX", " PENDING", "99"} {
		got, err := lifecycle.Parse(in)
		if err == nil {
			t.Errorf("Parse(%q) = %v, want an error", in, got)
			continue
		}
		if !strings.Contains(err.Error(), fmt.Sprintf("%q", in)) || !strings.Contains(err.Error(), "CANCELLED") {
			t.Errorf("Parse(%q) error %q: want the input and the valid names", in, err)
		}
	}
}

func TestIllegalTransitionError(t *testing.T) {
	t.Parallel()
	err := lifecycle.Check("job-7", lifecycle.Completed, lifecycle.Pending)
	if err == nil {
		t.Fatal("COMPLETED -> PENDING allowed")
	}
	if got, want := err.Error(), "job job-7: illegal transition COMPLETED -> PENDING"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	wrapped := fmt.Errorf("store: %w", err)
	var ite *lifecycle.IllegalTransitionError
	if !errors.As(wrapped, &ite) {
		t.Fatalf("errors.As(%v) failed", wrapped)
	}
	if ite.JobID != "job-7" || ite.From != lifecycle.Completed || ite.To != lifecycle.Pending {
		t.Errorf("error = %+v", ite)
	}

	// Creation into a state other than PENDING or DENIED names NEW.
	err = lifecycle.Check("j", pb.JobState_JOB_STATE_UNSPECIFIED, lifecycle.Running)
	if !errors.As(err, &ite) || err.Error() != "job j: illegal transition NEW -> RUNNING" {
		t.Errorf("Check(NEW, RUNNING) = %v", err)
	}
	if err := lifecycle.Check("j", lifecycle.Pending, lifecycle.Dispatched); err != nil {
		t.Errorf("Check(PENDING, DISPATCHED) = %v", err)
	}
}
