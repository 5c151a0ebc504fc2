package bus

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// backlog keeps what Backlog needs of the consumers Consume made: the core
// subscriptions and the packets their handlers hold, or the durable
// consumer of the stream.
type backlog struct {
	mu     sync.Mutex
	core   map[string][]*coreIntake
	stream map[string]jetstream.Consumer
}

// coreIntake is a core subscription of Consume and the packets its
// handler has finished with.
type coreIntake struct {
	sub  *nats.Subscription
	done atomic.Int64
}

func (l *backlog) addCore(subject string, in *coreIntake) (remove func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.core == nil {
		l.core = make(map[string][]*coreIntake)
	}
	l.core[subject] = append(l.core[subject], in)
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		list := l.core[subject]
		for i, c := range list {
			if c == in {
				l.core[subject] = append(list[:i:i], list[i+1:]...)
				break
			}
		}
	}
}

func (l *backlog) addStream(subject string, c jetstream.Consumer) (remove func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stream == nil {
		l.stream = make(map[string]jetstream.Consumer)
	}
	l.stream[subject] = c
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.stream[subject] == c {
			delete(l.stream, subject)
		}
	}
}

// Backlog reports how many packets of subject (a subject Consume or
// ConsumeTree was given) have been received and not yet handled: over
// core NATS, those this connection's subscriptions hold (queued or in their
// handler); when durable, those the stream holds that the replicas' shared
// consumer has not had acknowledged (one JetStream API request), and the
// submissions published for an answer (PublishAnsweredSubmit) this
// connection's core subscriptions hold. A packet published but not yet
// received is not counted, nor one another replica holds over core NATS.
// 0 when nothing consumes subject here.
func (b *NatsBus) Backlog(ctx context.Context, subject string) (int, error) {
	b.intake.mu.Lock()
	core := append([]*coreIntake(nil), b.intake.core[subject]...)
	cons := b.intake.stream[subject]
	b.intake.mu.Unlock()
	n := 0
	for _, c := range core {
		// Queued, then handed to the handler and not finished: read in
		// this order, a packet that moves between the two reads is counted
		// twice, never missed.
		msgs, _, err := c.sub.Pending()
		if err != nil {
			continue // closed: it holds nothing any more
		}
		delivered, err := c.sub.Delivered()
		if err != nil {
			continue
		}
		n += msgs + max(0, int(delivered-c.done.Load()))
	}
	if cons != nil {
		info, err := cons.Info(ctx)
		if err != nil {
			return n, fmt.Errorf("bus: backlog of %s: %w", subject, err)
		}
		n += int(info.NumPending) + info.NumAckPending
	}
	return n, nil
}
