// Package jobstore keeps job records: the one authority for a job's state.
// A record changes only by compare-and-set on its revision, and only along a
// transition the lifecycle table allows, so two scheduler replicas can never
// both move one job. Memory is the in-process store; kvstore keeps records in
// a NATS JetStream key-value bucket.
package jobstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/cortex-os/core/internal/lifecycle"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// Errors of every store.
var (
	// ErrNotFound: no job with that id.
	ErrNotFound = errors.New("jobstore: job not found")
	// ErrExists: Create of an id that already has a record.
	ErrExists = errors.New("jobstore: job already exists")
	// ErrRevision: the record changed since it was read; re-read and decide again.
	ErrRevision = errors.New("jobstore: record changed since it was read")
	// ErrInvalidID: the id cannot be a key (empty, too long, or characters
	// other than letters, digits and - _ = .; no leading or trailing dot).
	ErrInvalidID = errors.New("jobstore: invalid job id")
	// ErrAliasedPrev: Update was given prev.Job itself as next. Editing the
	// record that was read in place also edits the state the transition is
	// checked from, so the lifecycle check would be meaningless. Clone
	// prev.Job (proto.Clone) and edit the copy.
	ErrAliasedPrev = errors.New("jobstore: next is prev.Job; clone prev.Job before editing it")
)

// MaxIDLength is the longest job id accepted.
const MaxIDLength = 256

// Record is a job and the revision it was read at.
type Record struct {
	Job      *pb.JobInfo
	Revision uint64
}

// Filter selects jobs to list. Zero values select everything.
type Filter struct {
	State      pb.JobState // JOB_STATE_UNSPECIFIED: any
	DeadLetter bool        // only dead-lettered jobs
	// Topic, when set, selects the jobs of this topic (exactly).
	Topic string
	// Tenant, when set, selects the jobs of this tenant (exactly).
	Tenant string
	Limit  int // List: 0 no limit; ListPage ignores it
}

// Match reports whether job passes the filter (Limit aside).
func (f Filter) Match(job *pb.JobInfo) bool {
	if f.State != pb.JobState_JOB_STATE_UNSPECIFIED && job.GetState() != f.State {
		return false
	}
	if f.DeadLetter && !job.GetDeadLetter() {
		return false
	}
	if f.Topic != "" && job.GetRequest().GetTopic() != f.Topic {
		return false
	}
	if f.Tenant != "" && job.GetRequest().GetTenant() != f.Tenant {
		return false
	}
	return true
}

// Store is what a job store does. Implementations: Memory, kvstore.Store.
//
// Records are read-only. A job passed to Create or Update belongs to the
// store from then on, and a Record's Job must not be modified: Memory shares
// them between all callers. To change a job, copy it, edit the copy and
// Update with it.
type Store interface {
	// Create stores a new job. If the id exists it returns the existing
	// record and ErrExists. The job's state must be a legal first state.
	Create(ctx context.Context, job *pb.JobInfo) (Record, error)
	// Get returns the current record, or ErrNotFound.
	Get(ctx context.Context, id string) (Record, error)
	// Update replaces prev with next if the record is still at prev.Revision
	// (else ErrRevision) and prev's state may move to next's (else a
	// *lifecycle.IllegalTransitionError).
	Update(ctx context.Context, prev Record, next *pb.JobInfo) (Record, error)
	// List returns the jobs that match, in no particular order. It reads
	// the whole store: for tests and tools; answer clients with ListPage.
	List(ctx context.Context, f Filter) ([]Record, error)
	// ListPage returns one page of the jobs that match, newest first, with
	// bounded work (see PageQuery). A token it did not hand out is an error
	// wrapping ErrBadPageToken.
	ListPage(ctx context.Context, q PageQuery) (Page, error)
	// Watch calls fn with every current record, then with every change, until
	// ctx ends. fn runs on one goroutine and must not block for long.
	//
	// Records arrive in revision order. A watcher that falls behind may skip
	// a revision that a later one of the same job has already superseded
	// (stores keep only a job's latest record), but it always gets the
	// latest revision of every job that changed. Treat a record as "the job
	// is now like this", not as an event: a job may seem to jump from
	// PENDING to COMPLETED.
	//
	// Watch returns nil once ctx has ended, or an error saying why the watch
	// ended early.
	Watch(ctx context.Context, fn func(Record)) error
	// InProcess reports that nothing outside this process writes to the
	// store: a scheduler that writes all of it needs no Watch.
	InProcess() bool
}

// ValidID reports whether id can name a job in every store.
func ValidID(id string) error {
	if id == "" || len(id) > MaxIDLength || id[0] == '.' || id[len(id)-1] == '.' {
		return ErrInvalidID
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '-' || c == '_' || c == '=':
		case c == '.':
			if id[i-1] == '.' {
				return ErrInvalidID
			}
		default:
			return ErrInvalidID
		}
	}
	return nil
}

// CheckCreate validates a job for Store.Create: a non-nil job with a valid id
// in a legal first state (else a *lifecycle.IllegalTransitionError). Every
// store calls it first, so all stores refuse the same things the same way.
func CheckCreate(job *pb.JobInfo) error {
	if job == nil {
		return fmt.Errorf("%w: nil job", ErrInvalidID)
	}
	if err := ValidID(job.GetJobId()); err != nil {
		return err
	}
	return lifecycle.Check(job.GetJobId(), pb.JobState_JOB_STATE_UNSPECIFIED, job.GetState())
}

// CheckUpdate validates the arguments of Store.Update before any store is
// consulted: prev must have been read from a store (a job and a revision),
// next must be a different message with the same id, and prev's state must
// be allowed to move to next's (else a *lifecycle.IllegalTransitionError).
// Whether prev is still current is the store's compare-and-set to decide.
func CheckUpdate(prev Record, next *pb.JobInfo) error {
	if next == nil {
		return fmt.Errorf("%w: nil next job", ErrInvalidID)
	}
	if prev.Job == nil || prev.Revision == 0 {
		return fmt.Errorf("%w: prev was not read from a store (no job or revision 0)", ErrRevision)
	}
	if next == prev.Job {
		return ErrAliasedPrev
	}
	id := prev.Job.GetJobId()
	if err := ValidID(id); err != nil {
		return err
	}
	if next.GetJobId() != id {
		return fmt.Errorf("%w: next has id %q, prev %q", ErrInvalidID, next.GetJobId(), id)
	}
	return lifecycle.Check(id, prev.Job.GetState(), next.GetState())
}

// DeadLetters holds jobs that exhausted their attempts, until someone re-drives
// or drops them. Implementations: MemoryDeadLetters, kvstore.DeadLetters (a
// JetStream stream).
type DeadLetters interface {
	// Put adds a job; a job already there is replaced and moves to the end
	// of the order (it is the newest dead letter).
	Put(ctx context.Context, job *pb.JobInfo) error
	// List returns up to limit jobs (0: all), oldest first.
	List(ctx context.Context, limit int) ([]*pb.JobInfo, error)
	// Take removes a job and returns it, or ErrNotFound.
	Take(ctx context.Context, id string) (*pb.JobInfo, error)
}
