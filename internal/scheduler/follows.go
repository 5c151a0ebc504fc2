package scheduler

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// follows is who follows which jobs: the scheduler publishes a job's events
// only while it is followed (events.go). A follower announces itself on
// wire.SubjectJobFollow, naming a job or none (every job), and each
// announcement lasts ttl; followers announce again every
// wire.FollowInterval. Every replica hears every announcement (no queue
// group), since any replica may write the job.
//
// It holds at most max jobs: an announcement beyond them follows every job
// until its ttl ends (counted in Stats.FollowOverflows), so that clients
// naming many jobs cost events, not memory. Expired jobs are pruned by the
// timers' loop (prune) and when the map is full, each at most twice a ttl.
//
// followed, asked for every write of every job, is cheap when nobody
// follows: two atomic loads, and the clock only when some follow is live.
type follows struct {
	ttl   time.Duration
	max   int
	log   *slog.Logger
	stats *counters

	all   atomic.Int64 // unix nanoseconds until which every job is followed
	count atomic.Int64 // len(jobs), read without the lock

	mu        sync.Mutex
	jobs      map[string]int64 // job id -> unix nanoseconds until which it is followed
	nextPrune int64            // unix nanoseconds
}

func newFollows(ttl time.Duration, max int, log *slog.Logger, stats *counters) *follows {
	return &follows{ttl: ttl, max: max, log: log, stats: stats, jobs: make(map[string]int64)}
}

// followed reports whether jobID's events are to be published now.
func (f *follows) followed(jobID string) bool {
	all := f.all.Load()
	if all == 0 && f.count.Load() == 0 {
		return false // nobody follows anything: the common case
	}
	now := time.Now().UnixNano()
	if now < all {
		return true
	}
	if f.count.Load() == 0 {
		return false
	}
	f.mu.Lock()
	until, ok := f.jobs[jobID]
	f.mu.Unlock()
	return ok && now < until
}

// handleFollow hears an announcement on wire.SubjectJobFollow.
func (f *follows) handleFollow(p *pb.BusPacket) {
	q := p.GetJobQuery()
	if q == nil {
		f.stats.invalidPackets.Add(1)
		f.log.Warn("refused a follow: not a job_query packet", "sender_id", clip(p.GetSenderId()))
		return
	}
	if id := q.GetJobId(); id != "" {
		if err := validJobID("job_id", id); err != nil {
			f.stats.invalidPackets.Add(1)
			f.log.Warn("refused a follow", "sender_id", clip(p.GetSenderId()), "err", err)
			return
		}
	}
	f.stats.follows.Add(1)
	f.follow(q.GetJobId(), time.Now())
}

// follow follows jobID ("": every job) from now for ttl.
func (f *follows) follow(jobID string, now time.Time) {
	until := now.Add(f.ttl).UnixNano()
	if jobID == "" {
		f.followAll(until)
		return
	}
	f.mu.Lock()
	if _, ok := f.jobs[jobID]; !ok && len(f.jobs) >= f.max && now.UnixNano() >= f.nextPrune {
		// Full: make room from what expired, at most twice a ttl (a scan of
		// max jobs on every announcement would cost the most exactly when
		// followers are the most).
		f.pruneLocked(now.UnixNano())
	}
	_, ok := f.jobs[jobID]
	full := !ok && len(f.jobs) >= f.max
	if !full {
		f.jobs[jobID] = until
		f.count.Store(int64(len(f.jobs)))
	}
	f.mu.Unlock()
	if full {
		f.stats.followOverflows.Add(1)
		if f.log.Enabled(context.Background(), slog.LevelDebug) {
			f.log.Debug("too many jobs followed: following every job for now", "job_id", jobID, "max", f.max)
		}
		f.followAll(until)
	}
}

// followAll follows every job until until, unless it already is longer.
func (f *follows) followAll(until int64) {
	for {
		all := f.all.Load()
		if all >= until || f.all.CompareAndSwap(all, until) {
			return
		}
	}
}

// prune forgets the follows that ended: follow-all's at once, the jobs'
// at most twice a ttl.
func (f *follows) prune(now time.Time) {
	n := now.UnixNano()
	if all := f.all.Load(); all != 0 && n >= all {
		f.all.CompareAndSwap(all, 0) // followed goes back to not reading the clock
	}
	if f.count.Load() == 0 {
		return
	}
	f.mu.Lock()
	if n >= f.nextPrune {
		f.pruneLocked(n)
	}
	f.mu.Unlock()
}

func (f *follows) pruneLocked(now int64) {
	for id, until := range f.jobs {
		if now >= until {
			delete(f.jobs, id)
		}
	}
	f.count.Store(int64(len(f.jobs)))
	f.nextPrune = now + int64(f.ttl/2)
}
