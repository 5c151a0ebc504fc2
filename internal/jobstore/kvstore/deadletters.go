package kvstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/cortex-os/core/internal/jobstore"
	"github.com/cortex-os/core/internal/logging"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// Dead-letter defaults.
const (
	DefaultDLStream        = "CORTEX_DLQ"
	DefaultDLSubjectPrefix = "sys.job.dlq"
)

// DLConfig configures DeadLetters. Zero values are the defaults.
type DLConfig struct {
	// Stream is the JetStream stream. Default DefaultDLStream.
	Stream string
	// SubjectPrefix: a job is kept on subject <SubjectPrefix>.<job id>, and
	// the stream captures <SubjectPrefix>.>. Default DefaultDLSubjectPrefix.
	SubjectPrefix string
	// Storage: jetstream.FileStorage (the default, the zero value) survives
	// a server restart; jetstream.MemoryStorage does not.
	Storage jetstream.StorageType
	// Replicas is the stream's replication factor in a cluster. Default 1.
	Replicas int
	// MaxAge drops dead letters older than this. Default 0: keep them until
	// they are taken.
	MaxAge time.Duration
	// Logger reports messages that cannot be decoded. Default slog.Default().
	Logger *slog.Logger
}

// DeadLetters is a jobstore.DeadLetters on a JetStream stream: limits
// retention, at most one message per subject, one subject per job. Put
// publishes the job (its Protobuf encoding) and returns once the stream has
// stored it; a second Put of the same job supersedes the first, which the
// stream removes, so the job moves to the end. Take deletes the job's
// message. Stream order is the order of the last Put of each job.
type DeadLetters struct {
	js     jetstream.JetStream
	stream jetstream.Stream
	name   string
	prefix string
	log    *slog.Logger
}

var _ jobstore.DeadLetters = (*DeadLetters)(nil)

// NewDeadLetters binds to the stream, creating it or updating its
// configuration to cfg (CreateOrUpdateStream).
func NewDeadLetters(ctx context.Context, js jetstream.JetStream, cfg DLConfig) (*DeadLetters, error) {
	if cfg.Stream == "" {
		cfg.Stream = DefaultDLStream
	}
	if cfg.SubjectPrefix == "" {
		cfg.SubjectPrefix = DefaultDLSubjectPrefix
	}
	cfg.SubjectPrefix = strings.TrimSuffix(cfg.SubjectPrefix, ".")
	if cfg.Replicas == 0 {
		cfg.Replicas = 1
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	st, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:              cfg.Stream,
		Description:       "CortexOS dead-lettered jobs (pb.JobInfo), one subject per job id",
		Subjects:          []string{cfg.SubjectPrefix + ".>"},
		Retention:         jetstream.LimitsPolicy,
		Discard:           jetstream.DiscardOld,
		MaxMsgsPerSubject: 1,
		MaxAge:            cfg.MaxAge,
		Storage:           cfg.Storage,
		Replicas:          cfg.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("kvstore: dead-letter stream %s: %w", cfg.Stream, err)
	}
	return &DeadLetters{js: js, stream: st, name: cfg.Stream, prefix: cfg.SubjectPrefix, log: cfg.Logger.With(logging.ComponentKey, logging.ComponentJobStore)}, nil
}

func (d *DeadLetters) subject(id string) string { return d.prefix + "." + id }

// decode turns a stored message into a job; a message that does not decode,
// or whose job is not the one its subject names, is an error naming both.
func (d *DeadLetters) decode(m *jetstream.RawStreamMsg) (*pb.JobInfo, error) {
	job := new(pb.JobInfo)
	if err := proto.Unmarshal(m.Data, job); err != nil {
		return nil, fmt.Errorf("kvstore: stream %s seq %d (%s): undecodable dead letter: %w", d.name, m.Sequence, m.Subject, err)
	}
	if d.subject(job.GetJobId()) != m.Subject {
		return nil, fmt.Errorf("kvstore: stream %s seq %d (%s): dead letter is for job %q", d.name, m.Sequence, m.Subject, job.GetJobId())
	}
	return job, nil
}

// Put implements jobstore.DeadLetters: a js.Publish that the stream has
// acknowledged when Put returns.
func (d *DeadLetters) Put(ctx context.Context, job *pb.JobInfo) error {
	if job == nil {
		return fmt.Errorf("%w: nil job", jobstore.ErrInvalidID)
	}
	if err := jobstore.ValidID(job.GetJobId()); err != nil {
		return err
	}
	data, err := encode(job)
	if err != nil {
		return err
	}
	// WithExpectStream: fail rather than land in some other stream that
	// happens to capture the subject.
	if _, err := d.js.Publish(ctx, d.subject(job.GetJobId()), data, jetstream.WithExpectStream(d.name)); err != nil {
		return fmt.Errorf("kvstore: dead-letter %q: %w", job.GetJobId(), err)
	}
	return nil
}

// List implements jobstore.DeadLetters, in stream order: one message get per
// job ("next message on <prefix>.> at or after seq"), which skips deleted
// messages without reading them. Messages that do not decode are logged and
// skipped. A negative limit is no limit.
func (d *DeadLetters) List(ctx context.Context, limit int) ([]*pb.JobInfo, error) {
	var out []*pb.JobInfo
	all := d.prefix + ".>"
	for seq := uint64(1); limit <= 0 || len(out) < limit; {
		m, err := d.stream.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(all))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("kvstore: list dead letters: %w", err)
		}
		seq = m.Sequence + 1
		job, err := d.decode(m)
		if err != nil {
			d.log.Error("list dead letters: skipping undecodable message", "err", err)
			continue
		}
		out = append(out, job)
	}
	return out, nil
}

// takeAttempts bounds Take's retries when the job's message keeps changing.
const takeAttempts = 8

// Take implements jobstore.DeadLetters: read the job's last message, then
// delete that message by sequence. Deleting is the claim: of two racing
// Takes only one deletes the message, and the other sees ErrNotFound. If a
// Put replaced the message in between, Take reads again and takes the new
// one. A message that does not decode is an error and stays in the stream.
func (d *DeadLetters) Take(ctx context.Context, id string) (*pb.JobInfo, error) {
	if err := jobstore.ValidID(id); err != nil {
		return nil, err
	}
	for range takeAttempts {
		m, err := d.stream.GetLastMsgForSubject(ctx, d.subject(id))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil, jobstore.ErrNotFound
		}
		if err != nil {
			return nil, fmt.Errorf("kvstore: take dead letter %q: %w", id, err)
		}
		job, err := d.decode(m)
		if err != nil {
			return nil, err
		}
		err = d.stream.DeleteMsg(ctx, m.Sequence)
		if err == nil {
			return job, nil
		}
		if !errors.Is(err, jetstream.ErrMsgDeleteUnsuccessful) {
			return nil, fmt.Errorf("kvstore: take dead letter %q: %w", id, err)
		}
		// Gone already: taken by someone else, or superseded by a Put.
	}
	return nil, fmt.Errorf("kvstore: take dead letter %q: it kept changing (%d attempts)", id, takeAttempts)
}
