package jobstore

import (
	"container/list"
	"context"
	"fmt"
	"google.golang.org/protobuf/proto"
	"sync"

	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// MemoryDeadLetters is an in-process DeadLetters, oldest first. Put of a job
// that is already there replaces it and moves it to the end, as the newest
// dead letter: that is what the JetStream stream of kvstore.DeadLetters does
// (one message per subject; a new one supersedes the old at the stream's
// tail), so both keep the same order. Jobs are copied in and out.
//
// The zero MemoryDeadLetters is ready to use.
type MemoryDeadLetters struct {
	mu    sync.Mutex
	order list.List                // of *pb.JobInfo, oldest first
	byID  map[string]*list.Element // job id -> element of order
}

var _ DeadLetters = (*MemoryDeadLetters)(nil)

// NewMemoryDeadLetters returns an empty in-memory dead-letter queue.
func NewMemoryDeadLetters() *MemoryDeadLetters {
	return &MemoryDeadLetters{}
}

// Put implements DeadLetters.
func (d *MemoryDeadLetters) Put(ctx context.Context, job *pb.JobInfo) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if job == nil {
		return fmt.Errorf("%w: nil job", ErrInvalidID)
	}
	if err := ValidID(job.GetJobId()); err != nil {
		return err
	}
	stored, err := encodable(job)
	if err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.byID == nil {
		d.byID = make(map[string]*list.Element)
	}
	if el, ok := d.byID[stored.GetJobId()]; ok {
		d.order.Remove(el)
	}
	d.byID[stored.GetJobId()] = d.order.PushBack(stored)
	return nil
}

// List implements DeadLetters. A negative limit is no limit.
func (d *MemoryDeadLetters) List(ctx context.Context, limit int) ([]*pb.JobInfo, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	n := d.order.Len()
	if limit > 0 && limit < n {
		n = limit
	}
	out := make([]*pb.JobInfo, 0, n)
	for el := d.order.Front(); el != nil && len(out) < n; el = el.Next() {
		out = append(out, clone(el.Value.(*pb.JobInfo)))
	}
	return out, nil
}

// Take implements DeadLetters. An id no store could hold is ErrInvalidID.
func (d *MemoryDeadLetters) Take(ctx context.Context, id string) (*pb.JobInfo, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := ValidID(id); err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	el, ok := d.byID[id]
	if !ok {
		return nil, ErrNotFound
	}
	delete(d.byID, id)
	d.order.Remove(el)
	// The stored copy is no longer shared with anything: hand it over.
	return el.Value.(*pb.JobInfo), nil
}

// Dead letters are rare: MemoryDeadLetters copies what it holds, unlike Memory.
func clone(j *pb.JobInfo) *pb.JobInfo {
	return proto.Clone(j).(*pb.JobInfo)
}

// encodable returns a copy of job made through its Protobuf encoding, or the
// encoding error (invalid UTF-8 in a string field, say), so that the memory
// queue refuses what the stream could not hold.
func encodable(job *pb.JobInfo) (*pb.JobInfo, error) {
	data, err := proto.Marshal(job)
	if err != nil {
		return nil, fmt.Errorf("jobstore: encode job %q: %w", job.GetJobId(), err)
	}
	out := new(pb.JobInfo)
	if err := proto.Unmarshal(data, out); err != nil {
		return nil, fmt.Errorf("jobstore: decode job %q: %w", job.GetJobId(), err)
	}
	return out, nil
}
