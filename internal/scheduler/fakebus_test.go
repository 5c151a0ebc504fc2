package scheduler_test

import (
	"bytes"
	"errors"
	"log/slog"
	"sync"

	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// fakeBus is an in-memory scheduler.Bus for the engine's pure logic: it
// records publishes and subscriptions and delivers nothing by itself.
type fakeBus struct {
	mu         sync.Mutex
	published  []published
	subs       []subscription
	drained    int
	publishErr error
	failOn     string // Subscribe on this subject fails
}

type published struct {
	subject string
	packet  *pb.BusPacket
}

type subscription struct {
	subject, queue string
	handler        func(*pb.BusPacket)
}

func (f *fakeBus) Publish(subject string, p *pb.BusPacket) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.publishErr != nil {
		return f.publishErr
	}
	f.published = append(f.published, published{subject, p})
	return nil
}

func (f *fakeBus) Subscribe(subject, queue string, h func(*pb.BusPacket)) (func() error, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if subject == f.failOn {
		return nil, errors.New("subscribe refused")
	}
	f.subs = append(f.subs, subscription{subject, queue, h})
	return func() error {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.drained++
		return nil
	}, nil
}

func (f *fakeBus) publishes() []published {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]published(nil), f.published...)
}

func (f *fakeBus) subscriptions() []subscription {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]subscription(nil), f.subs...)
}

func (f *fakeBus) drainCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.drained
}

// logBuffer captures a text logger's output.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuffer) logger(level slog.Level) *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: level}))
}
