// Package kvstore keeps job records in a NATS JetStream key-value bucket
// (Store) and dead letters in a JetStream stream (DeadLetters).
//
// A job is the key named by its id; the value is the Protobuf encoding of its
// pb.JobInfo. The revision of a record is the KV revision, the sequence of
// its message in the bucket's stream, so revisions increase with every write
// to the bucket. Create is kv.Create (only if absent) and Update is kv.Update
// (compare-and-set on the revision): the server, not this process, decides
// which of two racing writers wins, which is what lets several scheduler
// replicas share one bucket.
//
// Durability is JetStream's: a write has returned once the server has it;
// see docs/guarantees.md for fsync (SyncAlways).
package kvstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cortex-os/core/internal/jobstore"
	"github.com/cortex-os/core/internal/logging"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// DefaultBucket is the bucket jobs are kept in when Config.Bucket is empty.
const DefaultBucket = "CORTEX_JOBS"

// Config configures a Store. Zero values are the defaults.
type Config struct {
	// Bucket is the KV bucket. Default DefaultBucket.
	Bucket string
	// History is how many revisions of each job the bucket keeps (1..64).
	// Default 1: only the current record. The store never reads older
	// revisions, but a watcher does see them if it reaches them before they
	// are dropped: with History n, a watcher skips a revision only if it lags
	// n or more writes to that job behind (see Store.Watch). A larger History
	// narrows that window; it never closes it.
	History uint8
	// TTL is the bucket's MaxAge: a job not written for this long disappears,
	// whatever its state, active jobs included. Default 0: keep records
	// forever. Set it only once something archives or prunes terminal jobs
	// well within it.
	TTL time.Duration
	// Replicas is the bucket's replication factor in a cluster. Default 1.
	Replicas int
	// Storage is where the bucket lives: jetstream.FileStorage (the default,
	// the zero value) survives a server restart; jetstream.MemoryStorage
	// does not.
	Storage jetstream.StorageType
	// Logger reports records that cannot be decoded. Default slog.Default().
	Logger *slog.Logger
	// SkipOwnWrites makes Watch leave out the records this Store wrote
	// (Create, Update) while the watch ran: their writer already holds
	// them. A scheduler, which watches for what other replicas write, sets
	// it on a Store of its own; a Store that others in the process write
	// through too would hide their writes from its watcher. Default false:
	// Watch reports every change, as jobstore.Store says.
	SkipOwnWrites bool
}

// Store is a jobstore.Store on a JetStream KV bucket. It is safe for
// concurrent use; several Stores, in one process or many, may share a bucket.
type Store struct {
	kv      jetstream.KeyValue
	js      jetstream.JetStream
	stream  jetstream.Stream // the bucket's stream, for paging
	bucket  string
	history uint8
	log     *slog.Logger

	subjectPrefix string // $KV.<bucket>.
	directSubject string // the direct get API subject of the bucket's stream

	nc         *nats.Conn
	putPrefix  string // where put writes a key ("": through the library)
	acks       acks   // put's acknowledgements
	streamName string // KV_<bucket>
	skipOwn    bool
	own        ownWrites
	noGaps     atomic.Bool // the server cannot read the bucket in batches: watch every write
}

var _ jobstore.Store = (*Store)(nil)

// New binds to the bucket, creating it or updating its configuration to cfg,
// so a restarted process reuses its records.
//
// An existing bucket's stream is updated in what cfg sets (History,
// TTL, Replicas) and the description; the rest of its configuration is
// kept as it is (bindBucket): an operator's own limits, and settings the
// server cannot take back once on, such as per-message TTLs, which a later
// version may turn on to expire finished jobs. (The library's
// CreateOrUpdateKeyValue would reset the rest to its defaults, and fail
// on a stream whose per-message TTLs are on: a process of this version
// could not bind the bucket again after a later version had run.)
func New(ctx context.Context, js jetstream.JetStream, cfg Config) (*Store, error) {
	if cfg.Bucket == "" {
		cfg.Bucket = DefaultBucket
	}
	if cfg.History == 0 {
		cfg.History = 1
	}
	if cfg.Replicas == 0 {
		cfg.Replicas = 1
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	kv, err := bindBucket(ctx, js, jetstream.KeyValueConfig{
		Bucket:      cfg.Bucket,
		Description: "CortexOS job records (pb.JobInfo), one key per job id",
		History:     cfg.History,
		TTL:         cfg.TTL,
		Replicas:    cfg.Replicas,
		Storage:     cfg.Storage,
	})
	if err != nil {
		return nil, fmt.Errorf("kvstore: bucket %s: %w", cfg.Bucket, err)
	}
	streamName := "KV_" + cfg.Bucket
	stream, err := js.Stream(ctx, streamName)
	if err != nil {
		return nil, fmt.Errorf("kvstore: bucket %s: stream %s: %w", cfg.Bucket, streamName, err)
	}
	st := &Store{
		kv: kv, js: js, stream: stream, bucket: cfg.Bucket, history: cfg.History, log: cfg.Logger.With(logging.ComponentKey, logging.ComponentJobStore),
		subjectPrefix: "$KV." + cfg.Bucket + ".",
		directSubject: apiPrefix(js.Options()) + "DIRECT.GET." + streamName,
		nc:            js.Conn(),
		streamName:    streamName,
		skipOwn:       cfg.SkipOwnWrites,
		acks:          acks{nc: js.Conn()},
	}
	if o := js.Options(); o.Domain == "" && (o.APIPrefix == "" || o.APIPrefix == jetstream.DefaultAPIPrefix) {
		st.putPrefix = st.subjectPrefix // else the library works out the subject
	}
	return st, nil
}

// bindBucket binds to the bucket kc names: an existing one with its stream
// updated in the description, history, TTL and replicas of kc and nothing
// else, a new one created with kc.
func bindBucket(ctx context.Context, js jetstream.JetStream, kc jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	st, err := js.Stream(ctx, "KV_"+kc.Bucket)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		kv, cerr := js.CreateKeyValue(ctx, kc)
		if !errors.Is(cerr, jetstream.ErrBucketExists) {
			return kv, cerr
		}
		st, err = js.Stream(ctx, "KV_"+kc.Bucket) // another process made it meanwhile
	}
	if err != nil {
		return nil, err
	}
	sc := st.CachedInfo().Config
	if sc.Storage != kc.Storage {
		return nil, fmt.Errorf("the bucket's stream is on %s storage, not %s, and the server cannot change that", sc.Storage, kc.Storage)
	}
	want := sc
	want.Description = kc.Description
	want.MaxMsgsPerSubject = int64(kc.History)
	want.MaxAge = kc.TTL
	want.Replicas = kc.Replicas
	if want.MaxAge > 0 && want.MaxAge < want.Duplicates {
		want.Duplicates = want.MaxAge // as the library sets it: never longer than MaxAge
	}
	if !reflect.DeepEqual(want, sc) {
		if _, err := js.UpdateStream(ctx, want); err != nil {
			return nil, err
		}
	}
	return js.KeyValue(ctx, kc.Bucket)
}

// apiPrefix is the prefix of JetStream API subjects js uses.
func apiPrefix(o jetstream.JetStreamOptions) string {
	switch {
	case o.Domain != "":
		return "$JS." + o.Domain + ".API."
	case o.APIPrefix != "":
		return strings.TrimSuffix(o.APIPrefix, ".") + "."
	default:
		return "$JS.API."
	}
}

// Close ends the subscription on which the Store hears back from its
// writes (made at its first write), failing writes still waiting. Without
// Close it ends with the connection. Writes after Close fail; reads and
// watches go on.
func (s *Store) Close() error { return s.acks.close() }

// Bucket returns the name of the store's bucket.
func (s *Store) Bucket() string { return s.bucket }

// decode turns a value read under key into a job. A value that does not
// decode, or that names another job, is an error naming the key.
func (s *Store) decode(key string, data []byte) (*pb.JobInfo, error) {
	job := new(pb.JobInfo)
	err := job.UnmarshalVT(data)
	if err == nil {
		err = job.CheckDecoded()
	}
	if err != nil {
		return nil, fmt.Errorf("kvstore: bucket %s key %q: undecodable job record: %w", s.bucket, key, err)
	}
	if job.GetJobId() != key {
		return nil, fmt.Errorf("kvstore: bucket %s key %q: record is for job %q", s.bucket, key, job.GetJobId())
	}
	return job, nil
}

// encode and decode use the generated vtprotobuf code, without reflection
// (a record is encoded on every write), and CheckDecoded for what
// protobuf-go checks and vtprotobuf does not: a string field that is not
// UTF-8 is refused, as proto.Marshal refuses it.
func encode(job *pb.JobInfo) ([]byte, error) {
	err := job.CheckDecoded()
	var data []byte
	if err == nil {
		data, err = job.MarshalVT()
	}
	if err != nil {
		return nil, fmt.Errorf("kvstore: encode job %q: %w", job.GetJobId(), err)
	}
	return data, nil
}

// Create implements jobstore.Store. If the id exists, the existing record is
// read and returned with jobstore.ErrExists.
func (s *Store) Create(ctx context.Context, job *pb.JobInfo) (jobstore.Record, error) {
	if err := jobstore.CheckCreate(job); err != nil {
		return jobstore.Record{}, err
	}
	data, err := encode(job)
	if err != nil {
		return jobstore.Record{}, err
	}
	id := job.GetJobId()
	var token uint64
	if s.skipOwn {
		token = s.own.note(id, data)
	}
	rev, handled, err := s.put(ctx, id, data, 0)
	if handled && isRevisionMismatch(err) {
		// The key has a value: the job, read in one round trip; or a
		// delete marker an operator left (not found), which the library's
		// Create writes over.
		existing, gerr := s.Get(ctx, id)
		if gerr == nil {
			if s.skipOwn {
				s.own.failed(id, data, token)
			}
			return existing, jobstore.ErrExists
		}
		handled = false
	}
	if !handled {
		rev, err = s.kv.Create(ctx, id, data)
	}
	if err != nil && s.skipOwn {
		s.own.failed(id, data, token)
	}
	if errors.Is(err, jetstream.ErrKeyExists) {
		existing, gerr := s.Get(ctx, id)
		if gerr != nil {
			return jobstore.Record{}, fmt.Errorf("%w (reading it: %w)", jobstore.ErrExists, gerr)
		}
		return existing, jobstore.ErrExists
	}
	if err != nil {
		return jobstore.Record{}, fmt.Errorf("kvstore: create %q: %w", id, err)
	}
	if s.skipOwn {
		s.own.stored(id, data, rev, token)
	}
	// The job is the store's from now on (jobstore.Store): no copy.
	return jobstore.Record{Job: job, Revision: rev}, nil
}

// Get implements jobstore.Store. An id no store could hold is
// jobstore.ErrInvalidID.
func (s *Store) Get(ctx context.Context, id string) (jobstore.Record, error) {
	if err := jobstore.ValidID(id); err != nil {
		return jobstore.Record{}, err
	}
	e, err := s.kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return jobstore.Record{}, jobstore.ErrNotFound
	}
	if err != nil {
		return jobstore.Record{}, fmt.Errorf("kvstore: get %q: %w", id, err)
	}
	job, err := s.decode(id, e.Value())
	if err != nil {
		return jobstore.Record{}, err
	}
	return jobstore.Record{Job: job, Revision: e.Revision()}, nil
}

// Update implements jobstore.Store: jobstore.CheckUpdate (which includes the
// lifecycle check, from prev.Job's state), then kv.Update at prev.Revision.
// A lost compare-and-set is jobstore.ErrRevision, or jobstore.ErrNotFound if
// the job is gone (that takes one more read, on the losing path only).
//
// The transition is checked from prev.Job as the caller holds it: this
// store cannot see the stored state without another read. prev.Job must be
// the record as read; CheckUpdate refuses the common mistake of editing it in
// place and passing it as next (jobstore.ErrAliasedPrev).
func (s *Store) Update(ctx context.Context, prev jobstore.Record, next *pb.JobInfo) (jobstore.Record, error) {
	if err := jobstore.CheckUpdate(prev, next); err != nil {
		return jobstore.Record{}, err
	}
	data, err := encode(next)
	if err != nil {
		return jobstore.Record{}, err
	}
	id := next.GetJobId()
	var token uint64
	if s.skipOwn {
		token = s.own.note(id, data)
	}
	rev, handled, err := s.put(ctx, id, data, prev.Revision)
	if !handled {
		rev, err = s.kv.Update(ctx, id, data, prev.Revision)
	}
	if err != nil && s.skipOwn {
		s.own.failed(id, data, token)
	}
	if isRevisionMismatch(err) {
		if _, gerr := s.kv.Get(ctx, id); errors.Is(gerr, jetstream.ErrKeyNotFound) {
			return jobstore.Record{}, jobstore.ErrNotFound
		}
		return jobstore.Record{}, jobstore.ErrRevision
	}
	if err != nil {
		return jobstore.Record{}, fmt.Errorf("kvstore: update %q: %w", id, err)
	}
	if s.skipOwn {
		s.own.stored(id, data, rev, token)
	}
	return jobstore.Record{Job: next, Revision: rev}, nil // the store's now: no copy
}

// isRevisionMismatch reports a lost compare-and-set. nats.go v1.55 wraps it
// as jetstream.ErrKeyRevisionMismatch; the API error codes are checked too
// (10071 "wrong last sequence", 10164 its replicated-stream variant) so that
// a client version that does not wrap it still maps correctly.
func isRevisionMismatch(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return true
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant
	}
	return false
}

// List implements jobstore.Store. It reads the whole bucket, the latest value
// of every key, in one pass of an ordered consumer (not a Get per key), and
// filters here: O(number of jobs) in time and transfer per call, whatever the
// filter or limit. For tests and tools: clients are answered with ListPage,
// whose work per call is bounded. Records come in revision order, as the stream
// delivers them. A record that cannot be decoded is logged and skipped, so
// one bad value does not hide every other job. A negative Limit is no limit.
func (s *Store) List(ctx context.Context, f jobstore.Filter) ([]jobstore.Record, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := s.kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("kvstore: list: %w", err)
	}
	defer stopWatcher(w)
	var out []jobstore.Record
	at := make(map[string]int) // key -> index in out, against redelivery
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return nil, errors.New("kvstore: list: watcher closed (connection closed?)")
			}
			if e == nil { // all current values delivered
				return out, nil
			}
			if e.Operation() != jetstream.KeyValuePut {
				continue
			}
			job, err := s.decode(e.Key(), e.Value())
			if err != nil {
				s.log.Error("list: skipping undecodable record", "err", err)
				continue
			}
			if !f.Match(job) {
				continue
			}
			rec := jobstore.Record{Job: job, Revision: e.Revision()}
			if i, dup := at[e.Key()]; dup {
				out[i] = rec
				continue
			}
			at[e.Key()] = len(out)
			out = append(out, rec)
			if f.Limit > 0 && len(out) >= f.Limit {
				return out, nil
			}
		}
	}
}

// InProcess implements jobstore.Store: the bucket is shared with other
// processes, whose writes Watch reports.
func (s *Store) InProcess() bool { return false }

// Watch implements jobstore.Store with kv.WatchAll: the latest value of every
// key, then every change, in stream (revision) order. Deletes and purges
// (nothing in this package makes them; an operator might) are skipped, as
// are values that do not decode (logged). fn runs on the caller's goroutine.
// Watch returns nil once ctx has ended, or an error if the watch could not
// start or its subscription closed (the connection was closed).
//
// A watcher reads the bucket's stream, which keeps History revisions per
// job: a revision superseded (and so removed) before a lagging watcher got to
// it is never delivered, and the watcher goes on with the next one still
// there. It always reaches the latest revision of every job. This is the
// coalescing the jobstore.Store contract allows; Memory does the same.
//
// Buffering is nats.go's: the subscription queues messages for the watcher,
// and the server's flow control for the ordered consumer stops sending to a
// watcher that falls behind; a watcher that is cut off as a slow consumer is
// reset by the library from its last revision. Writers never wait for
// watchers.
func (s *Store) Watch(ctx context.Context, fn func(jobstore.Record)) error {
	if ctx.Err() != nil {
		return nil
	}
	if s.skipOwn && !s.noGaps.Load() && s.own.followGaps() {
		defer s.own.stopGaps()
		return s.watchGaps(ctx, fn)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := s.watchAll(ctx)
	if w == nil {
		return err
	}
	defer stopWatcher(w)
	if s.skipOwn {
		s.own.start()
		defer s.own.stop()
	}
	return readUpdates(ctx, w, func(e jetstream.KeyValueEntry) bool {
		if e == nil || e.Operation() != jetstream.KeyValuePut {
			return true // end-of-initial-values marker, or a delete/purge
		}
		if s.skipOwn && s.own.take(e.Key(), e.Value()) {
			return true // this Store wrote it: its writer has it
		}
		job, err := s.decode(e.Key(), e.Value())
		if err != nil {
			s.log.Error("watch: skipping undecodable record", "err", err)
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		fn(jobstore.Record{Job: job, Revision: e.Revision()})
		return true
	})
}

// watchAll starts a watch of every key, deletes left out: nil and no error
// when ctx ended first.
func (s *Store) watchAll(ctx context.Context) (jetstream.KeyWatcher, error) {
	w, err := s.kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		if ctx.Err() != nil {
			return nil, nil
		}
		return nil, fmt.Errorf("kvstore: watch: %w", err)
	}
	return w, nil
}

// readUpdates hands each of w's updates to next (nil: the end of the
// initial values) until next returns false or ctx ends (nil), or the
// watcher's channel closes (an error, unless ctx ended).
func readUpdates(ctx context.Context, w jetstream.KeyWatcher, next func(jetstream.KeyValueEntry) bool) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return errors.New("kvstore: watch: watcher closed (connection closed?)")
			}
			if !next(e) {
				return nil
			}
		}
	}
}

// drainTimeout bounds stopWatcher's wait for the watcher's channel to close.
const drainTimeout = 5 * time.Second

// stopWatcher stops w and drains its channel until nats.go closes it. The
// draining matters: nats.go delivers into the channel (capacity 256) from the
// subscription's callback while holding the watcher's lock, and closes the
// channel only after the callback returns, so a full channel nobody reads
// would block that goroutine forever and leak it.
func stopWatcher(w jetstream.KeyWatcher) {
	_ = w.Stop() // also stopped by the watch's ctx; a second Stop just errs
	timer := time.NewTimer(drainTimeout)
	defer timer.Stop()
	for {
		select {
		case _, ok := <-w.Updates():
			if !ok {
				return
			}
		case <-timer.C:
			return
		}
	}
}
