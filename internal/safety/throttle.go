package safety

import (
	"container/list"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// buckets are the token buckets of one throttle rule, one per key, at most
// maxKeys of them: when a new key would exceed that, the least recently used
// bucket is dropped (a full one, usually: dropping it loses nothing, as a
// fresh bucket starts full). Hostile tenant names therefore cost bounded
// memory; what they can do is make other idle keys' buckets start over.
type buckets struct {
	spec  throttleSpec
	limit rate.Limit

	mu  sync.Mutex
	m   map[string]*list.Element
	lru list.List // of *bucket, most recently used first

	evictions atomic.Uint64
}

type bucket struct {
	key string
	lim *rate.Limiter
}

func newBuckets(spec throttleSpec) *buckets {
	return &buckets{
		spec:  spec,
		limit: rate.Limit(float64(spec.rate) / spec.per.Seconds()),
		m:     make(map[string]*list.Element),
	}
}

// key is the bucket a job counts against.
func (s *buckets) key(req *pb.JobRequest) string {
	switch s.spec.by {
	case byTopic:
		return req.GetTopic()
	case byTenantTopic:
		return req.GetTenant() + "\x00" + req.GetTopic()
	default:
		return req.GetTenant()
	}
}

// take takes a token from key's bucket at now. Without one, it says how long
// until the next token.
func (s *buckets) take(key string, now time.Time) (ok bool, retryAfter time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b *bucket
	if el, found := s.m[key]; found {
		s.lru.MoveToFront(el)
		b = el.Value.(*bucket)
	} else {
		for len(s.m) >= s.spec.maxKeys {
			old := s.lru.Back()
			s.lru.Remove(old)
			delete(s.m, old.Value.(*bucket).key)
			s.evictions.Add(1)
		}
		b = &bucket{key: key, lim: rate.NewLimiter(s.limit, s.spec.burst)}
		s.m[key] = s.lru.PushFront(b)
	}
	if b.lim.AllowN(now, 1) {
		return true, 0
	}
	missing := 1 - b.lim.TokensAt(now)
	secs := missing / float64(s.limit)
	if math.IsNaN(secs) || secs > float64(24*time.Hour/time.Second) {
		return false, 24 * time.Hour
	}
	retryAfter = time.Duration(math.Ceil(secs * float64(time.Second)))
	// Whole milliseconds, rounded up: the wire carries retry_after_ms.
	retryAfter = (retryAfter + time.Millisecond - 1).Truncate(time.Millisecond)
	return false, max(retryAfter, time.Millisecond)
}

// len is the number of buckets held.
func (s *buckets) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}
