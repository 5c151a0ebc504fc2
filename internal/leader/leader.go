// Package leader elects one active scheduler among replicas through a lease
// in a JetStream key-value bucket, and fences the writes of a leader whose
// lease has lapsed.
//
// The lease is one key. A candidate takes it with a create (which succeeds
// only when the key is absent) and the leader renews it every Lease/4 with
// an update at the revision it last wrote (which fails if anyone else wrote
// since). The bucket's max age is the lease: a key nobody renews for Lease
// disappears from the server, and a standby's next create takes it.
//
// The revision at which a term was won is its fencing token: revisions of a
// bucket only grow, so a later term always has a larger token. A leader
// counts itself leader only until Lease*3/4 after it sent its last renewal
// that succeeded; the server keeps the key for Lease after it received that
// renewal, so the old leader has stopped counting itself leader before a
// standby can take the key (assuming clocks that run at about the same
// rate, not clocks that agree). FencedStore refuses every write outside the
// term, so a leader that was paused or cut off writes nothing once a
// successor may be writing.
package leader

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Defaults.
const (
	DefaultBucket = "CORTEX_LEADER"
	DefaultKey    = "scheduler"
	DefaultLease  = 4 * time.Second
)

// ErrFenced is returned by a FencedStore write outside the term it was made
// for: the lease lapsed or was lost, and another leader may be writing.
var ErrFenced = errors.New("leader: not the leader (lease lapsed): write fenced")

// Config configures an Elector.
type Config struct {
	JS jetstream.JetStream
	// Bucket is the lease's key-value bucket. Default CORTEX_LEADER.
	Bucket string
	// Key names the role elected. Default "scheduler".
	Key string
	// ID is this candidate's id, the lease's value.
	ID string
	// Lease is how long a lease lasts unrenewed. Default 4s; at least 400ms.
	Lease time.Duration
	// Replicas of the bucket. Default 1.
	Replicas int
	Logger   *slog.Logger
	// Now is the clock; default time.Now (tests may slow it down).
	Now func() time.Time
}

// Elector campaigns for the lease.
type Elector struct {
	cfg Config
	kv  jetstream.KeyValue
}

// New creates (or updates) the bucket and returns an Elector.
func New(ctx context.Context, cfg Config) (*Elector, error) {
	if cfg.JS == nil || cfg.ID == "" {
		return nil, errors.New("leader: JS and ID are required")
	}
	if cfg.Bucket == "" {
		cfg.Bucket = DefaultBucket
	}
	if cfg.Key == "" {
		cfg.Key = DefaultKey
	}
	if cfg.Lease == 0 {
		cfg.Lease = DefaultLease
	}
	if cfg.Lease < 400*time.Millisecond {
		return nil, fmt.Errorf("leader: lease %s is shorter than 400ms", cfg.Lease)
	}
	if cfg.Replicas <= 0 {
		cfg.Replicas = 1
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	kv, err := cfg.JS.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      cfg.Bucket,
		Description: "CortexOS: the active scheduler's lease",
		TTL:         cfg.Lease,
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("leader: bucket %s (replicas %d; by hand: nats kv edit %s --replicas %d): %w", cfg.Bucket, cfg.Replicas, cfg.Bucket, cfg.Replicas, err)
	}
	return &Elector{cfg: cfg, kv: kv}, nil
}

// Holder returns the id holding the lease now, or "" when nobody does.
func (e *Elector) Holder(ctx context.Context) (string, uint64, error) {
	en, err := e.kv.Get(ctx, e.cfg.Key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return "", 0, nil
	}
	if err != nil {
		return "", 0, err
	}
	return string(en.Value()), en.Revision(), nil
}

// Campaign waits until this candidate holds the lease, or ctx ends, and
// returns the term, which it renews until Resign or until the lease is lost.
func (e *Elector) Campaign(ctx context.Context) (*Term, error) {
	poll := e.cfg.Lease / 8
	for {
		sent := e.cfg.Now()
		rctx, cancel := context.WithTimeout(ctx, e.cfg.Lease/4)
		rev, err := e.kv.Create(rctx, e.cfg.Key, []byte(e.cfg.ID))
		cancel()
		if err == nil {
			t := &Term{e: e, Token: rev, rev: rev, lost: make(chan struct{}), done: make(chan struct{})}
			t.until = sent.Add(e.validity())
			e.cfg.Logger.Info("leader: lease won", "component", "leader", "id", e.cfg.ID, "token", rev, "lease", e.cfg.Lease)
			go t.renew()
			return t, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && ctx.Err() == nil {
			e.cfg.Logger.Debug("leader: campaign", "component", "leader", "id", e.cfg.ID, "err", err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(poll):
		}
	}
}

func (e *Elector) validity() time.Duration { return e.cfg.Lease * 3 / 4 }

// Term is one holding of the lease.
type Term struct {
	e *Elector
	// Token is the fencing token: the lease's revision when the term was
	// won, larger than any earlier term's.
	Token uint64

	mu       sync.Mutex
	rev      uint64
	until    time.Time
	resigned bool
	quiet    bool // StopRenewing: the lease runs out by itself
	lostOnce sync.Once
	lost     chan struct{}
	done     chan struct{}
}

// Valid reports whether the term still holds: not lost, not resigned, and
// within the validity of its last renewal.
func (t *Term) Valid() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.resigned {
		return false
	}
	select {
	case <-t.lost:
		return false
	default:
	}
	return t.e.cfg.Now().Before(t.until)
}

// Lost is closed when the term ends without Resign: a renewal found
// someone else's write, or no renewal succeeded within the validity.
func (t *Term) Lost() <-chan struct{} { return t.lost }

func (t *Term) lose(why string, err error) {
	t.lostOnce.Do(func() {
		t.e.cfg.Logger.Warn("leader: lease lost", "component", "leader", "id", t.e.cfg.ID, "token", t.Token, "why", why, "err", err)
		close(t.lost)
	})
}

func (t *Term) renew() {
	defer close(t.done)
	tick := time.NewTicker(t.e.cfg.Lease / 4)
	defer tick.Stop()
	for {
		select {
		case <-t.lost:
			return
		case <-tick.C:
		}
		t.mu.Lock()
		resigned, rev, until := t.resigned || t.quiet, t.rev, t.until
		t.mu.Unlock()
		if resigned {
			return
		}
		if !t.e.cfg.Now().Before(until) {
			t.lose("no renewal within the lease", nil)
			return
		}
		sent := t.e.cfg.Now()
		ctx, cancel := context.WithTimeout(context.Background(), until.Sub(sent))
		next, err := t.e.kv.Update(ctx, t.e.cfg.Key, []byte(t.e.cfg.ID), rev)
		cancel()
		switch {
		case err == nil:
			t.mu.Lock()
			t.rev, t.until = next, sent.Add(t.e.validity())
			t.mu.Unlock()
		case errors.Is(err, jetstream.ErrKeyExists) || isWrongSequence(err):
			t.lose("another candidate holds the lease", err)
			return
		default:
			// A transient failure (a node down, a leader election in the
			// bucket's stream): the next tick tries again while the
			// validity lasts.
			t.e.cfg.Logger.Debug("leader: renewal failed", "component", "leader", "id", t.e.cfg.ID, "err", err)
		}
	}
}

func isWrongSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}

// StopRenewing stops renewing the lease, so that it runs out by itself
// unless Resign gives it up first; the term stays valid until its last
// renewal's validity ends. A leader that is shutting down calls it at once:
// however long its engine takes to stop, a standby takes over within the
// lease.
func (t *Term) StopRenewing() {
	t.mu.Lock()
	t.quiet = true
	t.mu.Unlock()
}

// Resign ends the term and deletes the lease if it is still this term's,
// so that a standby takes over at once rather than after the lease.
func (t *Term) Resign(ctx context.Context) {
	t.mu.Lock()
	already := t.resigned
	t.resigned = true
	rev := t.rev
	t.mu.Unlock()
	if already {
		return
	}
	<-t.done
	select {
	case <-t.lost:
		return
	default:
	}
	if err := t.e.kv.Delete(ctx, t.e.cfg.Key, jetstream.LastRevision(rev)); err != nil {
		t.e.cfg.Logger.Debug("leader: resign", "component", "leader", "id", t.e.cfg.ID, "err", err)
		return
	}
	t.e.cfg.Logger.Info("leader: resigned", "component", "leader", "id", t.e.cfg.ID, "token", t.Token)
}
