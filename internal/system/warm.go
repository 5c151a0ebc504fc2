package system

import (
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cortex-os/core/internal/scheduler"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// warmHeartbeats keeps the last heartbeat of each worker while a candidate
// stands by, so that the engine it starts on winning the lease knows the
// workers at once: an idle worker heartbeats only every 5 s, and placement
// by what workers report (least-loaded) places nothing on a worker it has
// not heard of.
type warmHeartbeats struct {
	requireIdentity bool

	mu   sync.Mutex
	last map[string]warmEntry
	sub  *nats.Subscription
}

type warmEntry struct {
	p  *pb.BusPacket
	at time.Time
}

// warmMaxAge: a heartbeat older than this is not replayed (a worker idle
// heartbeats every 5 s; one not heard for longer may be gone).
const warmMaxAge = 6 * time.Second

// warmMaxBytes: a larger message on a heartbeat subject is not a heartbeat.
const warmMaxBytes = 64 << 10

func startWarmHeartbeats(nc *nats.Conn, requireIdentity bool) (*warmHeartbeats, error) {
	w := &warmHeartbeats{requireIdentity: requireIdentity, last: map[string]warmEntry{}}
	sub, err := nc.Subscribe(wire.SubjectHeartbeats, w.receive)
	if err != nil {
		return nil, err
	}
	w.sub = sub
	return w, nil
}

func (w *warmHeartbeats) receive(m *nats.Msg) {
	if len(m.Data) > warmMaxBytes {
		return
	}
	p := new(pb.BusPacket)
	if p.UnmarshalVT(m.Data) != nil {
		return
	}
	hb := p.GetHeartbeat()
	if hb == nil || hb.GetWorkerId() == "" {
		return
	}
	// The engine's rules for who may heartbeat on which subject.
	named, ok := wire.HeartbeatSubjectWorker(m.Subject)
	if ok && named != hb.GetWorkerId() || !ok && w.requireIdentity {
		return
	}
	w.mu.Lock()
	w.last[hb.GetWorkerId()] = warmEntry{p: p, at: time.Now()}
	w.mu.Unlock()
}

// replay hands the engine the recent heartbeats, as if they had just come.
func (w *warmHeartbeats) replay(e *scheduler.Engine) {
	w.mu.Lock()
	var ps []*pb.BusPacket
	for id, en := range w.last {
		if time.Since(en.at) > warmMaxAge {
			delete(w.last, id)
			continue
		}
		ps = append(ps, en.p)
	}
	w.mu.Unlock()
	for _, p := range ps {
		e.HandlePacket(p)
	}
}

func (w *warmHeartbeats) stop() { _ = w.sub.Unsubscribe() }
