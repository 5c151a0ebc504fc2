package kvstore

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cortex-os/core/internal/jobstore"
)

// Following the bucket by its gaps. A Store with SkipOwnWrites hands its
// watch only what others write, and has no use for its own writes. Sent
// every write, as a watch of the bucket's stream is, it would receive each of
// its own only to drop it: two deliveries per job, the server's and the
// client's work for each. But a record's revision is its message's sequence
// in the bucket's stream, and each write of this Store comes back with its
// revision: the sequences it never got back are the only ones another
// writer can have made. So after the first pass over the bucket (the latest
// record of every job, through the library's watch), the watch reads only
// those: a gap below a revision of its own, once every write of its own
// sent before it learned of that revision has been answered (until then, one
// of them may fill it; one that failed without an answer, and is stored after
// all, is recognised by its value and skipped, as the full watch does), and,
// when it has nothing
// of its own ahead, what was written after its last known sequence (polled
// every tick). It reads with the batched direct get ListPage uses.
//
// What it delivers is what the full watch delivers, in revision order: every
// record another writer stored, or its later revision where the bucket
// (History) kept only that. It learns of another's write within a tick or
// two (gapTick) rather than at once.

// gapTick is how often the watch looks for others' writes.
const gapTick = 10 * time.Millisecond

// gapBatch is how many messages one poll reads at most.
const gapBatch = 64

// noBatch is in the error of a server that cannot answer batched direct gets.
const noBatch = "does not answer batched direct gets"

func (s *Store) watchGaps(ctx context.Context, fn func(jobstore.Record)) error {
	s.own.start()
	defer s.own.stop()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// The first pass: the latest record of every job.
	w, err := s.watchAll(ctx)
	if w == nil {
		return err
	}
	var top uint64
	err = readUpdates(ctx, w, func(e jetstream.KeyValueEntry) bool {
		if e == nil {
			return false // the first pass is done
		}
		top = max(top, e.Revision())
		if e.Operation() == jetstream.KeyValuePut && !s.own.take(e.Key(), e.Value()) {
			s.deliver(ctx, fn, e.Key(), e.Value(), e.Revision())
		}
		return true
	})
	stopWatcher(w)
	if err != nil || ctx.Err() != nil {
		return err
	}

	g := gapFollower{s: s, fn: fn, next: top + 1, mine: make(map[uint64]struct{})}
	t := time.NewTicker(gapTick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if s.nc.IsClosed() {
			return errors.New("kvstore: watch: connection closed")
		}
		if err := g.tick(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if s.nc.IsClosed() {
				return errors.New("kvstore: watch: connection closed")
			}
			if strings.Contains(err.Error(), noBatch) {
				// An older server: follow every write instead.
				s.own.stopGaps()
				s.noGaps.Store(true)
				s.log.Warn("watch: the NATS server cannot read the bucket in batches; following every write", "err", err)
				return s.Watch(ctx, fn)
			}
			s.log.Debug("watch: reading the bucket failed; trying again", "err", err)
		}
	}
}

// deliver hands fn the record data under key at rev, unless it does not
// decode (logged).
func (s *Store) deliver(ctx context.Context, fn func(jobstore.Record), key string, data []byte, rev uint64) {
	job, err := s.decode(key, data)
	if err != nil {
		s.log.Error("watch: skipping undecodable record", "err", err)
		return
	}
	if ctx.Err() == nil {
		fn(jobstore.Record{Job: job, Revision: rev})
	}
}

// gapFollower is watchGaps' state after the first pass.
type gapFollower struct {
	s  *Store
	fn func(jobstore.Record)
	// next is the lowest sequence not accounted for: every one below it
	// was this Store's, read, or is gone from the stream.
	next uint64
	// mine holds this Store's revisions at or above next; maxOwn is the
	// highest; ripe is maxOwn as it was a tick ago: a gap below it is a
	// tick old.
	mine   map[uint64]struct{}
	maxOwn uint64
	buf    []uint64
	// marks: for the sequences up to upTo, the writes of this Store that
	// might still fill a gap among them: those noted up to cut.
	marks []gapMark
}

type gapMark struct{ upTo, cut uint64 }

// collect takes the revisions this Store's writes got since the last call.
func (g *gapFollower) collect() {
	g.buf = g.s.own.takeSeqs(g.buf[:0])
	for _, seq := range g.buf {
		if seq >= g.next {
			g.mine[seq] = struct{}{}
			g.maxOwn = max(g.maxOwn, seq)
		}
	}
	g.advance()
}

// advance moves next over this Store's revisions.
func (g *gapFollower) advance() {
	for {
		if _, ok := g.mine[g.next]; !ok {
			return
		}
		delete(g.mine, g.next)
		g.next++
	}
}

// tick reads the gaps that are a tick old, and polls past the end when
// nothing of this Store's is ahead.
func (g *gapFollower) tick(ctx context.Context) error {
	g.collect()
	// A gap below maxOwn may be a write of this Store not answered yet:
	// it is read only once every write noted before it was seen has been
	// answered.
	sent, _ := g.s.own.answered(0)
	if n := len(g.marks); g.maxOwn >= g.next && (n == 0 || g.marks[n-1].upTo < g.maxOwn) {
		g.marks = append(g.marks, gapMark{upTo: g.maxOwn, cut: sent})
	}
	var ripe uint64
	for len(g.marks) > 0 {
		m := g.marks[0]
		if m.upTo < g.next {
			g.marks = g.marks[1:]
			continue
		}
		if _, done := g.s.own.answered(m.cut); !done {
			break
		}
		ripe = m.upTo
		g.marks = g.marks[1:]
	}
	for g.next <= ripe {
		hi := g.next
		for hi < ripe {
			if _, ok := g.mine[hi+1]; ok {
				break
			}
			hi++
		}
		msgs, err := g.s.readRange(ctx, g.next, hi)
		if err != nil {
			return err
		}
		for _, m := range msgs {
			g.take(ctx, m)
		}
		g.next = hi + 1
		g.collect()
	}
	for range 16 { // at most 16 batches a tick: the rest at the next
		// Past the last revision of its own, the stream holds others'
		// writes, or this Store's writes not answered yet: read only when
		// none is in flight (those in flight reveal gaps when answered).
		if _, idle := g.s.own.answered(^uint64(0)); g.next <= g.maxOwn || !idle {
			return nil
		}
		msgs, more, err := g.s.directBatch(ctx, g.next, gapBatch)
		if err != nil {
			return err
		}
		for _, m := range msgs {
			if m.seq >= g.next {
				g.take(ctx, m)
				g.next = m.seq + 1
			}
		}
		g.collect()
		if !more || len(msgs) == 0 {
			return nil
		}
	}
	return nil
}

// take delivers m unless it is this Store's write or a marker.
func (g *gapFollower) take(ctx context.Context, m rawMsg) {
	if _, ok := g.mine[m.seq]; ok {
		delete(g.mine, m.seq)
		return
	}
	if m.deleted || g.s.own.take(m.key, m.data) {
		return
	}
	// Stored since the last collect? Then it is known by its revision.
	g.buf = g.s.own.takeSeqs(g.buf[:0])
	mineNow := false
	for _, seq := range g.buf {
		if seq == m.seq {
			mineNow = true
		} else if seq >= g.next {
			g.mine[seq] = struct{}{}
			g.maxOwn = max(g.maxOwn, seq)
		}
	}
	if !mineNow {
		g.s.deliver(ctx, g.fn, m.key, m.data, m.seq)
	}
}
