package kvstore

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cortex-os/core/internal/jobstore"
)

// Paging. A record's revision is the sequence of its message in the
// bucket's stream, and (History 1) the stream holds one message per job, its
// latest: so the jobs newest first are the stream's messages from the last
// sequence down. ListPage reads them in chunks of sequences, from the top
// down, each chunk with one batched direct get (JetStream's
// $JS.API.DIRECT.GET.<stream> with a batch, nats-server 2.11 or later):
// no consumer is created, and any server holding the stream answers.
//
// The stream moves while it is read. A job written after the page took the
// stream's last sequence leaves its old message (the server removes it,
// History 1, or the page skips it as not the latest, History above 1) and
// gets one above that sequence, where the downward scan does not look: read
// down only, the job would be on no page at all. So the first page (no
// token), once its scan is done, reads the bucket forward from above the
// sequence it started from to the stream's end, and puts the jobs it finds
// there that match and that it does not hold yet in front of its records
// (they are the newest), keeping the page's size: records pushed past it are
// left for the next page, whose token then continues below the page's last
// record. A forward read to the end misses no job: a job's latest message is
// always either read already or still ahead of the read.
//
// Later pages (a token) do not read forward: a job found above the listing's
// start may have been shown already, at its older revision, by an earlier
// page, and a token (a position only) cannot tell. They keep the contract of
// package jobstore: a job written after the first page was read is not
// shown by them.
//
// What a listing guarantees, then: a job that exists when the first page is
// asked for, is not written from the moment the first page has been read
// until the last page is, and matches the filter in every revision it has
// in the meantime, is listed exactly once, however often it is rewritten
// while the first page is read (as long as the forward read's bound below
// holds). No job is listed twice: a page's records are above the token it
// hands out, and the store returns only a job's latest record.
//
// A page reads at most PageQuery.Scan sequences down, plus at most one
// chunk's worth above a chunk's top that a batch returns and the page
// drops; the first page also reads at most PageQuery.Scan messages forward,
// the writes that landed while it was read. If more writes than that land
// during one page, the jobs moved beyond them may be missing from it.

// chunkSeqs is how many sequences one batched read covers. A job record is
// at most a NATS message (1 MiB by default), so a chunk is at most 32 MiB
// however large the records, and usually a few hundred kilobytes.
const chunkSeqs = 32

// The headers of a direct get's answers that nats.go has no names for.
const (
	statusHeader     = "Status" // of a status message: 204 end of batch, 404 none
	numPendingHeader = "Nats-Num-Pending"
	kvOpHeader       = "KV-Operation"
)

// directTimeout bounds a batched read when ctx has no deadline.
const directTimeout = 5 * time.Second

// ListPage implements jobstore.Store: see the package's paging note. It
// needs the stream's first and last sequence, one stream info request per
// page.
func (s *Store) ListPage(ctx context.Context, q jobstore.PageQuery) (jobstore.Page, error) {
	before, err := jobstore.DecodePageToken(q.Token)
	if err != nil {
		return jobstore.Page{}, err
	}
	size, scan := q.Limits()
	info, err := s.stream.Info(ctx)
	if err != nil {
		return jobstore.Page{}, fmt.Errorf("kvstore: list: stream info: %w", err)
	}
	if !info.Config.AllowDirect {
		return jobstore.Page{}, fmt.Errorf("kvstore: list: stream %s does not allow direct gets", info.Config.Name)
	}
	if h := afterInfo.Load(); h != nil {
		(*h)(s)
	}
	first, last := info.State.FirstSeq, info.State.LastSeq
	top := last
	if before > 0 {
		top = min(top, before-1)
	}
	page, err := s.scanDown(ctx, q.Filter, first, top, size, scan)
	if err != nil {
		return jobstore.Page{}, err
	}
	if before == 0 {
		return s.catchUp(ctx, q.Filter, page, last, size, scan)
	}
	return page, nil
}

// afterInfo, set by tests only, runs in ListPage once it has the stream's
// last sequence, before it reads anything: it writes what a concurrent
// writer would.
var afterInfo atomic.Pointer[func(*Store)]

// scanDown reads the bucket from sequence top down to first, at most scan
// sequences, until the page holds size records.
func (s *Store) scanDown(ctx context.Context, f jobstore.Filter, first, top uint64, size, scan int) (jobstore.Page, error) {
	var page jobstore.Page
	covered := 0
	for top >= first && top > 0 && covered < scan && len(page.Records) < size {
		lo := first // the chunk: at most chunkSeqs sequences, within the scan budget
		if w := uint64(min(chunkSeqs, scan-covered)); top >= first+w {
			lo = top - w + 1
		}
		msgs, err := s.readRange(ctx, lo, top)
		if err != nil {
			return jobstore.Page{}, err
		}
		covered += int(top - lo + 1)
		// Newest first: the chunk's messages from the top down.
		slices.Reverse(msgs)
		for i, m := range msgs {
			if len(page.Records) == size {
				// Full: the rest of the chunk is the next page's.
				page.Next = jobstore.PageTokenBefore(msgs[i-1].seq)
				return page, nil
			}
			rec, ok, err := s.recordOf(ctx, m)
			if err != nil {
				return jobstore.Page{}, err
			}
			if ok && f.Match(rec.Job) {
				page.Records = append(page.Records, rec)
			}
		}
		top = lo - 1
	}
	if top >= first && top > 0 {
		page.Next = jobstore.PageTokenBefore(top + 1)
	}
	return page, nil
}

// catchUp completes a first page scanned down from sequence last: it reads
// what was written above last since (at most scan messages) and puts the
// latest record of every job found there that matches f, and that the page
// does not hold, in front of the page's records, newest first. Records
// pushed past size are dropped, and Next then continues below the last one
// kept, so that the next page holds them.
func (s *Store) catchUp(ctx context.Context, f jobstore.Filter, page jobstore.Page, last uint64, size, scan int) (jobstore.Page, error) {
	msgs, err := s.readAfter(ctx, last, scan)
	if err != nil || len(msgs) == 0 {
		return page, err
	}
	seen := make(map[string]bool, len(page.Records)+len(msgs))
	for _, r := range page.Records {
		seen[r.Job.GetJobId()] = true
	}
	var fresh []jobstore.Record
	for _, m := range slices.Backward(msgs) {
		if seen[m.key] {
			continue // on the page already, or a job's older message
		}
		seen[m.key] = true
		rec, ok, err := s.currentOf(ctx, m)
		if err != nil {
			return jobstore.Page{}, err
		}
		if ok && f.Match(rec.Job) {
			fresh = append(fresh, rec)
		}
	}
	if len(fresh) == 0 {
		return page, nil
	}
	// Newest first (currentOf may have found a job's record above the
	// others').
	slices.SortFunc(fresh, func(a, b jobstore.Record) int { return cmp.Compare(b.Revision, a.Revision) })
	recs := append(fresh, page.Records...)
	if len(recs) > size {
		recs = recs[:size]
		page.Next = jobstore.PageTokenBefore(recs[size-1].Revision)
	}
	page.Records = recs
	return page, nil
}

// currentOf returns the job of m, the latest message of its key read
// forward. With History 1 that is the job's record as read. With History
// above 1 it is the job's current record, read again: a job written again
// since m was read has a newer message that the forward read may have
// passed, and recordOf, which wants m to be the latest, would drop it.
func (s *Store) currentOf(ctx context.Context, m rawMsg) (rec jobstore.Record, ok bool, err error) {
	if s.history <= 1 || m.deleted {
		return s.recordOf(ctx, m)
	}
	e, err := s.kv.Get(ctx, m.key)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return jobstore.Record{}, false, nil
	}
	if err != nil {
		return jobstore.Record{}, false, fmt.Errorf("kvstore: list: %w", err)
	}
	job, err := s.decode(e.Key(), e.Value())
	if err != nil {
		s.log.Error("list: skipping undecodable record", "err", err)
		return jobstore.Record{}, false, nil
	}
	return jobstore.Record{Job: job, Revision: e.Revision()}, true, nil
}

// readAfter returns the bucket's messages with sequences above after, in
// order, up to the stream's end or n messages, whichever comes first.
func (s *Store) readAfter(ctx context.Context, after uint64, n int) ([]rawMsg, error) {
	var out []rawMsg
	for from := after + 1; len(out) < n; {
		msgs, more, err := s.directBatch(ctx, from, min(chunkSeqs, n-len(out)))
		if err != nil {
			return nil, err
		}
		out = append(out, msgs...)
		if !more || len(msgs) == 0 {
			break
		}
		from = msgs[len(msgs)-1].seq + 1
	}
	return out, nil
}

// rawMsg is a message of the bucket's stream, as a direct get returns it.
type rawMsg struct {
	seq     uint64
	key     string
	data    []byte
	deleted bool // a delete or purge marker
}

// recordOf decodes m into a record; ok is false for a marker, a record that
// does not decode (logged), or (History above 1) a revision that is not the
// job's latest.
func (s *Store) recordOf(ctx context.Context, m rawMsg) (rec jobstore.Record, ok bool, err error) {
	if m.deleted {
		return jobstore.Record{}, false, nil
	}
	job, err := s.decode(m.key, m.data)
	if err != nil {
		s.log.Error("list: skipping undecodable record", "err", err)
		return jobstore.Record{}, false, nil
	}
	if s.history > 1 {
		// Older revisions of a job are in the stream too: keep only the
		// latest.
		e, err := s.kv.Get(ctx, m.key)
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
			return jobstore.Record{}, false, nil
		}
		if err != nil {
			return jobstore.Record{}, false, fmt.Errorf("kvstore: list: %w", err)
		}
		if e.Revision() != m.seq {
			return jobstore.Record{}, false, nil
		}
	}
	return jobstore.Record{Job: job, Revision: m.seq}, true, nil
}

// readRange returns the bucket's messages with sequences lo to hi, in
// order, with batched direct gets: one, unless the server cut a batch short
// at its byte limit.
func (s *Store) readRange(ctx context.Context, lo, hi uint64) ([]rawMsg, error) {
	var out []rawMsg
	for from := lo; from <= hi; {
		msgs, more, err := s.directBatch(ctx, from, int(hi-from+1))
		if err != nil {
			return nil, err
		}
		last := from - 1
		for _, m := range msgs {
			if m.seq > hi {
				return out, nil
			}
			out = append(out, m)
			last = m.seq
		}
		if !more || last >= hi || last < from {
			return out, nil
		}
		from = last + 1
	}
	return out, nil
}

// directGetRequest is JetStream's direct get request, batched.
type directGetRequest struct {
	Seq     uint64 `json:"seq"`
	NextFor string `json:"next_by_subj"`
	Batch   int    `json:"batch"`
}

// directBatch asks for up to n messages of the bucket from sequence from
// on. more reports that the stream holds more after the last one returned.
func (s *Store) directBatch(ctx context.Context, from uint64, n int) (msgs []rawMsg, more bool, err error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, directTimeout)
		defer cancel()
	}
	nc := s.js.Conn()
	inbox := nc.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return nil, false, fmt.Errorf("kvstore: list: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	req, err := json.Marshal(directGetRequest{Seq: from, NextFor: s.subjectPrefix + ">", Batch: n})
	if err != nil {
		return nil, false, err
	}
	if err := nc.PublishRequest(s.directSubject, inbox, req); err != nil {
		return nil, false, fmt.Errorf("kvstore: list: %w", err)
	}
	for {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			return nil, false, fmt.Errorf("kvstore: list: reading a batch of the bucket: %w", err)
		}
		switch status := m.Header.Get(statusHeader); status {
		case "":
		case "204": // end of the batch
			pending, _ := strconv.ParseUint(m.Header.Get(numPendingHeader), 10, 64)
			return msgs, pending > 0, nil
		case "404": // nothing from there on
			return msgs, false, nil
		default:
			return nil, false, fmt.Errorf("kvstore: list: direct get from %d: status %s %s", from, status, m.Header.Get("Description"))
		}
		seq, err := strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64)
		if err != nil {
			return nil, false, fmt.Errorf("kvstore: list: a message without a sequence: %w", err)
		}
		if m.Header.Get(numPendingHeader) == "" {
			// The answer to a single get: the server does not batch.
			return nil, false, errors.New("kvstore: list: the NATS server does not answer batched direct gets (nats-server 2.11 or later is needed)")
		}
		subj := m.Header.Get(jetstream.SubjectHeader)
		key, ok := strings.CutPrefix(subj, s.subjectPrefix)
		if !ok {
			return nil, false, fmt.Errorf("kvstore: list: message %d on %q, not in the bucket", seq, subj)
		}
		op := m.Header.Get(kvOpHeader)
		marker := m.Header.Get(jetstream.MarkerReasonHeader)
		msgs = append(msgs, rawMsg{seq: seq, key: key, data: m.Data, deleted: op == "DEL" || op == "PURGE" || marker != ""})
	}
}
